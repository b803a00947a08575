//! mota-runtime's integration tests: one binary, shared fixtures.

mod fixtures;
mod tflm;
