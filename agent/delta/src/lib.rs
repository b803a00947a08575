//! Delta patches from the model a device runs to the next one.
//!
//! Not built yet (issue 4): the device-side decoder will be `no_std`, without `alloc`,
//! streaming from the active slot into the inactive one in a few KiB of RAM and
//! resumable at block boundaries; the encoder will sit behind an `encode` feature for
//! the backend and the CLI. The manifest already carries a patch as
//! `mota_proto::Delta` (base and patch digests, size, codec id).
#![cfg_attr(not(test), no_std)]
