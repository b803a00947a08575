//! The bundled inference runtime a device uses to prove a new model before committing it.
//!
//! Not built yet (issue 3): a zero-copy, `no_std`, allocation-free interpreter for
//! full-int8 `.tflite` models, bit-exact with TFLite Micro reference kernels, with an
//! arena planner and the validation-set format and evaluator.
#![cfg_attr(not(test), no_std)]
