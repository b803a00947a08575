//! The bundled validator: mota-runtime runs the set on the model in place, from the
//! memory-mapped slot, with the arena the firmware reserved.

use mota_proto::message::ErrorCode;
use mota_runtime::validation::{self, SetError, Tally, ValidationSet};
use mota_runtime::{Interpreter, Model};

use crate::platform::{Located, Measurement, Run, Validator};

/// Both slots as the CPU reads them (memory-mapped flash).
pub trait SlotMemory {
    /// Calls `f` with the bytes of slot 0 and slot 1.
    fn with_slots<R>(&mut self, f: impl FnOnce([&[u8]; 2]) -> R) -> R;
}

impl SlotMemory for [&[u8]; 2] {
    fn with_slots<R>(&mut self, f: impl FnOnce([&[u8]; 2]) -> R) -> R {
        f(*self)
    }
}

/// mota-runtime as the validator.
pub struct RuntimeValidator<M, C> {
    /// The slots.
    pub memory: M,
    /// Microsecond timer for latency.
    pub clock: C,
}

impl<M: SlotMemory, C: validation::Clock> Validator for RuntimeValidator<M, C> {
    fn validate(
        &mut self,
        model: Located,
        arena_bytes: u32,
        set: Option<Located>,
        arena: &mut [u8],
        run: &mut Run,
        budget: u32,
    ) -> Result<Option<Measurement>, ErrorCode> {
        if arena_bytes as usize > arena.len() {
            return Err(ErrorCode::ARENA_TOO_LARGE);
        }
        let clock = &self.clock;
        self.memory.with_slots(|slots| {
            // The model is parsed and planned again for every piece: a few microseconds
            // against the inferences of the piece, and nothing to keep between calls.
            let model = locate(slots, model).ok_or(ErrorCode::MODEL_INVALID)?;
            let model = Model::parse(model).map_err(|_| ErrorCode::MODEL_INVALID)?;
            let mut interp = Interpreter::new(model, arena).map_err(|_| ErrorCode::MODEL_INVALID)?;
            let Some(set) = set else {
                interp.input(0).map_err(|_| ErrorCode::MODEL_INVALID)?.fill(0);
                let start = clock.now_us();
                interp.invoke().map_err(|_| ErrorCode::MODEL_INVALID)?;
                let latency = clock.now_us().saturating_sub(start);
                return Ok(Some(Measurement {
                    accuracy_permille: None,
                    latency_us: Some(u32::try_from(latency).unwrap_or(u32::MAX)),
                    arena_used: Some(interp.arena_used() as u32),
                }));
            };
            let set = locate(slots, set).ok_or(ErrorCode::VALIDATION_SET_INVALID)?;
            let set = ValidationSet::parse(set).map_err(|_| ErrorCode::VALIDATION_SET_INVALID)?;
            let set_error = |e| match e {
                SetError::Run(_) => ErrorCode::MODEL_INVALID,
                _ => ErrorCode::VALIDATION_SET_INVALID,
            };
            validation::check(&interp, &set).map_err(set_error)?;
            let total = set.len();
            let from = (run.done as usize).min(total);
            let to = match budget {
                0 => total,
                n => from.saturating_add(n as usize).min(total),
            };
            let mut tally = Tally::default();
            validation::run_records(&mut interp, &set, from..to, clock, None, &mut tally).map_err(set_error)?;
            run.done += tally.records;
            run.correct += tally.correct;
            run.latency_us += tally.total_us;
            if to < total {
                return Ok(None);
            }
            let records = u64::from(run.done.max(1));
            Ok(Some(Measurement {
                accuracy_permille: Some((u64::from(run.correct) * 1000 / records) as u16),
                latency_us: Some(u32::try_from(run.latency_us / records).unwrap_or(u32::MAX)),
                arena_used: Some(interp.arena_used() as u32),
            }))
        })
    }
}

fn locate(slots: [&[u8]; 2], at: Located) -> Option<&[u8]> {
    let slot = slots.get(usize::from(at.slot))?;
    slot.get(at.offset as usize..at.offset.checked_add(at.len)? as usize)
}
