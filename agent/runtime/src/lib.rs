//! The bundled inference runtime a device uses to prove a new model before committing it.
//!
//! It executes full-int8 `.tflite` models in place from a byte slice (the flash slot),
//! with results bit-exact with TensorFlow Lite Micro's reference kernels, inside a
//! caller-provided arena. No allocation, no panics on any input: a model is verified in
//! full before anything runs, and every read of it is bounds-checked.
#![cfg_attr(not(any(test, feature = "std")), no_std)]

pub mod arith;
pub mod fixedpoint;
pub mod flatbuffer;
pub mod interpreter;
pub mod kernels;
pub mod model;
#[cfg(feature = "std")]
pub mod npy;
pub mod ops;
pub mod plan;
mod records;
mod schema;
pub mod tensor;
pub mod validation;

#[cfg(feature = "std")]
pub use interpreter::arena_size;
pub use interpreter::{Interpreter, PreparedOp, RunError};
pub use model::{DType, Model, ModelError, TensorInfo};
pub use ops::Op;
