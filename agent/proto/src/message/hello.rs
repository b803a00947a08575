//! `hello`: who a device is and what it runs, sent on every connect; the same topic
//! carries the broker-published last will (`online = false`) when it drops off.
//!
//! | key | [`Hello`] | [`DeviceInfo`] | [`RunningModel`] |
//! |---|---|---|---|
//! | 0 | online: bool | device class: text | model name: text |
//! | 1 | info (when online): map | agent version: text | version: text |
//! | 2 | | running model (optional): map | image sha256: bstr(32) |
//! | 3 | | security counter: uint32 | |
//! | 4 | | slot bytes: uint32 | |
//! | 5 | | arena bytes: uint32 | |
//! | 6 | | supported delta codecs: uint32 bit set (bit n = codec n) | |
//! | 7 | | largest chunk accepted: uint32 | |
//! | 8 | | next report number (optional): uint32 | |
//! | 9 | | revocation list held, its seq (optional): uint32 | |

use crate::cbor::{Decode, Decoder, Encode, Encoder, Malformed};
use crate::error::DecodeError;
use crate::ids::Digest;
use crate::limits::{self, MAX_CHUNK_LEN, MAX_CLASS_LEN, MAX_MODEL_NAME_LEN, MAX_SMALL_MESSAGE_LEN};
use crate::wire::Wire;

/// A device announcing itself (or its will announcing it gone).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hello<'a> {
    /// False only in the last will.
    pub online: bool,
    /// Present exactly when `online`.
    pub info: Option<DeviceInfo<'a>>,
}

impl<'a> Hello<'a> {
    /// The payload a device registers as its MQTT last will.
    pub const OFFLINE: Hello<'static> = Hello { online: false, info: None };

    /// An online announcement.
    pub fn online(info: DeviceInfo<'a>) -> Self {
        Self { online: true, info: Some(info) }
    }
}

/// What a device is and has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceInfo<'a> {
    /// The device's class, matched against manifests.
    pub device_class: &'a str,
    /// Version of the mota agent in the firmware.
    pub agent_version: &'a str,
    /// The committed model, if any.
    pub running: Option<RunningModel<'a>>,
    /// The device's stored security counter.
    pub security_counter: u32,
    /// Size of one model slot.
    pub slot_bytes: u32,
    /// Tensor arena available to a model.
    pub arena_bytes: u32,
    /// Delta codecs the agent can apply, as a bit set.
    pub codecs: u32,
    /// The largest chunk the device accepts in one message.
    pub max_chunk: u32,
    /// The number its next status report will carry (device-wide, persisted, only
    /// grows). Replicas may handle a hello and a report in either order; the backend
    /// takes the running model from a hello only if no report it already stored (one
    /// that changed the running model) came later than this hello.
    pub next_seq: Option<u32>,
    /// Sequence number of the revocation list the device holds (0: none), so the backend
    /// sends a newer one (optional, for agents without revocation support).
    pub revocation_seq: Option<u32>,
}

/// The model a device runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunningModel<'a> {
    /// Model name.
    pub model: &'a str,
    /// Version string.
    pub version: &'a str,
    /// SHA-256 of the image in the active slot: the base for deltas.
    pub sha256: Digest,
}

impl Encode for Hello<'_> {
    fn encode(&self, e: &mut Encoder<'_>) {
        e.map(&[&self.online, &self.info]);
    }
}

impl<'a> Decode<'a> for Hello<'a> {
    fn decode(d: &mut Decoder<'a>) -> Result<Self, Malformed> {
        let mut v = Hello::OFFLINE;
        d.map(&mut [&mut v.online, &mut v.info])?;
        Ok(v)
    }
}

impl Encode for DeviceInfo<'_> {
    fn encode(&self, e: &mut Encoder<'_>) {
        e.map(&[
            &self.device_class,
            &self.agent_version,
            &self.running,
            &self.security_counter,
            &self.slot_bytes,
            &self.arena_bytes,
            &self.codecs,
            &self.max_chunk,
            &self.next_seq,
            &self.revocation_seq,
        ]);
    }
}

impl<'a> Decode<'a> for DeviceInfo<'a> {
    fn decode(d: &mut Decoder<'a>) -> Result<Self, Malformed> {
        let mut v = Self {
            device_class: "",
            agent_version: "",
            running: None,
            security_counter: 0,
            slot_bytes: 0,
            arena_bytes: 0,
            codecs: 0,
            max_chunk: 0,
            next_seq: None,
            revocation_seq: None,
        };
        d.map(&mut [
            &mut v.device_class,
            &mut v.agent_version,
            &mut v.running,
            &mut v.security_counter,
            &mut v.slot_bytes,
            &mut v.arena_bytes,
            &mut v.codecs,
            &mut v.max_chunk,
            &mut v.next_seq,
            &mut v.revocation_seq,
        ])?;
        Ok(v)
    }
}

impl Encode for RunningModel<'_> {
    fn encode(&self, e: &mut Encoder<'_>) {
        e.map(&[&self.model, &self.version, &self.sha256]);
    }
}

impl<'a> Decode<'a> for RunningModel<'a> {
    fn decode(d: &mut Decoder<'a>) -> Result<Self, Malformed> {
        let mut v = Self { model: "", version: "", sha256: Digest([0; 32]) };
        d.map(&mut [&mut v.model, &mut v.version, &mut v.sha256])?;
        Ok(v)
    }
}

impl<'a> Wire<'a> for Hello<'a> {
    const MAX_LEN: usize = MAX_SMALL_MESSAGE_LEN;
    const CANONICAL: bool = false;

    fn check(&self) -> Result<(), DecodeError> {
        match (&self.info, self.online) {
            (Some(info), true) => info.check(),
            (None, false) => Ok(()),
            _ => Err(DecodeError::InvalidValue { field: "info" }),
        }
    }
}

impl DeviceInfo<'_> {
    fn check(&self) -> Result<(), DecodeError> {
        limits::check_ident("device_class", self.device_class, MAX_CLASS_LEN)?;
        limits::check_version("agent_version", self.agent_version)?;
        if let Some(running) = &self.running {
            limits::check_ident("running.model", running.model, MAX_MODEL_NAME_LEN)?;
            limits::check_version("running.version", running.version)?;
        }
        if self.max_chunk == 0 || self.max_chunk as usize > MAX_CHUNK_LEN {
            return Err(DecodeError::InvalidValue { field: "max_chunk" });
        }
        Ok(())
    }
}
