//! The flash array, its rules, its faults and its counters.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;

use embedded_storage::nor_flash::{
    ErrorType, MultiwriteNorFlash, NorFlash, NorFlashError, NorFlashErrorKind, ReadNorFlash,
};

use crate::geometry::Geometry;

/// How a programmed cut behaves when its operation comes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CutMode {
    /// Power fails just before the operation: it has no effect.
    Before,
    /// Power fails during the operation: a write programs only a prefix of its bytes, an
    /// erase erases only a prefix of its range (random lengths).
    TearPrefix,
    /// Power fails during the operation: a write programs each changing bit with
    /// probability one half, an erase erases a random selection of bytes.
    TearBits,
}

/// Why an operation failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SimFlashError {
    /// Outside the part.
    #[error("out of bounds")]
    OutOfBounds,
    /// Not on a write unit or sector boundary.
    #[error("not aligned")]
    NotAligned,
    /// A program unit written twice without an erase (single-write parts).
    #[error("program unit already written")]
    WriteTwice,
    /// Power is off (a cut happened; call `restore_power`).
    #[error("power loss")]
    PowerLoss,
    /// The backing file could not be read or written.
    #[error("backing file I/O failed")]
    Io,
    /// A read touched bytes that cannot be read back (an ECC part's uncorrectable error,
    /// a worn-out page): see [`SimFlash::set_unreadable`].
    #[error("uncorrectable read error")]
    Unreadable,
}

impl NorFlashError for SimFlashError {
    fn kind(&self) -> NorFlashErrorKind {
        match self {
            Self::OutOfBounds => NorFlashErrorKind::OutOfBounds,
            Self::NotAligned => NorFlashErrorKind::NotAligned,
            _ => NorFlashErrorKind::Other,
        }
    }
}

/// Operation and byte counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Read operations.
    pub reads: u64,
    /// Write operations.
    pub writes: u64,
    /// Erase operations.
    pub erases: u64,
    /// Bytes read.
    pub bytes_read: u64,
    /// Bytes written.
    pub bytes_written: u64,
    /// Bytes erased.
    pub bytes_erased: u64,
}

impl Stats {
    /// Operations that change the flash (writes and erases): what cuts are counted in.
    pub fn mutating(&self) -> u64 {
        self.writes + self.erases
    }
}

/// A saved copy of the flash contents, to fork a test at any point.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    data: Vec<u8>,
    programmed: Vec<bool>,
}

/// A simulated NOR flash part.
///
/// `WRITE` and `ERASE` are the `NorFlash` constants; the geometry must have the same write
/// size, and `ERASE` must divide every sector (for mixed maps: the smallest sector; erases
/// must still start and end on real sector boundaries).
pub struct SimFlash<const WRITE: usize, const ERASE: usize, const MULTI: bool = false> {
    geometry: Geometry,
    data: Vec<u8>,
    programmed: Vec<bool>,
    stats: Stats,
    cut: Option<(u64, CutMode)>,
    powered: bool,
    rng: u64,
    file: Option<File>,
    unreadable: Option<std::ops::Range<usize>>,
}

impl<const WRITE: usize, const ERASE: usize, const MULTI: bool> SimFlash<WRITE, ERASE, MULTI> {
    /// A fully erased part.
    ///
    /// # Panics
    /// If the geometry contradicts `WRITE` or `ERASE` (a bug in the test, not an input).
    pub fn new(geometry: Geometry) -> Self {
        assert_eq!(geometry.write_size, WRITE, "geometry write size differs from WRITE");
        assert!(
            ERASE > 0 && geometry.sectors().iter().all(|&s| (s as usize).is_multiple_of(ERASE)),
            "ERASE must divide every sector"
        );
        let capacity = geometry.capacity();
        let data = vec![geometry.erased; capacity];
        let programmed = vec![false; capacity / WRITE];
        Self {
            geometry,
            data,
            programmed,
            stats: Stats::default(),
            cut: None,
            powered: true,
            rng: 0x9e37_79b9_7f4a_7c15,
            file: None,
            unreadable: None,
        }
    }

    /// A part kept in `path`: loaded when the file exists with the right size, created
    /// erased otherwise; every change is written through.
    pub fn with_file(geometry: Geometry, path: &Path) -> Result<Self, SimFlashError> {
        let mut flash = Self::new(geometry);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(|_| SimFlashError::Io)?;
        let len = file.metadata().map_err(|_| SimFlashError::Io)?.len() as usize;
        if len == flash.data.len() {
            file.read_exact(&mut flash.data).map_err(|_| SimFlashError::Io)?;
            let erased = flash.geometry.erased;
            for (unit, flag) in flash.data.chunks(WRITE).zip(flash.programmed.iter_mut()) {
                *flag = unit.iter().any(|&b| b != erased);
            }
        } else {
            file.set_len(0).map_err(|_| SimFlashError::Io)?;
            file.write_all(&flash.data).map_err(|_| SimFlashError::Io)?;
        }
        flash.file = Some(file);
        Ok(flash)
    }

    /// The layout.
    pub fn geometry(&self) -> &Geometry {
        &self.geometry
    }

    /// The raw contents (for assertions).
    pub fn contents(&self) -> &[u8] {
        &self.data
    }

    /// The counters.
    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// Seeds the generator that decides how operations tear.
    pub fn seed(&mut self, seed: u64) {
        self.rng = seed | 1;
    }

    /// Power fails at mutating operation number `op` (1-based, counted from the part's
    /// creation, as in [`Stats::mutating`]), in the given mode.
    pub fn cut_at(&mut self, op: u64, mode: CutMode) {
        self.cut = Some((op, mode));
    }

    /// Whether a cut has happened (and power is still off).
    pub fn is_cut(&self) -> bool {
        !self.powered
    }

    /// Power comes back (a reboot); any pending cut is cleared.
    pub fn restore_power(&mut self) {
        self.powered = true;
        self.cut = None;
    }

    /// Makes reads touching `range` (part offsets) fail, as an ECC part reports an
    /// uncorrectable error; `None` heals the part.
    pub fn set_unreadable(&mut self, range: Option<std::ops::Range<usize>>) {
        self.unreadable = range;
    }

    /// Saves the contents.
    pub fn snapshot(&self) -> Snapshot {
        Snapshot { data: self.data.clone(), programmed: self.programmed.clone() }
    }

    /// Brings back saved contents (and writes them through to the file, if any).
    pub fn restore(&mut self, snapshot: &Snapshot) -> Result<(), SimFlashError> {
        self.data.clone_from(&snapshot.data);
        self.programmed.clone_from(&snapshot.programmed);
        self.persist(0, self.data.len())
    }

    fn random(&mut self) -> u64 {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        self.rng
    }

    fn persist(&mut self, start: usize, end: usize) -> Result<(), SimFlashError> {
        if let Some(file) = &mut self.file {
            file.seek(SeekFrom::Start(start as u64)).map_err(|_| SimFlashError::Io)?;
            file.write_all(&self.data[start..end]).map_err(|_| SimFlashError::Io)?;
        }
        Ok(())
    }

    /// Checks power and the cut schedule before mutating operation number `op`; returns
    /// the tear mode if this operation is the one that fails midway.
    fn before_mutation(&mut self) -> Result<Option<CutMode>, SimFlashError> {
        if !self.powered {
            return Err(SimFlashError::PowerLoss);
        }
        let op = self.stats.mutating() + 1;
        match self.cut {
            Some((at, CutMode::Before)) if at == op => {
                self.powered = false;
                Err(SimFlashError::PowerLoss)
            }
            Some((at, mode)) if at == op => Ok(Some(mode)),
            _ => Ok(None),
        }
    }

    /// Programs `byte` over `old` (bits move only away from the erased value).
    fn program(&self, old: u8, byte: u8) -> u8 {
        if self.geometry.erased == 0xFF { old & byte } else { old | byte }
    }
}

impl<const WRITE: usize, const ERASE: usize, const MULTI: bool> ErrorType for SimFlash<WRITE, ERASE, MULTI> {
    type Error = SimFlashError;
}

impl<const WRITE: usize, const ERASE: usize, const MULTI: bool> ReadNorFlash for SimFlash<WRITE, ERASE, MULTI> {
    const READ_SIZE: usize = 1;

    fn read(&mut self, offset: u32, bytes: &mut [u8]) -> Result<(), SimFlashError> {
        if !self.powered {
            return Err(SimFlashError::PowerLoss);
        }
        let start = offset as usize;
        let src = self.data.get(start..start + bytes.len()).ok_or(SimFlashError::OutOfBounds)?;
        if self.unreadable.as_ref().is_some_and(|bad| bad.start < start + bytes.len() && start < bad.end) {
            return Err(SimFlashError::Unreadable);
        }
        bytes.copy_from_slice(src);
        self.stats.reads += 1;
        self.stats.bytes_read += bytes.len() as u64;
        Ok(())
    }

    fn capacity(&self) -> usize {
        self.data.len()
    }
}

impl<const WRITE: usize, const ERASE: usize, const MULTI: bool> NorFlash for SimFlash<WRITE, ERASE, MULTI> {
    const WRITE_SIZE: usize = WRITE;
    const ERASE_SIZE: usize = ERASE;

    fn erase(&mut self, from: u32, to: u32) -> Result<(), SimFlashError> {
        let (from, to) = (from as usize, to as usize);
        if from > to || to > self.data.len() {
            return Err(SimFlashError::OutOfBounds);
        }
        if !self.geometry.is_boundary(from) || !self.geometry.is_boundary(to) {
            return Err(SimFlashError::NotAligned);
        }
        let tear = self.before_mutation()?;
        let erased = self.geometry.erased;
        let end = match tear {
            None => to,
            Some(CutMode::TearPrefix) => from + (self.random() as usize) % (to - from + 1),
            Some(_) => {
                for i in from..to {
                    if self.random() & 1 == 1 {
                        self.data[i] = erased;
                    }
                }
                from
            }
        };
        self.data[from..end].fill(erased);
        if tear.is_none() {
            self.programmed[from / WRITE..to / WRITE].fill(false);
        }
        self.stats.erases += 1;
        self.stats.bytes_erased += (to - from) as u64;
        self.persist(from, to)?;
        if tear.is_some() {
            self.powered = false;
            return Err(SimFlashError::PowerLoss);
        }
        Ok(())
    }

    fn write(&mut self, offset: u32, bytes: &[u8]) -> Result<(), SimFlashError> {
        let start = offset as usize;
        let end = start.checked_add(bytes.len()).ok_or(SimFlashError::OutOfBounds)?;
        if end > self.data.len() {
            return Err(SimFlashError::OutOfBounds);
        }
        if !start.is_multiple_of(WRITE) || !bytes.len().is_multiple_of(WRITE) {
            return Err(SimFlashError::NotAligned);
        }
        if !MULTI && self.programmed[start / WRITE..end / WRITE].iter().any(|&p| p) {
            return Err(SimFlashError::WriteTwice);
        }
        // A driver for a paged part splits the write into one program operation per page.
        let Some(page) = self.geometry.page else { return self.program_op(offset, bytes) };
        let (mut at, mut rest) = (start, bytes);
        while !rest.is_empty() {
            let (piece, tail) = rest.split_at((page - at % page).min(rest.len()));
            self.program_op(at as u32, piece)?;
            at += piece.len();
            rest = tail;
        }
        Ok(())
    }
}

impl<const WRITE: usize, const ERASE: usize, const MULTI: bool> SimFlash<WRITE, ERASE, MULTI> {
    /// One program operation (within a page on paged parts).
    /// Bounds and alignment are checked by the caller.
    fn program_op(&mut self, offset: u32, bytes: &[u8]) -> Result<(), SimFlashError> {
        let start = offset as usize;
        let end = start + bytes.len();
        let tear = self.before_mutation()?;
        let count = match tear {
            Some(CutMode::TearPrefix) => (self.random() as usize) % (bytes.len() + 1),
            _ => bytes.len(),
        };
        for (i, &byte) in bytes.iter().enumerate().take(count) {
            let old = self.data[start + i];
            let new = self.program(old, byte);
            self.data[start + i] = if tear == Some(CutMode::TearBits) {
                let changing = old ^ new;
                let keep = (self.random() as u8) & changing;
                new ^ keep
            } else {
                new
            };
        }
        self.programmed[start / WRITE..end / WRITE].fill(true);
        self.stats.writes += 1;
        self.stats.bytes_written += bytes.len() as u64;
        self.persist(start, end)?;
        if tear.is_some() {
            self.powered = false;
            return Err(SimFlashError::PowerLoss);
        }
        Ok(())
    }
}

impl<const WRITE: usize, const ERASE: usize> MultiwriteNorFlash for SimFlash<WRITE, ERASE, true> {}

/// The async traits (sequential-storage's), over the same blocking model: a simulated part
/// never waits.
mod asynchronous {
    use embedded_storage_async::nor_flash::{MultiwriteNorFlash, NorFlash, ReadNorFlash};

    use super::{SimFlash, SimFlashError};

    impl<const WRITE: usize, const ERASE: usize, const MULTI: bool> ReadNorFlash for SimFlash<WRITE, ERASE, MULTI> {
        const READ_SIZE: usize = 1;

        async fn read(&mut self, offset: u32, bytes: &mut [u8]) -> Result<(), SimFlashError> {
            embedded_storage::nor_flash::ReadNorFlash::read(self, offset, bytes)
        }

        fn capacity(&self) -> usize {
            embedded_storage::nor_flash::ReadNorFlash::capacity(self)
        }
    }

    impl<const WRITE: usize, const ERASE: usize, const MULTI: bool> NorFlash for SimFlash<WRITE, ERASE, MULTI> {
        const WRITE_SIZE: usize = WRITE;
        const ERASE_SIZE: usize = ERASE;

        async fn erase(&mut self, from: u32, to: u32) -> Result<(), SimFlashError> {
            embedded_storage::nor_flash::NorFlash::erase(self, from, to)
        }

        async fn write(&mut self, offset: u32, bytes: &[u8]) -> Result<(), SimFlashError> {
            embedded_storage::nor_flash::NorFlash::write(self, offset, bytes)
        }
    }

    impl<const WRITE: usize, const ERASE: usize> MultiwriteNorFlash for SimFlash<WRITE, ERASE, true> {}
}
