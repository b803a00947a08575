//! Regions of one part: a device lays out slot A, slot B and the agent's state region
//! on the same chip, so a cut counted in that chip's operations can land in any of them.
//! Each region is a `NorFlash` of its own (offsets relative to its start), sharing the
//! part through `Rc<RefCell<_>>` as a single-threaded simulated device does.

use std::cell::RefCell;
use std::rc::Rc;

use embedded_storage::nor_flash::{ErrorType, MultiwriteNorFlash, NorFlash, NorFlashErrorKind, ReadNorFlash};

/// A window `[start, start + len)` of a shared part.
pub struct Region<F> {
    part: Rc<RefCell<F>>,
    start: u32,
    len: u32,
}

impl<F> Region<F> {
    /// The window `[start, start + len)` of `part`; the caller keeps regions disjoint and
    /// on sector boundaries.
    pub fn new(part: &Rc<RefCell<F>>, start: u32, len: u32) -> Self {
        Self { part: Rc::clone(part), start, len }
    }

    /// The part this region belongs to.
    pub fn part(&self) -> &Rc<RefCell<F>> {
        &self.part
    }

    /// Where the region starts in the part.
    pub fn start(&self) -> u32 {
        self.start
    }

    fn span<E>(&self, offset: u32, len: usize) -> Result<u32, RegionError<E>> {
        let end = u64::from(offset) + len as u64;
        if end > u64::from(self.len) {
            return Err(RegionError::OutOfBounds);
        }
        Ok(self.start + offset)
    }
}

/// A region error: outside the window, or the part's own error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RegionError<E> {
    /// Outside the region.
    OutOfBounds,
    /// The part failed.
    Part(E),
}

impl<E: embedded_storage::nor_flash::NorFlashError> embedded_storage::nor_flash::NorFlashError for RegionError<E> {
    fn kind(&self) -> NorFlashErrorKind {
        match self {
            Self::OutOfBounds => NorFlashErrorKind::OutOfBounds,
            Self::Part(e) => e.kind(),
        }
    }
}

impl<F: ErrorType> ErrorType for Region<F> {
    type Error = RegionError<F::Error>;
}

impl<F: ReadNorFlash> ReadNorFlash for Region<F> {
    const READ_SIZE: usize = F::READ_SIZE;

    fn read(&mut self, offset: u32, bytes: &mut [u8]) -> Result<(), Self::Error> {
        let at = self.span(offset, bytes.len())?;
        self.part.borrow_mut().read(at, bytes).map_err(RegionError::Part)
    }

    fn capacity(&self) -> usize {
        self.len as usize
    }
}

impl<F: NorFlash> NorFlash for Region<F> {
    const WRITE_SIZE: usize = F::WRITE_SIZE;
    const ERASE_SIZE: usize = F::ERASE_SIZE;

    fn erase(&mut self, from: u32, to: u32) -> Result<(), Self::Error> {
        if from > to {
            return Err(RegionError::OutOfBounds);
        }
        let at = self.span(from, (to - from) as usize)?;
        self.part.borrow_mut().erase(at, at + (to - from)).map_err(RegionError::Part)
    }

    fn write(&mut self, offset: u32, bytes: &[u8]) -> Result<(), Self::Error> {
        let at = self.span(offset, bytes.len())?;
        self.part.borrow_mut().write(at, bytes).map_err(RegionError::Part)
    }
}

impl<F: MultiwriteNorFlash> MultiwriteNorFlash for Region<F> {}
