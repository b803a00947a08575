//! One simulated device without a network, for deterministic model-based tests that route
//! messages through an in-memory bus: the real agent (with mota-runtime as validator) on
//! the same part as [`crate::device`] (state region, two 128 KiB slots, the factory image
//! in slot 0), driven by calls instead of an MQTT loop. Every call returns what the agent
//! published; time is what the caller says it is; power cuts come when the caller arms
//! them.
//!
//! The agent borrows its tensor arena for as long as it runs, so a running device holds
//! one. Arenas come from a process-wide pool: each is allocated once, for the rest of the
//! process, and goes back to the pool when its device shuts down (a power cut, a reboot,
//! the device dropped), so a test that makes and reboots devices by the thousand holds
//! only as many arenas as it ever had devices running at once ([`leaked_arenas`]).

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use mota_agent::state::State;
use mota_agent::{AgentError, Clock, Config, Transport};
use mota_proto::Digest;
use mota_proto::topic::Kind;
use mota_simflash::CutMode;

use crate::device::{
    ARENA, DeviceStatus, Part, SimAgent, SimError, boot, check_id, config, observe, open_part, unix_now,
};

/// What a device is.
#[derive(Debug, Clone)]
pub struct MemOptions {
    /// Device id (the `{device}` topic level).
    pub id: String,
    /// Device class.
    pub class: String,
    /// Trusted root public keys.
    pub roots: Vec<[u8; 32]>,
    /// The factory model, flashed into slot 0 of the fresh part.
    pub factory: Arc<[u8]>,
    /// Its security counter.
    pub factory_counter: u32,
}

/// Whether the device runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Up {
    /// The agent runs: messages reach it.
    Running,
    /// A power cut fired: the device is off until [`MemDevice::reboot`].
    PoweredOff,
    /// The agent failed without a power cut (the firmware would reset; on this simulated
    /// part it means a bug): the device does nothing until [`MemDevice::reboot`].
    Halted(AgentError),
}

/// What the agent published, in order: `(kind, payload)` on the device's own topics.
pub type Published = Vec<(Kind, Vec<u8>)>;

/// One simulated device: its flash and the agent running on it.
pub struct MemDevice {
    id: String,
    config: &'static Config<'static>,
    part: Rc<RefCell<Part>>,
    /// `None` while the device is down (its arena is back in the pool).
    agent: Option<SimAgent<'static>>,
    up: Up,
    /// What the agent ran after its last step that did not fail.
    status: DeviceStatus,
}

impl MemDevice {
    /// A fresh part with the factory model in slot 0, and the agent booted on it.
    pub fn new(opts: MemOptions) -> Result<Self, SimError> {
        check_id(&opts.id)?;
        let part = Rc::new(RefCell::new(open_part(&opts.factory, None)?));
        let config = config(&opts.id, &opts.class, &opts.roots, &opts.factory, opts.factory_counter)?;
        let mut device =
            Self { id: opts.id, config, part, agent: None, up: Up::PoweredOff, status: DeviceStatus::default() };
        device.boot()?;
        Ok(device)
    }

    /// (Re)connect: the agent's hello, then whatever it publishes at once (the pending
    /// report, the chunk request in flight).
    pub fn connect(&mut self, now_ms: u64) -> Published {
        if self.agent.is_some() {
            self.status.connects += 1;
        }
        self.step(now_ms, |agent, net, clock| agent.hello(net, clock))
    }

    /// A message on one of the device's topics (offer, chunk, cmd; the others are ignored
    /// as the agent ignores them); returns what the agent published.
    pub fn deliver(&mut self, kind: Kind, payload: &[u8], now_ms: u64) -> Published {
        self.step(now_ms, |agent, net, clock| agent.handle(kind, payload, net, clock))
    }

    /// Time passes (the agent's poll: chunk request retries, set copy, validation, report
    /// delivery); returns what the agent published.
    pub fn poll(&mut self, now_ms: u64) -> Published {
        self.step(now_ms, |agent, net, clock| agent.poll(net, clock))
    }

    /// Arms a power cut at the `after_ops`-th next mutating flash operation (1: the next
    /// one; 0 counts as 1), in `mode`; `seed` drives the torn bytes, so a cut is
    /// deterministic. The cut stays armed across a plain [`MemDevice::reboot`] (it can
    /// fire during the boot); powering back on after it fired clears it.
    pub fn arm_cut(&mut self, after_ops: u64, mode: CutMode, seed: u64) {
        let mut part = self.part.borrow_mut();
        part.seed(seed);
        let at = part.stats().mutating() + after_ops.max(1);
        part.cut_at(at, mode);
    }

    /// Whether the device is down: powered off by a cut (or halted by an agent error,
    /// see [`MemDevice::up`]). Messages delivered while down are lost; calls return
    /// nothing.
    pub fn is_off(&self) -> bool {
        self.up != Up::Running
    }

    /// Whether the device runs, is off, or halted.
    pub fn up(&self) -> Up {
        self.up
    }

    /// Power back on (a plain reset when on): the agent boots again from flash. A cut
    /// that fires during this boot leaves the device off again (`Ok`); `Err` is a boot
    /// that failed otherwise (the device is then [`Up::Halted`]).
    pub fn reboot(&mut self) -> Result<(), SimError> {
        self.shut_down();
        let mut part = self.part.borrow_mut();
        if part.is_cut() {
            part.restore_power();
        }
        drop(part);
        self.boot()
    }

    /// The active model's sha256 per the agent (`None`: no model runs). While the
    /// device is down: what it ran before.
    pub fn running(&self) -> Option<Digest> {
        self.status.running
    }

    /// The active model's version (as [`MemDevice::running`]).
    pub fn version(&self) -> Option<String> {
        self.status.running.map(|_| self.status.version.clone())
    }

    /// The device's security counter (as [`MemDevice::running`]).
    pub fn counter(&self) -> u32 {
        self.status.counter
    }

    /// The agent runs and has nothing to do until a message arrives: no update in
    /// progress, no report to deliver. A device that is down is not idle.
    pub fn is_idle(&self) -> bool {
        self.agent.as_ref().is_some_and(SimAgent::is_idle)
    }

    /// The device id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Boots, cuts and connects so far, and what the device runs.
    pub fn status(&self) -> &DeviceStatus {
        &self.status
    }

    /// The agent's record as it has it in RAM (`None` while the device is down).
    pub fn state(&self) -> Option<&State> {
        self.agent.as_ref().map(SimAgent::state)
    }

    /// Mutating flash operations so far (what [`MemDevice::arm_cut`] counts).
    pub fn flash_ops(&self) -> u64 {
        self.part.borrow().stats().mutating()
    }

    /// Runs one agent call with the clock at `now_ms`; an error takes the device down.
    fn step(
        &mut self,
        now_ms: u64,
        call: impl FnOnce(&mut SimAgent<'static>, &mut Outbox, &At) -> Result<(), AgentError>,
    ) -> Published {
        let Some(agent) = self.agent.as_mut() else { return Vec::new() };
        let mut out = Outbox::default();
        match call(agent, &mut out, &At(now_ms)) {
            Ok(()) => observe(agent, &mut self.status),
            // RAM may be ahead of the flash now: what the device runs is what it ran.
            Err(e) => {
                self.shut_down();
                self.went_down(e);
            }
        }
        // What was published before a cut went out: the power failed after it.
        out.0
    }

    /// Boots the agent from flash with an arena from the pool.
    fn boot(&mut self) -> Result<(), SimError> {
        match boot(self.config, &self.part, arenas::take()) {
            Ok(agent) => {
                self.status.boots += 1;
                observe(&agent, &mut self.status);
                self.agent = Some(agent);
                self.up = Up::Running;
                Ok(())
            }
            Err((e, arena)) => {
                arenas::give(arena);
                self.went_down(e);
                match self.up {
                    Up::Halted(e) => Err(SimError::Agent(e)),
                    _ => Ok(()),
                }
            }
        }
    }

    fn went_down(&mut self, e: AgentError) {
        if self.part.borrow().is_cut() {
            self.status.cuts += 1;
            self.up = Up::PoweredOff;
        } else {
            self.up = Up::Halted(e);
        }
    }

    /// Stops the agent and puts its arena back in the pool.
    fn shut_down(&mut self) {
        if let Some(agent) = self.agent.take() {
            arenas::give(agent.shutdown());
        }
    }
}

impl Drop for MemDevice {
    fn drop(&mut self) {
        self.shut_down();
    }
}

impl std::fmt::Debug for MemDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemDevice").field("id", &self.id).field("up", &self.up).field("status", &self.status).finish()
    }
}

/// Arenas allocated so far. Each lives for the rest of the process and is reused: this is
/// the largest number of devices that ever ran at once.
pub fn leaked_arenas() -> usize {
    arenas::LEAKED.load(Ordering::Relaxed)
}

mod arenas {
    use super::*;

    /// Arenas of devices that are down or gone.
    static POOL: Mutex<Vec<&'static mut [u8]>> = Mutex::new(Vec::new());
    pub(super) static LEAKED: AtomicUsize = AtomicUsize::new(0);

    /// An arena from the pool (zeroed, so nothing depends on its last device), or a new one.
    pub(super) fn take() -> &'static mut [u8] {
        let pooled = POOL.lock().unwrap_or_else(PoisonError::into_inner).pop();
        match pooled {
            Some(arena) => {
                arena.fill(0);
                arena
            }
            None => {
                LEAKED.fetch_add(1, Ordering::Relaxed);
                vec![0u8; ARENA].leak()
            }
        }
    }

    pub(super) fn give(arena: &'static mut [u8]) {
        POOL.lock().unwrap_or_else(PoisonError::into_inner).push(arena);
    }
}

/// Collects what the agent publishes.
#[derive(Default)]
struct Outbox(Published);

impl Transport for Outbox {
    type Error = ();

    fn publish(&mut self, kind: Kind, payload: &[u8]) -> Result<(), ()> {
        self.0.push((kind, payload.to_vec()));
        Ok(())
    }
}

/// The agent's clock: the caller's milliseconds, the host's Unix time.
struct At(u64);

impl Clock for At {
    fn now_ms(&self) -> u64 {
        self.0
    }

    fn unix_time(&self) -> Option<u64> {
        unix_now()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use embedded_storage::nor_flash::NorFlash;

    use crate::device::STATE_LEN;

    fn device(id: &str) -> Result<MemDevice, Box<dyn std::error::Error>> {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../runtime/fixtures/models/digits_cnn_v1.tflite");
        let factory: Arc<[u8]> = std::fs::read(path)?.into();
        let opts = MemOptions { id: id.into(), class: "c".into(), roots: vec![[7; 32]], factory, factory_counter: 1 };
        Ok(MemDevice::new(opts)?)
    }

    /// The only test of this binary that uses the pool, so the count is exact.
    #[test]
    fn reboots_cuts_and_new_devices_reuse_the_pooled_arenas() -> Result<(), Box<dyn std::error::Error>> {
        let mut a = device("a")?;
        let b = device("b")?;
        assert_eq!(leaked_arenas(), 2);
        drop(b);
        for _ in 0..20 {
            a.reboot()?;
            drop(device("c")?);
        }
        // A boot cut short (a first boot stores the record: wipe it, cut that store).
        a.part.borrow_mut().erase(0, STATE_LEN)?;
        a.arm_cut(1, CutMode::TearBits, 3);
        a.reboot()?;
        assert_eq!(a.up(), Up::PoweredOff);
        assert!(a.connect(0).is_empty() && !a.is_idle());
        a.reboot()?;
        assert_eq!(a.up(), Up::Running);
        assert_eq!((a.status().boots, a.status().cuts), (22, 1));
        assert_eq!(leaked_arenas(), 2);
        Ok(())
    }
}
