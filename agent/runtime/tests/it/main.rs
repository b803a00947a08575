//! mota-runtime's integration tests: one binary, shared fixtures.

mod decoders;
mod dsp;
mod errors;
mod fixtures;
mod tflm;
mod validation;
