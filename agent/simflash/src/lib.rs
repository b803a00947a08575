//! A NOR flash model for every test, the simulator and the fuzzers.
//!
//! Not built yet (issue 5): embedded-storage `NorFlash` with strict erase-before-write,
//! configurable geometry and write size, operation counters, power cuts between and
//! inside operations, snapshots and optional file backing.
