//! mota-runtime's integration tests: one binary, shared fixtures.

mod errors;
mod fixtures;
mod tflm;
mod validation;
