//! The three flash regions as embedded-storage `NorFlash`, over the C callbacks.
//!
//! The geometry is a pair of Rust constants (`NorFlash::WRITE_SIZE`, `ERASE_SIZE`), so
//! it is fixed when the library is built: `build.rs` reads `MOTA_FLASH_WRITE_SIZE` and
//! `MOTA_FLASH_ERASE_SIZE` (defaults 4 and 4096). Every request is checked against the
//! region and that grid here, before a callback sees it.

use embedded_storage::nor_flash::{
    self, ErrorType, MultiwriteNorFlash, NorFlash, NorFlashError, NorFlashErrorKind, ReadNorFlash,
};

use crate::boundary;
use crate::types::Platform;

mod geometry {
    include!(concat!(env!("OUT_DIR"), "/geometry.rs"));
}

/// The program unit the library was built for.
pub const WRITE_SIZE: usize = geometry::WRITE_SIZE;
/// The erase page the library was built for.
pub const ERASE_SIZE: usize = geometry::ERASE_SIZE;

/// A failed flash operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlashError {
    /// Outside the region (refused before the callback).
    OutOfBounds,
    /// Off the program grid or erase pages (refused before the callback).
    NotAligned,
    /// The callback returned this non-zero value.
    Device(i32),
}

impl NorFlashError for FlashError {
    fn kind(&self) -> NorFlashErrorKind {
        match self {
            Self::OutOfBounds => NorFlashErrorKind::OutOfBounds,
            Self::NotAligned => NorFlashErrorKind::NotAligned,
            Self::Device(_) => NorFlashErrorKind::Other,
        }
    }
}

fn checked(kind: Result<(), NorFlashErrorKind>) -> Result<(), FlashError> {
    kind.map_err(|k| match k {
        NorFlashErrorKind::NotAligned => FlashError::NotAligned,
        _ => FlashError::OutOfBounds,
    })
}

/// One region (slot A, slot B or the state region) of the C firmware's flash.
pub struct Region {
    platform: Platform,
    id: u8,
    capacity: usize,
}

impl Region {
    /// Region `id` (a `mota_region`) of `capacity` bytes.
    pub fn new(platform: Platform, id: u8, capacity: u32) -> Self {
        Self { platform, id, capacity: capacity as usize }
    }
}

impl ErrorType for Region {
    type Error = FlashError;
}

impl ReadNorFlash for Region {
    const READ_SIZE: usize = 1;

    fn read(&mut self, offset: u32, bytes: &mut [u8]) -> Result<(), FlashError> {
        checked(nor_flash::check_read(self, offset, bytes.len()))?;
        boundary::flash_read(&self.platform, self.id, offset, bytes).map_err(FlashError::Device)
    }

    fn capacity(&self) -> usize {
        self.capacity
    }
}

impl NorFlash for Region {
    const WRITE_SIZE: usize = WRITE_SIZE;
    const ERASE_SIZE: usize = ERASE_SIZE;

    fn erase(&mut self, from: u32, to: u32) -> Result<(), FlashError> {
        checked(nor_flash::check_erase(self, from, to))?;
        boundary::flash_erase(&self.platform, self.id, from, to).map_err(FlashError::Device)
    }

    fn write(&mut self, offset: u32, bytes: &[u8]) -> Result<(), FlashError> {
        checked(nor_flash::check_write(self, offset, bytes.len()))?;
        boundary::flash_write(&self.platform, self.id, offset, bytes).map_err(FlashError::Device)
    }
}

/// The state region must be on flash where a program unit may be programmed twice (only
/// clearing bits): sequential-storage re-programs a torn unit while repairing. The C
/// integration guide says so; slots need not be (the agent never re-programs them).
impl MultiwriteNorFlash for Region {}

/// Whether the platform's regions fit the library's geometry.
pub fn geometry_fits(platform: &Platform) -> bool {
    let erase = ERASE_SIZE as u64;
    platform.flash_write_size as usize == WRITE_SIZE
        && platform.flash_erase_size as usize == ERASE_SIZE
        && platform.slot_bytes > 0
        && u64::from(platform.slot_bytes).is_multiple_of(erase)
        && u64::from(platform.state_bytes) >= 2 * erase
        && u64::from(platform.state_bytes).is_multiple_of(erase)
}
