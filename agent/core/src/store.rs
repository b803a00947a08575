//! The state region: one [`State`] record, kept by a [`StateStore`].
//!
//! Two stores, one per kind of part:
//! - [`MapStore`]: a sequential-storage map, for parts where a unit may be programmed
//!   again (`MultiwriteNorFlash`: STM32 F4/F7, nRF52, ESP32 SPI flash, most NOR).
//! - [`JournalStore`]: the `mota-journal` record log, which never programs a unit twice
//!   between erases, for single-write ECC parts (STM32 L4, G4, H7, U5, WB, WL); it works
//!   on any `NorFlash`.
//!
//! sequential-storage is async; the agent is a blocking loop, so the region is wrapped in
//! [`Blocking`] (the async traits over the blocking ones) and each operation runs to
//! completion under `embassy_futures::block_on` (a flash driver that never yields makes
//! every future ready at its first poll).
//!
//! The map's region must be `MultiwriteNorFlash`: after a torn write, sequential-storage's
//! repair programs the torn unit again, which single-write (ECC) parts refuse (pinned by
//! mota-simflash's `sequential_storage` test); those parts take the journal. Parts whose
//! erased value is 0x00 go through [`ErasedFF`], since sequential-storage reads 0xFF as
//! erased.

use embassy_futures::block_on;
use embedded_storage::nor_flash::{ErrorType, MultiwriteNorFlash, NorFlash, ReadNorFlash};
use sequential_storage::cache::{Cache, Uncached};
use sequential_storage::map::{MapConfig, MapStorage, SerializationError, Value};

use mota_journal::{Journal, JournalError};

use crate::state::{MAX_STATE_LEN, State};

/// No cache: one record, read once per boot.
type NoCache = Cache<Uncached, Uncached, Uncached, u8>;

/// The map key of the record.
const KEY: u8 = 0;

/// Why the state region failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreError {
    /// The region is not a whole number of erase pages, or fewer than two.
    Layout,
    /// A flash operation failed (includes a power cut in simulation).
    Flash,
    /// sequential-storage found the region corrupt beyond repair.
    Corrupted,
    /// The region is too small for the record.
    Full,
    /// A record was found that this build cannot read.
    Format,
}

impl core::fmt::Display for StoreError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            Self::Layout => "region is not at least two whole erase pages",
            Self::Flash => "flash operation failed",
            Self::Corrupted => "corrupted beyond repair",
            Self::Full => "region too small for the record",
            Self::Format => "record written by an incompatible agent",
        })
    }
}

impl core::error::Error for StoreError {}

/// Where the agent keeps its record: each `save` is atomic (a power cut leaves the old
/// record or the new one), and `load` returns the newest one saved.
pub trait StateStore {
    /// The stored record, `None` on a fresh region.
    fn load(&mut self) -> Result<Option<State>, StoreError>;
    /// Replaces the record (atomically: a cut leaves the old or the new one).
    fn save(&mut self, state: &State) -> Result<(), StoreError>;
}

/// The state map over a region (sequential-storage; the region must allow a unit to be
/// programmed again).
pub struct MapStore<S: NorFlash> {
    map: MapStorage<u8, Blocking<ErasedFF<S>>, NoCache>,
    buf: [u8; MAX_STATE_LEN],
}

impl<S: MultiwriteNorFlash> MapStore<S> {
    /// The map over the whole of `region`, whose erased byte value is `erased`.
    pub fn new(region: S, erased: u8) -> Result<Self, StoreError> {
        let len = u32::try_from(region.capacity()).map_err(|_| StoreError::Layout)?;
        let config = MapConfig::try_new(0..len).map_err(|_| StoreError::Layout)?;
        Ok(Self {
            map: MapStorage::new(Blocking(ErasedFF::new(region, erased)), config, Cache::new_uncached()),
            buf: [0; MAX_STATE_LEN],
        })
    }
}

impl<S: MultiwriteNorFlash> StateStore for MapStore<S> {
    fn load(&mut self) -> Result<Option<State>, StoreError> {
        let fetched = block_on(self.map.fetch_item::<Record>(&mut self.buf, &KEY)).map_err(map_error)?;
        Ok(fetched.map(|r| r.0))
    }

    fn save(&mut self, state: &State) -> Result<(), StoreError> {
        block_on(self.map.store_item(&mut self.buf, &KEY, &Record(*state))).map_err(map_error)
    }
}

/// The record journal over a region (`mota-journal`): never programs a unit twice between
/// erases, so it fits single-write (ECC) parts, and any other NOR part.
pub struct JournalStore<S: NorFlash> {
    journal: Journal<S>,
    buf: [u8; MAX_STATE_LEN],
}

impl<S: NorFlash> JournalStore<S> {
    /// The journal over the whole of `region`, whose erased byte value is `erased`.
    pub fn new(region: S, erased: u8) -> Result<Self, StoreError> {
        let journal = Journal::new(region, erased).map_err(journal_error)?;
        if journal.max_len() < MAX_STATE_LEN {
            return Err(StoreError::Full);
        }
        Ok(Self { journal, buf: [0; MAX_STATE_LEN] })
    }
}

impl<S: NorFlash> StateStore for JournalStore<S> {
    fn load(&mut self) -> Result<Option<State>, StoreError> {
        match self.journal.load(&mut self.buf).map_err(journal_error)? {
            Some(bytes) => crate::record::decode(bytes).map(Some).ok_or(StoreError::Format),
            None => Ok(None),
        }
    }

    fn save(&mut self, state: &State) -> Result<(), StoreError> {
        let len = crate::record::encode(state, &mut self.buf).ok_or(StoreError::Full)?;
        self.journal.save(self.buf.get(..len).ok_or(StoreError::Full)?).map_err(journal_error)
    }
}

fn journal_error(e: JournalError) -> StoreError {
    match e {
        JournalError::Layout => StoreError::Layout,
        JournalError::TooLarge => StoreError::Full,
        _ => StoreError::Flash,
    }
}

fn map_error<E>(e: sequential_storage::Error<E>) -> StoreError {
    match e {
        sequential_storage::Error::Storage { .. } => StoreError::Flash,
        sequential_storage::Error::FullStorage | sequential_storage::Error::ItemTooBig => StoreError::Full,
        sequential_storage::Error::SerializationError(_) => StoreError::Format,
        _ => StoreError::Corrupted,
    }
}

/// [`State`] as a map value.
struct Record(State);

impl Value<'_> for Record {
    fn serialize_into(&self, buffer: &mut [u8]) -> Result<usize, SerializationError> {
        crate::record::encode(&self.0, buffer).ok_or(SerializationError::BufferTooSmall)
    }

    fn deserialize_from(buffer: &[u8]) -> Result<(Self, usize), SerializationError> {
        let state = crate::record::decode(buffer).ok_or(SerializationError::InvalidFormat)?;
        Ok((Self(state), buffer.len()))
    }
}

/// The async flash traits over a blocking driver.
pub struct Blocking<F>(pub F);

impl<F: ErrorType> ErrorType for Blocking<F> {
    type Error = F::Error;
}

impl<F: ReadNorFlash> embedded_storage_async::nor_flash::ReadNorFlash for Blocking<F> {
    const READ_SIZE: usize = F::READ_SIZE;

    async fn read(&mut self, offset: u32, bytes: &mut [u8]) -> Result<(), F::Error> {
        self.0.read(offset, bytes)
    }

    fn capacity(&self) -> usize {
        self.0.capacity()
    }
}

impl<F: NorFlash> embedded_storage_async::nor_flash::NorFlash for Blocking<F> {
    const WRITE_SIZE: usize = F::WRITE_SIZE;
    const ERASE_SIZE: usize = F::ERASE_SIZE;

    async fn erase(&mut self, from: u32, to: u32) -> Result<(), F::Error> {
        self.0.erase(from, to)
    }

    async fn write(&mut self, offset: u32, bytes: &[u8]) -> Result<(), F::Error> {
        self.0.write(offset, bytes)
    }
}

impl<F: MultiwriteNorFlash> embedded_storage_async::nor_flash::MultiwriteNorFlash for Blocking<F> {}

/// Presents a part as one whose erased value is 0xFF (what sequential-storage reads as
/// erased). On a 0x00-erased part every bit is inverted on the way in and out, so
/// "programming moves bits away from erased" holds in the inverted view too (OR on the
/// part is AND in the view); on a 0xFF-erased part it passes through.
pub struct ErasedFF<F> {
    flash: F,
    invert: bool,
}

impl<F> ErasedFF<F> {
    /// `flash`, whose erased byte value is `erased`.
    pub fn new(flash: F, erased: u8) -> Self {
        Self { flash, invert: erased != 0xFF }
    }
}

impl<F: ErrorType> ErrorType for ErasedFF<F> {
    type Error = F::Error;
}

impl<F: ReadNorFlash> ReadNorFlash for ErasedFF<F> {
    const READ_SIZE: usize = F::READ_SIZE;

    fn read(&mut self, offset: u32, bytes: &mut [u8]) -> Result<(), F::Error> {
        self.flash.read(offset, bytes)?;
        if self.invert {
            bytes.iter_mut().for_each(|b| *b = !*b);
        }
        Ok(())
    }

    fn capacity(&self) -> usize {
        self.flash.capacity()
    }
}

impl<F: NorFlash> NorFlash for ErasedFF<F> {
    const WRITE_SIZE: usize = F::WRITE_SIZE;
    const ERASE_SIZE: usize = F::ERASE_SIZE;

    fn erase(&mut self, from: u32, to: u32) -> Result<(), F::Error> {
        self.flash.erase(from, to)
    }

    fn write(&mut self, offset: u32, bytes: &[u8]) -> Result<(), F::Error> {
        if !self.invert {
            return self.flash.write(offset, bytes);
        }
        // 256 bytes per piece: a whole number of write units for any power-of-two unit
        // up to 256 (the agent refuses larger ones).
        let mut buf = [0u8; 256];
        let mut at = offset;
        for chunk in bytes.chunks(buf.len()) {
            let out = buf.get_mut(..chunk.len()).unwrap_or_default();
            for (o, b) in out.iter_mut().zip(chunk) {
                *o = !*b;
            }
            self.flash.write(at, out)?;
            at += chunk.len() as u32;
        }
        Ok(())
    }
}

impl<F: MultiwriteNorFlash> MultiwriteNorFlash for ErasedFF<F> {}

#[cfg(test)]
mod tests {
    use super::*;
    use mota_simflash::{Geometry, SimFlash};

    type TestResult = Result<(), Box<dyn std::error::Error>>;

    fn cycle<const W: usize>(erased: u8) -> TestResult {
        let part: SimFlash<W, 4096, true> = SimFlash::new(Geometry::uniform(3, 4096, W, erased)?);
        let mut store = MapStore::new(part, erased)?;
        assert_eq!(store.load()?, None);
        let mut state = State::empty(1);
        state.report = Some(crate::state::Report::new(1, 2, mota_proto::message::Event::Committed, None, None));
        state.last_failed = Some(mota_proto::Digest([0x5A; 32]));
        for i in 0..200 {
            state.seq = i;
            store.save(&state)?;
            assert_eq!(store.load()?, Some(state), "store {i}");
        }
        Ok(())
    }

    #[test]
    fn records_cycle_through_the_pages_on_either_erased_value() -> TestResult {
        for erased in [0xFF, 0x00] {
            cycle::<1>(erased)?;
            cycle::<4>(erased)?;
            cycle::<16>(erased)?;
        }
        Ok(())
    }
}
