//! mota-agent on the STM32's internal flash, through embassy-stm32's blocking flash
//! regions cut into slots and a state region by embassy-embedded-hal's
//! `BlockingPartition`. The bins (one per chip) hold the layouts; this is what they
//! share.
#![no_std]

use embedded_storage::nor_flash::{ErrorType, MultiwriteNorFlash, NorFlash, ReadNorFlash};

/// A flash whose program unit may be programmed again before an erase (only clearing
/// bits), which embassy-stm32 does not declare for any chip. True of the STM32F2/F4/F7
/// main flash (no ECC: a word may be programmed again with bits only cleared, as ST's
/// EEPROM emulation does); false of every part with flash ECC (H7, L4, G4, U5, ...),
/// whose state region goes in a journal instead.
pub struct Multiwrite<T>(pub T);

impl<T: ErrorType> ErrorType for Multiwrite<T> {
    type Error = T::Error;
}

impl<T: ReadNorFlash> ReadNorFlash for Multiwrite<T> {
    const READ_SIZE: usize = T::READ_SIZE;

    fn read(&mut self, offset: u32, bytes: &mut [u8]) -> Result<(), Self::Error> {
        self.0.read(offset, bytes)
    }

    fn capacity(&self) -> usize {
        self.0.capacity()
    }
}

impl<T: NorFlash> NorFlash for Multiwrite<T> {
    const WRITE_SIZE: usize = T::WRITE_SIZE;
    const ERASE_SIZE: usize = T::ERASE_SIZE;

    fn write(&mut self, offset: u32, bytes: &[u8]) -> Result<(), Self::Error> {
        self.0.write(offset, bytes)
    }

    fn erase(&mut self, from: u32, to: u32) -> Result<(), Self::Error> {
        self.0.erase(from, to)
    }
}

impl<T: NorFlash> MultiwriteNorFlash for Multiwrite<T> {}

/// Resets the chip.
pub fn reset() -> ! {
    cortex_m::peripheral::SCB::sys_reset()
}
