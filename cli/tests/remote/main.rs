//! Every remote command of `mota` against a real backend started on port 0: one test
//! binary (each file under `tests/` would link the whole backend again).

mod access;
mod demo;
mod fleet;
mod registry;
mod rollouts;
mod support;
