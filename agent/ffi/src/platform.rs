//! The agent's `Transport`, `Clock` and `Validator` over the C callbacks.

use mota_agent::{Clock, Located, Measurement, Run, Transport, Validator};
use mota_proto::message::ErrorCode;
use mota_proto::topic::Kind;

use crate::boundary;
use crate::types::{self, MOTA_NOT_MEASURED, Platform};

/// The number C sees for a kind (`mota_kind`).
pub fn kind_number(kind: Kind) -> u8 {
    let number = match kind {
        Kind::Hello => types::Kind::Hello,
        Kind::Offer => types::Kind::Offer,
        Kind::Get => types::Kind::Get,
        Kind::Chunk => types::Kind::Chunk,
        Kind::Status => types::Kind::Status,
        Kind::Cmd => types::Kind::Cmd,
        Kind::Trust => types::Kind::Trust,
    };
    number as u8
}

/// The kind with this number.
pub fn kind_from_number(number: u8) -> Option<Kind> {
    Kind::ALL.into_iter().find(|k| kind_number(*k) == number)
}

/// Publishes through the platform's `publish` callback.
pub struct CTransport<'a>(pub &'a Platform);

impl Transport for CTransport<'_> {
    type Error = i32;

    fn publish(&mut self, kind: Kind, payload: &[u8]) -> Result<(), i32> {
        boundary::publish(self.0, kind_number(kind), payload)
    }
}

/// Time from the platform's `now_ms`, `now_us` and `unix_time` callbacks.
#[derive(Clone, Copy)]
pub struct CClock(pub Platform);

impl Clock for CClock {
    fn now_ms(&self) -> u64 {
        boundary::now_ms(&self.0)
    }

    fn unix_time(&self) -> Option<u64> {
        boundary::unix_time(&self.0)
    }
}

#[cfg(feature = "runtime")]
impl mota_runtime::validation::Clock for CClock {
    fn now_us(&self) -> u64 {
        boundary::now_us(&self.0).unwrap_or_else(|| boundary::now_ms(&self.0).saturating_mul(1000))
    }
}

/// The C `validate` callback, or the bundled validator on the memory-mapped slots.
pub enum AnyValidator {
    /// The firmware's own engine.
    C(Platform),
    /// mota-runtime, reading the slots at `slot_base`.
    #[cfg(feature = "runtime")]
    Runtime(mota_agent::RuntimeValidator<boundary::MappedSlots, CClock>),
}

impl Validator for AnyValidator {
    fn validate(
        &mut self,
        model: Located,
        arena_bytes: u32,
        set: Option<Located>,
        arena: &mut [u8],
        run: &mut Run,
        budget: u32,
    ) -> Result<Option<Measurement>, ErrorCode> {
        match self {
            Self::C(platform) => {
                let c = |at: Located| types::Located { slot: at.slot, offset: at.offset, len: at.len };
                let (code, out) = boundary::validate(platform, &c(model), arena_bytes, set.map(c).as_ref(), arena);
                match code {
                    0 => Ok(Some(measurement(out))),
                    300..=399 => Err(ErrorCode(code as u16)),
                    _ => Err(ErrorCode::MODEL_INVALID),
                }
            }
            #[cfg(feature = "runtime")]
            Self::Runtime(runtime) => runtime.validate(model, arena_bytes, set, arena, run, budget),
        }
    }
}

fn measurement(out: types::Measurement) -> Measurement {
    let measured = |v: u32| (v != MOTA_NOT_MEASURED).then_some(v);
    Measurement {
        accuracy_permille: measured(out.accuracy_permille)
            .filter(|&a| a <= u32::from(mota_proto::limits::PERMILLE))
            .map(|a| a as u16),
        latency_us: measured(out.latency_us),
        arena_used: measured(out.arena_used),
    }
}
