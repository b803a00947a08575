//! The example integration: what a product firmware writes to embed mota-agent.
//!
//! Flash: one array in RAM stands for the part (QEMU's mps2-an386 has no programmable
//! flash), split into the state region (3 × 4 KiB) and two 32 KiB model slots, driven by
//! [`RamFlash`], a NorFlash with real NOR rules (erase before write, whole sectors,
//! aligned program units, bits only cleared). The "network" is a loopback that answers
//! chunk requests from artifacts built into the image, standing in for the MQTT client;
//! everything else (verification, patching, hashing, the state store, validation on
//! mota-runtime, the commit) is the agent as shipped.

use core::cell::RefCell;
use core::ffi::CStr;
use core::ptr::addr_of_mut;

use cortex_m::interrupt::Mutex;

use cortex_m_semihosting::hprintln;
use embedded_storage::nor_flash::{
    ErrorType, MultiwriteNorFlash, NorFlash, NorFlashError, NorFlashErrorKind, ReadNorFlash,
};
use mota_agent::{Agent, Clock, Config, Factory, MapStore, SlotMemory, Transport, Validator, Work};
use mota_proto::message::{Chunk, Event, Get, Status};
use mota_proto::topic::Kind;
use mota_proto::{Digest, Limits, Wire};

use crate::board::{Backing, BackingError};

/// The factory model, flashed into slot 0 "at the factory".
pub static FACTORY: &[u8] = FACTORY_BYTES;
const FACTORY_BYTES: &[u8] = include_bytes!("../../runtime/fixtures/models/digits_cnn_v1.tflite");
static OFFER: &[u8] = include_bytes!("../data/offer.cbor");
static PATCH: &[u8] = include_bytes!("../data/patch.mdlt");
static SET: &[u8] = include_bytes!("../data/set.vset");

const SECTOR: usize = 4096;
const STATE_LEN: usize = 3 * SECTOR;
/// One model slot.
pub const SLOT_LEN: usize = 32 * 1024;
const PART_LEN: usize = STATE_LEN + 2 * SLOT_LEN;

#[repr(C, align(8))]
struct Part([u8; PART_LEN]);

static mut PART: Part = Part([0; PART_LEN]);

/// The device's configuration, fixed at build time.
pub static CONFIG: Config<'static> = Config {
    device_id: "demo-device",
    device_class: "stm32f4-kws",
    agent_version: "firmware-demo",
    roots: &[mota_proto::testkit::ROOT],
    crypto: &mota_proto::Software,
    limits: Limits {
        max_image_bytes: SLOT_LEN as u32,
        max_patch_bytes: 64 * 1024,
        max_arena_bytes: 16 * 1024,
        max_validation_bytes: 16 * 1024,
    },
    erased: 0xFF,
    chunk_bytes: 1024,
    retry_ms: 1000,
    max_trials: 2,
    trial_boots: 0,
    work: Work { flash_bytes: 0, records: 0 },
    leases: None,
    // The arena figure is what `mota model inspect` prints for the factory model.
    factory: Some(Factory {
        size: FACTORY_BYTES.len() as u32,
        name: "digits_cnn",
        version: "1.0.0",
        counter: 1,
        arena_bytes: 2976,
    }),
};

/// Why a flash operation was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RamFlashError {
    /// Outside the region.
    OutOfBounds,
    /// Not on a program unit or sector boundary.
    NotAligned,
    /// The file behind the part could not be written.
    Backing,
}

impl NorFlashError for RamFlashError {
    fn kind(&self) -> NorFlashErrorKind {
        match self {
            Self::OutOfBounds => NorFlashErrorKind::OutOfBounds,
            Self::NotAligned => NorFlashErrorKind::NotAligned,
            Self::Backing => NorFlashErrorKind::Other,
        }
    }
}

/// A region of the RAM "part" with NOR rules: 4-byte program units, 4 KiB sectors.
pub struct RamFlash {
    base: *mut u8,
    /// Where the region starts in the part.
    at: usize,
    len: usize,
}

/// The file the part is kept in, when [`regions_in`] opened one.
static BACKING: Mutex<RefCell<Option<Backing>>> = Mutex::new(RefCell::new(None));

impl RamFlash {
    /// Writes `len` bytes of the region from `start` through to the file, if any.
    fn persist(&self, start: usize, len: usize) -> Result<(), RamFlashError> {
        // SAFETY: inside this region of PART (checked by the caller); nothing writes
        // these bytes while the file is written.
        let bytes = unsafe { core::slice::from_raw_parts(self.base.add(start), len) };
        cortex_m::interrupt::free(|cs| match BACKING.borrow(cs).borrow_mut().as_mut() {
            Some(backing) => backing.store(self.at + start, bytes).map_err(|_| RamFlashError::Backing),
            None => Ok(()),
        })
    }

    fn span(&self, offset: u32, len: usize) -> Result<usize, RamFlashError> {
        let start = offset as usize;
        if start.checked_add(len).is_none_or(|end| end > self.len) {
            return Err(RamFlashError::OutOfBounds);
        }
        Ok(start)
    }
}

impl ErrorType for RamFlash {
    type Error = RamFlashError;
}

impl ReadNorFlash for RamFlash {
    const READ_SIZE: usize = 1;

    fn read(&mut self, offset: u32, bytes: &mut [u8]) -> Result<(), RamFlashError> {
        let start = self.span(offset, bytes.len())?;
        for (i, b) in bytes.iter_mut().enumerate() {
            // SAFETY: inside this region of PART (checked by span); regions never overlap.
            *b = unsafe { self.base.add(start + i).read_volatile() };
        }
        Ok(())
    }

    fn capacity(&self) -> usize {
        self.len
    }
}

impl NorFlash for RamFlash {
    const WRITE_SIZE: usize = 4;
    const ERASE_SIZE: usize = SECTOR;

    fn erase(&mut self, from: u32, to: u32) -> Result<(), RamFlashError> {
        if from > to {
            return Err(RamFlashError::OutOfBounds);
        }
        let start = self.span(from, (to - from) as usize)?;
        if !start.is_multiple_of(SECTOR) || !(to as usize).is_multiple_of(SECTOR) {
            return Err(RamFlashError::NotAligned);
        }
        for i in start..to as usize {
            // SAFETY: as in read.
            unsafe { self.base.add(i).write_volatile(0xFF) };
        }
        self.persist(start, to as usize - start)
    }

    fn write(&mut self, offset: u32, bytes: &[u8]) -> Result<(), RamFlashError> {
        let start = self.span(offset, bytes.len())?;
        if !start.is_multiple_of(4) || !bytes.len().is_multiple_of(4) {
            return Err(RamFlashError::NotAligned);
        }
        for (i, &b) in bytes.iter().enumerate() {
            // SAFETY: as in read. NOR programming only clears bits.
            unsafe {
                let p = self.base.add(start + i);
                p.write_volatile(p.read_volatile() & b);
            }
        }
        self.persist(start, bytes.len())
    }
}

impl MultiwriteNorFlash for RamFlash {}

/// The regions: (slot 0, slot 1, state), with the factory model in slot 0 and the rest
/// erased, as a device leaves production. Call once.
pub fn regions() -> (RamFlash, RamFlash, RamFlash) {
    let base = addr_of_mut!(PART).cast::<u8>();
    // SAFETY: PART is only reached through these regions, created once.
    unsafe {
        for i in 0..PART_LEN {
            base.add(i).write_volatile(0xFF);
        }
        for (i, &b) in FACTORY.iter().enumerate() {
            base.add(STATE_LEN + i).write_volatile(b);
        }
    }
    split()
}

/// The regions of a part kept in the host file at `path` (semihosting): loaded from it,
/// or, on the very first boot, created as a device leaves production. Every program and
/// erase is in the file before it returns, so killing QEMU is a power cut. Call once.
pub fn regions_in(path: &CStr) -> Result<(RamFlash, RamFlash, RamFlash), BackingError> {
    let base = addr_of_mut!(PART).cast::<u8>();
    // SAFETY: PART is only reached through the regions, created after this.
    let image = unsafe { core::slice::from_raw_parts_mut(base, PART_LEN) };
    let backing = Backing::open(path, image, |part| {
        part.fill(0xFF);
        if let Some(slot) = part.get_mut(STATE_LEN..STATE_LEN + FACTORY.len()) {
            slot.copy_from_slice(FACTORY);
        }
    })?;
    cortex_m::interrupt::free(|cs| BACKING.borrow(cs).replace(Some(backing)));
    Ok(split())
}

fn split() -> (RamFlash, RamFlash, RamFlash) {
    let base = addr_of_mut!(PART).cast::<u8>();
    // SAFETY: offsets inside PART; the regions do not overlap.
    unsafe {
        (
            RamFlash { base: base.add(STATE_LEN), at: STATE_LEN, len: SLOT_LEN },
            RamFlash { base: base.add(STATE_LEN + SLOT_LEN), at: STATE_LEN + SLOT_LEN, len: SLOT_LEN },
            RamFlash { base, at: 0, len: STATE_LEN },
        )
    }
}

/// The slots as the CPU reads them (what memory-mapped flash gives a real device).
pub struct MappedSlots;

impl SlotMemory for MappedSlots {
    fn with_slots<R>(&mut self, f: impl FnOnce([&[u8]; 2]) -> R) -> R {
        let base = addr_of_mut!(PART).cast::<u8>().cast_const();
        // SAFETY: nothing writes the slots while the validator reads them (the agent calls
        // it between flash operations, on this one thread).
        let (a, b) = unsafe {
            (
                core::slice::from_raw_parts(base.add(STATE_LEN), SLOT_LEN),
                core::slice::from_raw_parts(base.add(STATE_LEN + SLOT_LEN), SLOT_LEN),
            )
        };
        f([a, b])
    }
}

/// A tick counter standing in for a hardware timer (QEMU's timing is not the board's).
pub struct Ticks(pub core::cell::Cell<u64>);

impl Clock for Ticks {
    fn now_ms(&self) -> u64 {
        self.0.get()
    }

    fn unix_time(&self) -> Option<u64> {
        None
    }
}

impl mota_runtime::validation::Clock for Ticks {
    fn now_us(&self) -> u64 {
        let t = self.0.get() + 1;
        self.0.set(t);
        t
    }
}

/// The loopback "network": keeps what the agent publishes, in order, until the loop
/// answers it.
pub struct Loopback {
    queue: [(Kind, [u8; 512], usize); 4],
    len: usize,
    /// The terminal report seen, if any.
    pub outcome: Option<(Event, Option<u16>)>,
}

impl Transport for Loopback {
    type Error = ();

    fn publish(&mut self, kind: Kind, payload: &[u8]) -> Result<(), ()> {
        let slot = self.queue.get_mut(self.len).ok_or(())?;
        slot.1.get_mut(..payload.len()).ok_or(())?.copy_from_slice(payload);
        slot.0 = kind;
        slot.2 = payload.len();
        self.len += 1;
        Ok(())
    }
}

impl Loopback {
    /// Empty.
    pub const fn new() -> Self {
        Self { queue: [(Kind::Hello, [0; 512], 0); 4], len: 0, outcome: None }
    }

    /// Takes the oldest message into `buf`; returns its kind and length.
    fn pop(&mut self, buf: &mut [u8; 512]) -> Option<(Kind, usize)> {
        if self.len == 0 {
            return None;
        }
        let (kind, bytes, len) = &self.queue[0];
        let (kind, len) = (*kind, *len);
        buf.copy_from_slice(bytes);
        self.queue.rotate_left(1);
        self.len -= 1;
        Some((kind, len))
    }
}

impl Default for Loopback {
    fn default() -> Self {
        Self::new()
    }
}

fn artifact(id: &Digest) -> Option<&'static [u8]> {
    [PATCH, SET].into_iter().find(|a| Digest::of(a) == *id)
}

/// The firmware's main loop, shortened: deliver the offer, then answer every chunk
/// request from the built-in artifacts until the agent reports an outcome.
pub fn run_update<V: Validator>(
    agent: &mut Agent<'_, RamFlash, MapStore<RamFlash>, V>,
    net: &mut Loopback,
    clock: &Ticks,
) -> Result<(), mota_agent::AgentError> {
    // Three measured regions (instruction counts): the offer (verify, accept, erase), the
    // transfer (patch, writes, digests, the set), validation and commit.
    crate::bench_start();
    agent.hello(net, clock)?;
    agent.handle(Kind::Offer, OFFER, net, clock)?;
    crate::bench_end();
    crate::bench_start();
    let mut transferring = true;
    let mut chunk = [0u8; 1024 + 128];
    let mut message = [0u8; 512];
    for _ in 0..10_000 {
        let Some((kind, len)) = net.pop(&mut message) else {
            if net.outcome.is_some() {
                crate::bench_end();
                return Ok(());
            }
            if transferring && agent.state().job.is_some_and(|j| j.phase == mota_agent::state::Phase::Validate) {
                transferring = false;
                crate::bench_end();
                crate::bench_start();
            }
            clock.0.set(clock.0.get() + 1000);
            agent.poll(net, clock)?;
            continue;
        };
        let payload = message.get(..len).unwrap_or_default();
        match kind {
            Kind::Get => {
                let Ok(get) = Get::parse(payload) else { continue };
                let Some(data) = artifact(&get.artifact) else { continue };
                let start = (get.offset as usize).min(data.len());
                let end = (start + get.length as usize).min(data.len());
                let Ok(n) = Chunk::data(get.artifact, get.offset, &data[start..end]).encode_into(&mut chunk) else {
                    continue;
                };
                agent.handle(Kind::Chunk, &chunk[..n], net, clock)?;
            }
            Kind::Status => {
                if let Ok(s) = Status::parse(payload) {
                    hprintln!("status: event {} seq {} error {}", s.event as u8, s.seq, s.error.map_or(0, |e| e.0));
                    if s.event.is_terminal() {
                        net.outcome = Some((s.event, s.accuracy_permille));
                    }
                }
            }
            _ => {}
        }
    }
    Ok(())
}
