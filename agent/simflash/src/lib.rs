//! A NOR flash model for every test, the simulator and the fuzzers.
//!
//! Real NOR flash punishes what a RAM mock forgives: bits can only be programmed away
//! from the erased value, a program unit may be written once per erase, erases cover whole
//! sectors, and power can fail between operations or in the middle of one, leaving a
//! torn write or a half-erased sector. `SimFlash` enforces all of that, counts every
//! operation and byte, cuts power on request (before an operation, or tearing it), keeps
//! snapshots for forking a test at any cut, and can live in a file so a simulated device
//! keeps its flash across process restarts.
//!
//! It implements embedded-storage's `NorFlash` (and `MultiwriteNorFlash` when built with
//! `MULTI = true`, where a program unit may be written again with AND semantics), and
//! splits a shared part into [`Region`]s (slot A, slot B, state) whose operations all
//! count on the part.

mod flash;
mod geometry;
mod region;

pub use flash::{CutMode, SimFlash, SimFlashError, Snapshot, Stats};
pub use geometry::{Geometry, GeometryError};
pub use region::{Region, RegionError};
