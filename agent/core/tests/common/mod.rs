//! The test world of the agent: a device (one simulated part split into slot A, slot B
//! and the state region), real models and validation sets from the runtime's fixtures,
//! offers signed with the published test root, and a backend stand-in that answers chunk
//! requests from the artifacts it holds and re-delivers the retained offer after every
//! boot, as a broker does. The stand-in replaces the network only; flash, crypto,
//! patches and inference are the real ones.
#![allow(dead_code)] // each test binary uses its own subset

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;

use ed25519_dalek::SigningKey;
use mota_agent::{
    Agent, AgentError, Clock, Config, Factory, JournalStore, MapStore, RuntimeValidator, SlotMemory, StateStore,
    StoreError, Transport, Work,
};
use mota_proto::message::{Chunk, ErrorCode, Event, Get, Refusal, Status};
use mota_proto::sign::{ReleaseKey, certify};
use mota_proto::topic::Kind;
use mota_proto::{Action, CommandBody, Delta, Digest, Image, Limits, Manifest, Target, Validation, Wire};
use mota_simflash::{Geometry, Region, SimFlash};

pub type TestResult = Result<(), Box<dyn std::error::Error>>;
pub type BoxError = Box<dyn std::error::Error>;

pub const CLASS: &str = "stm32f4-kws";
pub const ARENA: usize = 16 * 1024;

// ---- models and artifacts --------------------------------------------------------------

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../runtime/fixtures/models/");

/// A fixture model's bytes.
pub fn model(name: &str) -> Result<Vec<u8>, BoxError> {
    Ok(std::fs::read(format!("{FIXTURES}{name}.tflite"))?)
}

/// A validation set from a fixture's inputs and labels (the first `records`).
pub fn set(name: &str, records: usize) -> Result<Vec<u8>, BoxError> {
    let read = |suffix: &str| -> Result<mota_runtime::npy::Npy, BoxError> {
        let bytes = std::fs::read(format!("{FIXTURES}{name}.{suffix}.npy"))?;
        mota_runtime::npy::Npy::parse(&bytes).map_err(|e| format!("{e:?}").into())
    };
    let (x, y) = (read("inputs")?, read("labels")?);
    let per = x.data.len() / x.rows();
    let labels: Vec<u16> = y.data.chunks_exact(4).take(records).map(|c| c[0] as u16).collect();
    let dims: Vec<usize> = x.shape[1..].to_vec();
    let set = mota_runtime::validation::build(
        mota_runtime::DType::Int8,
        &dims,
        &x.data[..per * records],
        Some((&labels, 10)),
        None,
    )
    .map_err(|e| format!("{e:?}"))?;
    Ok(set)
}

/// Arena bytes a model needs (what the backend computes).
pub fn arena_of(model: &[u8]) -> Result<u32, BoxError> {
    let parsed = mota_runtime::Model::parse(model).map_err(|e| format!("{e:?}"))?;
    Ok(mota_runtime::arena_size(&parsed).map_err(|e| format!("{e:?}"))? as u32)
}

/// The release key certified by the test root (seed 0x11 × 32, `mota_proto::testkit::ROOT`).
pub fn release_key() -> Result<ReleaseKey, BoxError> {
    let root = SigningKey::from_bytes(&[0x11; 32]);
    let release = SigningKey::from_bytes(&[0x22; 32]);
    let cert = certify(&root, &release.verifying_key(), u64::MAX, 0..=99)?;
    Ok(ReleaseKey::new(release, cert).map_err(|e| format!("{e:?}"))?)
}

/// The test device's id.
pub const DEVICE: &str = "dev-test";

/// A rollback of `of` (committed) on [`DEVICE`], back to `to`.
pub fn rollback(of: &Offer, to: Target) -> CommandBody<'static> {
    CommandBody {
        format: mota_proto::command::COMMAND_FORMAT_VERSION,
        device: DEVICE,
        rollout_id: of.rollout,
        action: Action::Rollback,
        subject: of.manifest,
        target: Some(to),
    }
}

/// A cancel of the download of `of` on [`DEVICE`].
pub fn cancel(of: &Offer) -> CommandBody<'static> {
    CommandBody {
        action: Action::Cancel,
        target: None,
        ..rollback(of, Target { image: Digest([0; 32]), manifest: None })
    }
}

/// The factory model `image` as a rollback target.
pub fn factory_target(image: &[u8]) -> Target {
    Target { image: Digest::of(image), manifest: None }
}

/// What an offer is made of.
#[derive(Clone)]
pub struct Offer {
    pub envelope: Vec<u8>,
    /// The signed manifest's digest (what commands name).
    pub manifest: Digest,
    pub rollout: u64,
    pub image: Vec<u8>,
    pub artifacts: Vec<Vec<u8>>,
}

/// Offer options.
#[derive(Clone, Copy)]
pub struct OfferSpec<'a> {
    pub rollout: u64,
    pub counter: u32,
    pub base: Option<&'a [u8]>,
    pub set: Option<&'a [u8]>,
    pub min_accuracy: u16,
    pub max_drop: u16,
    pub class: &'a str,
}

impl Default for OfferSpec<'_> {
    fn default() -> Self {
        Self { rollout: 7, counter: 2, base: None, set: None, min_accuracy: 800, max_drop: 50, class: CLASS }
    }
}

/// Signs an offer of `image` (a delta from `spec.base` when given).
pub fn offer(image: &[u8], spec: OfferSpec<'_>) -> Result<Offer, BoxError> {
    let mut artifacts = vec![image.to_vec()];
    let delta = match spec.base {
        Some(base) => {
            let patch = mota_delta::encode::make(base, image);
            let d = Delta {
                base_sha256: Digest::of(base),
                patch_size: patch.len() as u32,
                patch_sha256: Digest::of(&patch),
                codec: u16::from(mota_delta::format::CODEC),
            };
            artifacts.push(patch);
            Some(d)
        }
        None => None,
    };
    let validation = spec.set.map(|s| {
        artifacts.push(s.to_vec());
        Validation {
            set_sha256: Digest::of(s),
            set_size: s.len() as u32,
            min_accuracy_permille: spec.min_accuracy,
            max_drop_permille: spec.max_drop,
        }
    });
    let manifest = Manifest {
        format: mota_proto::manifest::FORMAT_VERSION,
        model: "digits_cnn",
        version: "2.0.0",
        security_counter: spec.counter,
        device_class: spec.class,
        image: Image { size: image.len() as u32, sha256: Digest::of(image) },
        delta,
        validation,
        arena_bytes: arena_of(image)?,
        expires_at: None,
        rollout_id: spec.rollout,
    };
    let envelope = release_key()?.sign(&manifest)?;
    let manifest = Digest::of(&manifest.to_vec()?);
    Ok(Offer { envelope, manifest, rollout: spec.rollout, image: image.to_vec(), artifacts })
}

// ---- the device ------------------------------------------------------------------------

/// Where the regions sit on the part.
#[derive(Debug, Clone)]
pub struct Layout {
    pub geometry: Geometry,
    pub slots: [u32; 2],
    pub slot_len: u32,
    pub state: u32,
    pub state_len: u32,
}

impl Layout {
    /// 4 KiB sectors: state 3 sectors, then two 32 KiB slots.
    pub fn uniform(write: usize, erased: u8) -> Self {
        let geometry = Geometry::uniform(19, 4096, write, erased).expect("valid geometry");
        Self { geometry, slots: [12288, 12288 + 32768], slot_len: 32768, state: 0, state_len: 12288 }
    }

    /// STM32F4: state in two 16 KiB sectors, slots in the two 128 KiB sectors.
    pub fn stm32f4(write: usize, erased: u8) -> Self {
        let geometry = Geometry::stm32f4(2, write, erased).expect("valid geometry");
        Self { geometry, slots: [131072, 262144], slot_len: 131072, state: 0, state_len: 32768 }
    }

    /// STM32H7: single-write (ECC) 128 KiB sectors programmed in 32-byte flash words;
    /// the state (the journal) in two sectors, then the slots.
    pub fn stm32h7() -> Self {
        let geometry = Geometry::uniform(4, 131072, 32, 0xFF).expect("valid geometry");
        Self { geometry, slots: [262144, 393216], slot_len: 131072, state: 0, state_len: 262144 }
    }

    /// SPI NOR: 4 KiB sectors programmed in 256-byte pages.
    pub fn paged(write: usize, erased: u8) -> Self {
        let mut l = Self::uniform(write, erased);
        l.geometry = l.geometry.with_page(256).expect("valid page");
        l
    }
}

/// A simulated device's flash: a part where a unit may be programmed again (`M`, the
/// state in sequential-storage's map) or only once between erases (the state in the
/// journal).
pub struct Device<const W: usize, const E: usize, const M: bool = true> {
    pub part: Rc<RefCell<SimFlash<W, E, M>>>,
    pub layout: Layout,
}

pub type Slot<const W: usize, const E: usize, const M: bool = true> = Region<SimFlash<W, E, M>>;
pub type TestAgent<'c, const W: usize, const E: usize, const M: bool = true> =
    Agent<'c, Slot<W, E, M>, AnyStore, RuntimeValidator<SimSlots<W, E, M>, UsClock>>;

/// The store a part takes: the map where units may be programmed again, the journal
/// where they may not.
pub trait Part: Sized {
    fn store(region: Region<Self>, erased: u8) -> Result<AnyStore, StoreError>;
}

impl<const W: usize, const E: usize> Part for SimFlash<W, E, true> {
    fn store(region: Region<Self>, erased: u8) -> Result<AnyStore, StoreError> {
        Ok(AnyStore(Box::new(MapStore::new(region, erased)?)))
    }
}

impl<const W: usize, const E: usize> Part for SimFlash<W, E, false> {
    fn store(region: Region<Self>, erased: u8) -> Result<AnyStore, StoreError> {
        Ok(AnyStore(Box::new(JournalStore::new(region, erased)?)))
    }
}

/// Either store, behind one type.
pub struct AnyStore(Box<dyn StateStore>);

impl StateStore for AnyStore {
    fn load(&mut self) -> Result<Option<mota_agent::state::State>, StoreError> {
        self.0.load()
    }

    fn save(&mut self, state: &mota_agent::state::State) -> Result<(), StoreError> {
        self.0.save(state)
    }
}

impl<const W: usize, const E: usize, const M: bool> Device<W, E, M>
where
    SimFlash<W, E, M>: Part,
{
    /// A device with `factory` in slot 0.
    pub fn new(layout: Layout, factory: &[u8]) -> Result<Self, BoxError> {
        let part = Rc::new(RefCell::new(SimFlash::new(layout.geometry.clone())));
        {
            use embedded_storage::nor_flash::NorFlash;
            let mut slot = Region::new(&part, layout.slots[0], layout.slot_len);
            let mut padded = factory.to_vec();
            padded.resize(factory.len().next_multiple_of(W), layout.geometry.erased);
            slot.write(0, &padded).map_err(|e| format!("{e:?}"))?;
        }
        Ok(Self { part, layout })
    }

    /// Boots the agent on this device.
    pub fn boot<'c>(&self, config: &'c Config<'c>, arena: &'c mut [u8]) -> Result<TestAgent<'c, W, E, M>, AgentError> {
        self.boot_or_return_arena(config, arena).map_err(|(e, _)| e)
    }

    /// Boots the agent on this device; a failed boot gives the arena back.
    pub fn boot_or_return_arena<'c>(
        &self,
        config: &'c Config<'c>,
        arena: &'c mut [u8],
    ) -> Result<TestAgent<'c, W, E, M>, (AgentError, &'c mut [u8])> {
        let l = &self.layout;
        let slots = [Region::new(&self.part, l.slots[0], l.slot_len), Region::new(&self.part, l.slots[1], l.slot_len)];
        let state = match SimFlash::<W, E, M>::store(self.state_region(), l.geometry.erased) {
            Ok(state) => state,
            Err(e) => return Err((e.into(), arena)),
        };
        let memory = SimSlots { part: Rc::clone(&self.part), slots: l.slots, len: l.slot_len };
        Agent::boot_or_return_arena(config, slots, state, RuntimeValidator { memory, clock: UsClock }, arena)
    }

    /// The state region.
    pub fn state_region(&self) -> Region<SimFlash<W, E, M>> {
        Region::new(&self.part, self.layout.state, self.layout.state_len)
    }

    /// Bytes of slot `i`.
    pub fn slot(&self, i: u8) -> Vec<u8> {
        let start = self.layout.slots[usize::from(i)] as usize;
        self.part.borrow().contents()[start..start + self.layout.slot_len as usize].to_vec()
    }

    /// Programs zeros over one write unit of slot `i` at `offset` (rounded down to the
    /// unit): flash decay, or tampering, under a model the record calls intact.
    pub fn corrupt(&self, i: u8, offset: u32) -> Result<(), BoxError> {
        use embedded_storage::nor_flash::NorFlash;
        let l = &self.layout;
        let mut slot = Region::new(&self.part, l.slots[usize::from(i)], l.slot_len);
        slot.write(offset / W as u32 * W as u32, &[0; W]).map_err(|e| format!("{e:?}"))?;
        Ok(())
    }

    /// Makes slot `i` fail every read from now on (an ECC part's uncorrectable error).
    pub fn unreadable(&self, i: u8) {
        let start = self.layout.slots[usize::from(i)] as usize;
        self.part.borrow_mut().set_unreadable(Some(start..start + self.layout.slot_len as usize));
    }

    /// Mutating operations so far.
    pub fn ops(&self) -> u64 {
        self.part.borrow().stats().mutating()
    }
}

/// The slots as mapped memory, read from the shared part.
pub struct SimSlots<const W: usize, const E: usize, const M: bool> {
    part: Rc<RefCell<SimFlash<W, E, M>>>,
    slots: [u32; 2],
    len: u32,
}

impl<const W: usize, const E: usize, const M: bool> SlotMemory for SimSlots<W, E, M> {
    fn with_slots<R>(&mut self, f: impl FnOnce([&[u8]; 2]) -> R) -> R {
        let part = self.part.borrow();
        let bytes = part.contents();
        let at = |i: usize| &bytes[self.slots[i] as usize..(self.slots[i] + self.len) as usize];
        f([at(0), at(1)])
    }
}

/// Latency clock (host time).
pub struct UsClock;

impl mota_runtime::validation::Clock for UsClock {
    fn now_us(&self) -> u64 {
        std::time::UNIX_EPOCH.elapsed().map_or(0, |d| d.as_micros() as u64)
    }
}

/// The agent's clock: advanced by hand.
#[derive(Default)]
pub struct TestClock {
    pub ms: Cell<u64>,
}

impl Clock for TestClock {
    fn now_ms(&self) -> u64 {
        self.ms.get()
    }

    fn unix_time(&self) -> Option<u64> {
        Some(mota_proto::testkit::NOW)
    }
}

/// The agent's configuration for the test device.
pub fn config(factory: &[u8]) -> Result<Config<'static>, BoxError> {
    config_with(factory, 1)
}

pub fn config_with(factory: &[u8], counter: u32) -> Result<Config<'static>, BoxError> {
    Ok(Config {
        device_id: DEVICE,
        device_class: CLASS,
        agent_version: "test",
        roots: &[mota_proto::testkit::ROOT],
        crypto: &mota_proto::Software,
        limits: Limits {
            max_image_bytes: 0,
            max_patch_bytes: 64 * 1024,
            max_arena_bytes: ARENA as u32,
            max_validation_bytes: 64 * 1024,
        },
        erased: 0xFF,
        chunk_bytes: 1024,
        retry_ms: 1000,
        max_trials: 2,
        trial_boots: 0,
        work: Work::default(),
        leases: None,
        factory: Some(Factory {
            size: factory.len() as u32,
            name: "digits_cnn",
            version: "1.0.0",
            counter,
            arena_bytes: arena_of(factory)?,
        }),
    })
}

// ---- the network -----------------------------------------------------------------------

/// What the agent published.
#[derive(Default)]
pub struct Net {
    pub out: Vec<(Kind, Vec<u8>)>,
    pub down: bool,
}

impl Transport for Net {
    type Error = ();
    fn publish(&mut self, kind: Kind, payload: &[u8]) -> Result<(), ()> {
        if self.down {
            return Err(());
        }
        self.out.push((kind, payload.to_vec()));
        Ok(())
    }
}

/// A status as the backend records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    pub rollout: u64,
    pub seq: u32,
    pub event: Event,
    pub error: Option<ErrorCode>,
    pub accuracy: Option<u16>,
    pub manifest: Option<Digest>,
}

/// The backend stand-in.
#[derive(Default)]
pub struct Backend {
    pub artifacts: HashMap<Digest, Vec<u8>>,
    pub offer: Option<Vec<u8>>,
    pub cmd: Option<Vec<u8>>,
    pub statuses: Vec<Seen>,
    pub gets: u64,
}

impl Backend {
    /// Publishes `offer` (retained) and makes its artifacts available.
    pub fn publish_offer(&mut self, offer: &Offer) {
        for a in &offer.artifacts {
            self.artifacts.insert(Digest::of(a), a.clone());
        }
        self.offer = Some(offer.envelope.clone());
    }

    /// Signs and queues a command (retained: delivered at every boot).
    pub fn command(&mut self, command: &CommandBody<'_>) -> Result<(), BoxError> {
        self.cmd = Some(release_key()?.sign_command(command)?);
        Ok(())
    }

    /// Answers what the device published; returns the chunks to deliver.
    pub fn take(&mut self, net: &mut Net) -> Result<Vec<Vec<u8>>, BoxError> {
        let mut replies = Vec::new();
        for (kind, payload) in net.out.drain(..) {
            match kind {
                Kind::Get => {
                    self.gets += 1;
                    let get = Get::parse(&payload)?;
                    let Some(data) = self.artifacts.get(&get.artifact) else {
                        replies.push(Chunk::refused(get.artifact, get.offset, Refusal::NOT_OFFERED).to_vec()?);
                        continue;
                    };
                    let start = (get.offset as usize).min(data.len());
                    let end = (start + get.length as usize).min(data.len());
                    replies.push(Chunk::data(get.artifact, get.offset, &data[start..end]).to_vec()?);
                }
                Kind::Status => {
                    let s = Status::parse(&payload)?;
                    self.statuses.push(Seen {
                        rollout: s.rollout_id,
                        seq: s.seq,
                        event: s.event,
                        error: s.error,
                        accuracy: s.accuracy_permille,
                        manifest: s.manifest,
                    });
                }
                _ => {}
            }
        }
        Ok(replies)
    }

    /// Distinct terminal reports (by idempotency key), checking that every copy of one
    /// key says the same.
    pub fn terminal(&self) -> Result<Vec<Seen>, BoxError> {
        let mut by_key: HashMap<(u64, u32), Seen> = HashMap::new();
        for s in self.statuses.iter().filter(|s| s.event.is_terminal()) {
            if let Some(prev) = by_key.insert((s.rollout, s.seq), s.clone())
                && prev != *s
            {
                return Err(format!("two different reports under one key: {prev:?} / {s:?}").into());
            }
        }
        let mut v: Vec<Seen> = by_key.into_values().collect();
        v.sort_by_key(|s| (s.rollout, s.seq));
        Ok(v)
    }
}

/// Runs the device until it is idle: hello, the retained offer and the queued command,
/// then chunk answers and timer ticks. An error is a power cut (or a real failure).
pub fn drive<const W: usize, const E: usize, const M: bool>(
    agent: &mut TestAgent<'_, W, E, M>,
    backend: &mut Backend,
    clock: &TestClock,
) -> Result<(), AgentError> {
    let mut net = Net::default();
    agent.hello(&mut net, clock)?;
    if let Some(offer) = backend.offer.clone() {
        agent.handle(Kind::Offer, &offer, &mut net, clock)?;
    }
    if let Some(cmd) = backend.cmd.clone() {
        agent.handle(Kind::Cmd, &cmd, &mut net, clock)?;
    }
    for _ in 0..100_000 {
        let replies = backend.take(&mut net).map_err(|_| AgentError::Config("backend"))?;
        if replies.is_empty() {
            if agent.is_idle() {
                return Ok(());
            }
            clock.ms.set(clock.ms.get() + 1000);
            agent.poll(&mut net, clock)?;
        }
        for r in replies {
            agent.handle(Kind::Chunk, &r, &mut net, clock)?;
        }
    }
    Err(AgentError::Config("the device never became idle"))
}
