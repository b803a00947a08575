//! Delta patches from the model a device runs to the next one.
//!
//! The device side ([`decode`]) is `no_std` without `alloc`: it rebuilds the new model
//! streaming, reading the old one from the active slot through a random-access trait and
//! writing the new one sequentially, in about 7.3 KiB of RAM, resumable at every block
//! (at most 4 KiB) from a 28-byte checkpoint. The host side ([`encode`], feature
//! `encode`) aligns the two models (tensors and quantization scales paired by name, plus
//! a bsdiff-like matcher) and codes bytewise differences, 32-bit word differences (int32
//! biases, float32 scales), bias scales as products of weight scales, and literals with
//! an adaptive range coder ([`rc`]). The format is in
//! [`format`]; `mota_proto::Delta::codec` 1 names it.
#![cfg_attr(not(any(test, feature = "encode")), no_std)]

pub mod decode;
#[cfg(feature = "encode")]
pub mod encode;
pub mod format;
pub mod rc;

pub use decode::{BLOCK_BUFFER, Base, Checkpoint, Decoder, DeltaError, IoError, Sink, Status};
