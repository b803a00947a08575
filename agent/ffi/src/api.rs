//! The one agent of the firmware, in a static, and what each `mota_*` call does with it,
//! in safe Rust. `boundary.rs` has turned the C arguments into references and strings
//! before anything here runs.
//!
//! The agent lives in a `StaticCell` (booted once per reset); a `&'static mut` to it sits
//! in a `critical_section::Mutex`. A call takes that reference out inside a short
//! critical section, runs with interrupts enabled (validation and flash work take long,
//! and a SysTick clock must keep ticking), then puts it back. A call that finds it gone
//! (from a callback or an interrupt, while another call runs) gets `MOTA_ERROR_BUSY`,
//! never a second `&mut`.

use core::cell::{Cell, RefCell};
use core::fmt::Write as _;

use critical_section::Mutex;
use mota_agent::{Agent, AgentError, Config, JournalStore, MapStore, SUBSCRIPTIONS, StateStore, StoreError};
use mota_proto::topic::{Kind, Topic};
use static_cell::StaticCell;

use crate::codes::Error;
use crate::flash::{self, Region};
use crate::platform::{AnyValidator, CClock, CTransport, kind_from_number, kind_number};
use crate::session::CSession;
use crate::types::{self, MOTA_IGNORED, MOTA_NO_JOB, MOTA_NO_MODEL, MOTA_OK, Platform};

/// The agent over the C flash callbacks.
pub type CAgent = Agent<'static, Region, AnyStore, AnyValidator>;

/// The state store `Config::single_write_state` chose.
pub enum AnyStore {
    /// sequential-storage's map: the part may program a unit again.
    Map(MapStore<Region>),
    /// The journal: single-write (ECC) parts.
    Journal(JournalStore<Region>),
}

impl AnyStore {
    fn new(region: Region, erased: u8, single_write: bool) -> Result<Self, StoreError> {
        Ok(if single_write {
            Self::Journal(JournalStore::new(region, erased)?)
        } else {
            Self::Map(MapStore::new(region, erased)?)
        })
    }
}

impl StateStore for AnyStore {
    fn load(&mut self) -> Result<Option<mota_agent::state::State>, StoreError> {
        match self {
            Self::Map(s) => s.load(),
            Self::Journal(s) => s.load(),
        }
    }

    fn save(&mut self, state: &mota_agent::state::State) -> Result<(), StoreError> {
        match self {
            Self::Map(s) => s.save(state),
            Self::Journal(s) => s.save(state),
        }
    }
}

/// What `mota_agent_boot` needs, checked by the boundary.
pub struct BootArgs {
    /// The configuration, its strings and keys borrowed from C for good.
    pub config: Config<'static>,
    /// The state region programs a unit only once between erases: the journal.
    pub single_write: bool,
    /// The callbacks (copied).
    pub platform: Platform,
    /// The tensor arena, lent to the agent for good.
    pub arena: &'static mut [u8],
}

/// The booted agent with what every call needs.
pub struct Running {
    /// The agent.
    pub agent: &'static mut CAgent,
    /// The callbacks.
    pub platform: Platform,
    /// `Config::device_id`, to pick this device's topics.
    pub device_id: &'static str,
    /// `Config::chunk_bytes`, to size the session's buffer.
    pub chunk_bytes: u32,
    /// The bundled MQTT session, once started.
    pub session: Option<&'static mut CSession>,
}

enum Phase {
    /// No boot since reset.
    Never,
    /// A call (or the boot) runs and holds the agent.
    Busy,
    /// Booted and idle between calls.
    Ready(Running),
    /// The boot failed or the agent returned an error: reset the device.
    Stopped(Error),
}

static PHASE: Mutex<RefCell<Phase>> = Mutex::new(RefCell::new(Phase::Never));
static CONFIG: StaticCell<Config<'static>> = StaticCell::new();
static AGENT: StaticCell<CAgent> = StaticCell::new();
/// The agent's last error, for `mota_agent_last_error`.
static LAST_ERROR: Mutex<Cell<Option<AgentError>>> = Mutex::new(Cell::new(None));

/// Boots the agent, once per reset.
pub fn boot(args: BootArgs) -> Result<(), Error> {
    critical_section::with(|cs| {
        let mut phase = PHASE.borrow_ref_mut(cs);
        match *phase {
            Phase::Never => {
                *phase = Phase::Busy;
                Ok(())
            }
            Phase::Busy => Err(Error::Busy),
            Phase::Ready(_) | Phase::Stopped(_) => Err(Error::AlreadyBooted),
        }
    })?;
    let (next, result) = match start(args) {
        Ok(running) => (Phase::Ready(running), Ok(())),
        // Refused before anything was kept: the boot may be tried again, corrected.
        Err(Ok(e)) => (Phase::Never, Err(e)),
        Err(Err(e)) => (Phase::Stopped(e), Err(e)),
    };
    critical_section::with(|cs| *PHASE.borrow_ref_mut(cs) = next);
    result
}

/// `Err(Ok(e))`: refused before anything was kept; `Err(Err(e))`: the boot itself failed.
fn start(args: BootArgs) -> Result<Running, Result<Error, Error>> {
    let BootArgs { config, single_write, platform, arena } = args;
    if platform.flash_read.is_none() || platform.flash_write.is_none() || platform.flash_erase.is_none() {
        return Err(Ok(Error::NullPointer));
    }
    if platform.now_ms.is_none() {
        return Err(Ok(Error::NullPointer));
    }
    if !flash::geometry_fits(&platform) {
        return Err(Ok(Error::Geometry));
    }
    check(&config).map_err(Ok)?;
    let validator = validator(&platform).map_err(Ok)?;
    let (device_id, chunk_bytes) = (config.device_id, config.chunk_bytes);
    let (Some(config), Some(cell)) = (CONFIG.try_init(config), AGENT.try_uninit()) else {
        return Err(Err(Error::AlreadyBooted));
    };
    let slots = [
        Region::new(platform, types::Region::SlotA as u8, platform.slot_bytes),
        Region::new(platform, types::Region::SlotB as u8, platform.slot_bytes),
    ];
    let state = Region::new(platform, types::Region::State as u8, platform.state_bytes);
    let state = match AnyStore::new(state, config.erased, single_write) {
        Ok(state) => state,
        Err(e) => return Err(Err(stopped_by(e.into()))),
    };
    match Agent::boot(config, slots, state, validator, arena) {
        Ok(agent) => Ok(Running { agent: cell.write(agent), platform, device_id, chunk_bytes, session: None }),
        Err(e) => Err(Err(stopped_by(e))),
    }
}

/// What the agent would only find later (or never, as a hello that cannot be encoded).
fn check(config: &Config<'_>) -> Result<(), Error> {
    use mota_proto::limits::{MAX_CHUNK_LEN, MAX_CLASS_LEN, MAX_MODEL_NAME_LEN, check_ident, check_version};
    Topic::new(config.device_id, Kind::Hello).map_err(|_| Error::Argument)?;
    check_ident("device_class", config.device_class, MAX_CLASS_LEN).map_err(|_| Error::Argument)?;
    check_version("agent_version", config.agent_version).map_err(|_| Error::Argument)?;
    if let Some(f) = config.factory {
        check_ident("factory.name", f.name, MAX_MODEL_NAME_LEN).map_err(|_| Error::Argument)?;
        check_version("factory.version", f.version).map_err(|_| Error::Argument)?;
    }
    if config.max_trials == 0 || config.chunk_bytes == 0 || config.chunk_bytes as usize > MAX_CHUNK_LEN {
        return Err(Error::Argument);
    }
    Ok(())
}

fn validator(platform: &Platform) -> Result<AnyValidator, Error> {
    if platform.validate.is_some() {
        return Ok(AnyValidator::C(*platform));
    }
    #[cfg(feature = "runtime")]
    if let Some(memory) = crate::boundary::MappedSlots::new(platform) {
        let validator = mota_agent::RuntimeValidator { memory, clock: CClock(*platform) };
        return Ok(AnyValidator::Runtime(validator));
    }
    Err(Error::NoValidator)
}

fn stopped_by(e: AgentError) -> Error {
    critical_section::with(|cs| LAST_ERROR.borrow(cs).set(Some(e)));
    Error::from(e)
}

/// Runs `f` with the agent taken out of the static; an agent error stops it for good.
pub fn with_running<R>(f: impl FnOnce(&mut Running) -> Result<R, AgentError>) -> Result<R, Error> {
    with_running_or(|running| f(running).map_err(Stop::Agent))
}

/// Why a call ended without its result.
pub enum Stop {
    /// The agent failed: it stops, the device must reset.
    Agent(AgentError),
    /// The call failed; the agent goes on.
    Call(Error),
}

/// [`with_running`] for calls that fail in other ways too.
pub fn with_running_or<R>(f: impl FnOnce(&mut Running) -> Result<R, Stop>) -> Result<R, Error> {
    let mut running = critical_section::with(|cs| {
        let mut phase = PHASE.borrow_ref_mut(cs);
        match core::mem::replace(&mut *phase, Phase::Busy) {
            Phase::Ready(running) => Ok(running),
            other => {
                let e = match other {
                    Phase::Never => Error::NotBooted,
                    Phase::Busy => Error::Busy,
                    Phase::Stopped(e) => e,
                    Phase::Ready(_) => Error::Busy,
                };
                *phase = other;
                Err(e)
            }
        }
    })?;
    let result = f(&mut running);
    let (next, result) = match result {
        Ok(r) => (Phase::Ready(running), Ok(r)),
        Err(Stop::Call(e)) => (Phase::Ready(running), Err(e)),
        Err(Stop::Agent(e)) => {
            let e = stopped_by(e);
            (Phase::Stopped(e), Err(e))
        }
    };
    critical_section::with(|cs| *PHASE.borrow_ref_mut(cs) = next);
    result
}

fn require_publish(running: &Running) -> Result<(), Stop> {
    match running.platform.publish {
        Some(_) => Ok(()),
        None => Err(Stop::Call(Error::NoPublish)),
    }
}

/// `mota_agent_hello`.
pub fn hello() -> Result<i32, Error> {
    with_running_or(|r| {
        require_publish(r)?;
        let clock = CClock(r.platform);
        r.agent.hello(&mut CTransport(&r.platform), &clock).map_err(Stop::Agent)?;
        Ok(MOTA_OK)
    })
}

/// `mota_agent_poll`.
pub fn poll() -> Result<i32, Error> {
    with_running_or(|r| {
        require_publish(r)?;
        let clock = CClock(r.platform);
        r.agent.poll(&mut CTransport(&r.platform), &clock).map_err(Stop::Agent)?;
        Ok(MOTA_OK)
    })
}

/// `mota_agent_handle`.
pub fn handle(kind: u8, payload: &[u8]) -> Result<i32, Error> {
    let kind = kind_from_number(kind).ok_or(Error::Argument)?;
    handle_kind(kind, payload)
}

fn handle_kind(kind: Kind, payload: &[u8]) -> Result<i32, Error> {
    with_running_or(|r| {
        require_publish(r)?;
        let clock = CClock(r.platform);
        r.agent.handle(kind, payload, &mut CTransport(&r.platform), &clock).map_err(Stop::Agent)?;
        Ok(MOTA_OK)
    })
}

/// `mota_agent_handle_topic`: only this device's backend→device topics reach the agent.
pub fn handle_topic(topic: &str, payload: &[u8]) -> Result<i32, Error> {
    let device_id = with_running(|r| Ok(r.device_id))?;
    match Topic::parse(topic) {
        Ok(t) if t.device() == device_id && !t.kind().from_device() => handle_kind(t.kind(), payload),
        _ => Ok(MOTA_IGNORED),
    }
}

/// `mota_agent_active_model`.
pub fn active_model(out: &mut types::ActiveModel) -> Result<i32, Error> {
    let Some(model) = with_running(|r| Ok(r.agent.active_model()))? else { return Ok(MOTA_NO_MODEL) };
    let m = model.installed;
    let mut name = [0; types::MOTA_NAME_BYTES];
    let mut version = [0; types::MOTA_VERSION_BYTES];
    copy_c_str(m.name.as_str(), &mut name);
    copy_c_str(m.version.as_str(), &mut version);
    *out = types::ActiveModel {
        image: types::Located { slot: model.image.slot, offset: model.image.offset, len: model.image.len },
        sha256: m.sha256.0,
        counter: m.counter,
        arena_bytes: m.arena_bytes,
        name,
        version,
    };
    Ok(MOTA_OK)
}

/// `mota_agent_job`.
pub fn job(out: &mut types::Job) -> Result<i32, Error> {
    let Some(job) = with_running(|r| Ok(r.agent.state().job))? else { return Ok(MOTA_NO_JOB) };
    let phase = match job.phase {
        mota_agent::state::Phase::Image => types::Phase::Image,
        mota_agent::state::Phase::Set => types::Phase::Set,
        mota_agent::state::Phase::Validate => types::Phase::Validate,
        mota_agent::state::Phase::Erase => types::Phase::Erase,
    };
    let mut name = [0; types::MOTA_NAME_BYTES];
    let mut version = [0; types::MOTA_VERSION_BYTES];
    copy_c_str(job.name.as_str(), &mut name);
    copy_c_str(job.version.as_str(), &mut version);
    *out = types::Job {
        phase: phase as u8,
        trials: job.trials,
        rollout: job.rollout,
        progress: job.progress,
        name,
        version,
    };
    Ok(MOTA_OK)
}

/// Copies `s` and a NUL into `buf` (cut to fit; never longer here, the texts are bounded).
fn copy_c_str(s: &str, buf: &mut [core::ffi::c_char]) {
    let n = s.len().min(buf.len().saturating_sub(1));
    for (dst, &src) in buf.iter_mut().zip(&s.as_bytes()[..n]) {
        *dst = src as core::ffi::c_char;
    }
    if let Some(nul) = buf.get_mut(n) {
        *nul = 0;
    }
}

/// `mota_agent_confirm`.
pub fn confirm() -> Result<i32, Error> {
    with_running(|r| r.agent.confirm().map(|()| MOTA_OK))
}

/// `mota_agent_on_trial`: 1 on trial, 0 not.
pub fn on_trial() -> Result<i32, Error> {
    with_running(|r| Ok(i32::from(r.agent.on_trial())))
}

/// `mota_agent_is_idle`: 1 idle, 0 busy.
pub fn is_idle() -> Result<i32, Error> {
    with_running(|r| Ok(i32::from(r.agent.is_idle())))
}

/// `mota_topic`: the topic of `kind` for `device` and its NUL into `buf`; its length.
pub fn topic(kind: u8, device: &str, buf: &mut [u8]) -> Result<i32, Error> {
    let kind = kind_from_number(kind).ok_or(Error::Argument)?;
    let topic = Topic::new(device, kind).map_err(|_| Error::Argument)?;
    let len = topic.write(buf).map_err(|_| Error::Length)?.len();
    *buf.get_mut(len).ok_or(Error::Length)? = 0;
    i32::try_from(len).map_err(|_| Error::Length)
}

/// `mota_subscriptions`: the kinds to subscribe to into `kinds`; their number.
pub fn subscriptions(kinds: &mut [u8]) -> Result<i32, Error> {
    let out = kinds.get_mut(..SUBSCRIPTIONS.len()).ok_or(Error::Length)?;
    for (dst, kind) in out.iter_mut().zip(SUBSCRIPTIONS) {
        *dst = kind_number(kind);
    }
    Ok(SUBSCRIPTIONS.len() as i32)
}

/// `mota_agent_last_error`: the agent's last error as text (with a NUL); its length, or
/// 0 when there was none.
pub fn last_error(buf: &mut [u8]) -> Result<i32, Error> {
    let Some(e) = critical_section::with(|cs| LAST_ERROR.borrow(cs).get()) else {
        *buf.first_mut().ok_or(Error::Length)? = 0;
        return Ok(0);
    };
    let mut w = Cursor { buf, len: 0 };
    // A text longer than the buffer is cut (the cursor stops); that is not an error.
    let _ = write!(w, "{e}");
    let len = w.len.min(w.buf.len().saturating_sub(1));
    *w.buf.get_mut(len).ok_or(Error::Length)? = 0;
    i32::try_from(len).map_err(|_| Error::Length)
}

/// Writes into a byte buffer, keeping one byte for the NUL.
struct Cursor<'a> {
    buf: &'a mut [u8],
    len: usize,
}

impl core::fmt::Write for Cursor<'_> {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        let room = self.buf.len().saturating_sub(1).saturating_sub(self.len);
        let n = s.len().min(room);
        if let Some(dst) = self.buf.get_mut(self.len..self.len + n) {
            dst.copy_from_slice(&s.as_bytes()[..n]);
        }
        self.len += n;
        if n < s.len() { Err(core::fmt::Error) } else { Ok(()) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics_and_subscriptions() {
        let mut buf = [0xAA; types::MOTA_TOPIC_BYTES];
        assert_eq!(topic(types::Kind::Offer as u8, "dev-1", &mut buf), Ok(23));
        assert_eq!(&buf[..24], b"mota/v1/dev/dev-1/offer\0");
        let long = "a".repeat(64);
        assert_eq!(topic(types::Kind::Status as u8, &long, &mut buf), Ok(types::MOTA_TOPIC_BYTES as i32 - 1));
        assert_eq!(topic(7, "dev-1", &mut buf), Err(Error::Argument));
        assert_eq!(topic(0, "dev/1", &mut buf), Err(Error::Argument));
        assert_eq!(topic(0, "dev-1", &mut buf[..23]), Err(Error::Length));
        let mut kinds = [0; types::MOTA_SUBSCRIPTION_COUNT];
        assert_eq!(subscriptions(&mut kinds), Ok(4));
        assert_eq!(kinds, [1, 3, 5, 6]);
        assert_eq!(subscriptions(&mut kinds[..3]), Err(Error::Length));
    }

    #[test]
    fn sizes_match_the_contract() {
        use mota_proto::limits::{MAX_MODEL_NAME_LEN, MAX_VERSION_LEN};
        assert_eq!(types::MOTA_TOPIC_BYTES, mota_proto::topic::MAX_TOPIC_LEN + 1);
        assert_eq!(types::MOTA_NAME_BYTES, MAX_MODEL_NAME_LEN + 1);
        assert_eq!(types::MOTA_VERSION_BYTES, MAX_VERSION_LEN + 1);
        assert_eq!(types::MOTA_SUBSCRIPTION_COUNT, SUBSCRIPTIONS.len());
        for kind in Kind::ALL {
            assert_eq!(kind_from_number(kind_number(kind)), Some(kind));
        }
    }

    #[test]
    fn error_text_is_cut_to_the_buffer() {
        let mut buf = [0xAA; 8];
        let mut w = Cursor { buf: &mut buf, len: 0 };
        assert!(write!(w, "state region: flash").is_err());
        assert_eq!(w.len, 7);
        assert_eq!(&buf[..7], b"state r");
    }
}
