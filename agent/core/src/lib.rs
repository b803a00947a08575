//! The update agent that lives inside product firmware.
//!
//! Not built yet (issue 5): a sans-IO state machine that takes offers verified by
//! `mota_proto::verify`, rebuilds the model into the inactive slot, validates it and
//! commits or rolls back, with its state in a sequential-storage map so any power cut
//! leaves a verified model running.
#![cfg_attr(not(test), no_std)]
