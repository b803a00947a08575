//! mota-proto's integration tests: one binary, one module per concern, shared fixtures.

mod crypto;
mod fixtures;
mod props;
mod vectors;
mod verify;
