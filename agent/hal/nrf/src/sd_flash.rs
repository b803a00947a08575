//! A blocking `NorFlash` over nrf-softdevice's async-only `Flash`.
//!
//! Under a SoftDevice the application may not drive the NVMC: it asks the SoftDevice
//! (`sd_flash_write`, `sd_flash_page_erase`), which schedules the operation between
//! radio events and reports its end as a SoC event. nrf-softdevice's `Flash` turns
//! that into a future, completed when `Softdevice::run()` processes the event. The
//! agent is a blocking loop, so each operation here polls that future to completion
//! with `embassy_futures::block_on`.
//!
//! That is only sound with `Softdevice::run()` on a higher-priority executor than the
//! caller (the agent in thread mode, `run()` on an `embassy_executor::InterruptExecutor`:
//! src/bin/s140.rs). Called from the executor that runs `run()` (or from an interrupt
//! at or above its priority), `block_on` spins while the event that would end it can
//! never be processed: a deadlock.

use embassy_futures::block_on;
use embedded_storage::nor_flash::{ErrorType, MultiwriteNorFlash, NorFlash, ReadNorFlash};
use embedded_storage_async::nor_flash::NorFlash as AsyncNorFlash;
use nrf_softdevice::{Flash, FlashError};

/// Bytes copied per SoftDevice write: the SoftDevice reads the words from RAM while the
/// operation is pending, and nrf-softdevice wants them 4-byte aligned, which the
/// agent's buffers need not be.
const BOUNCE: usize = 256;

#[repr(C, align(4))]
struct Words([u8; BOUNCE]);

/// The SoftDevice's flash, blocking; offsets are absolute addresses (the nRF52840's
/// flash starts at 0), so partition it like the NVMC.
pub struct SdFlash {
    flash: Flash,
    bounce: Words,
}

impl SdFlash {
    /// Wraps the flash `Flash::take(softdevice)` gave.
    pub fn new(flash: Flash) -> Self {
        Self { flash, bounce: Words([0; BOUNCE]) }
    }
}

impl ErrorType for SdFlash {
    type Error = FlashError;
}

impl ReadNorFlash for SdFlash {
    const READ_SIZE: usize = 1;

    /// Reads straight from the memory-mapped flash (no SoftDevice call).
    fn read(&mut self, offset: u32, bytes: &mut [u8]) -> Result<(), FlashError> {
        ReadNorFlash::read(&mut self.flash, offset, bytes)
    }

    fn capacity(&self) -> usize {
        ReadNorFlash::capacity(&self.flash)
    }
}

impl NorFlash for SdFlash {
    const WRITE_SIZE: usize = <Flash as AsyncNorFlash>::WRITE_SIZE;
    const ERASE_SIZE: usize = <Flash as AsyncNorFlash>::ERASE_SIZE;

    fn write(&mut self, offset: u32, bytes: &[u8]) -> Result<(), FlashError> {
        let mut at = offset;
        for chunk in bytes.chunks(BOUNCE) {
            let words = &mut self.bounce.0[..chunk.len()];
            words.copy_from_slice(chunk);
            block_on(self.flash.write(at, words))?;
            at += chunk.len() as u32;
        }
        Ok(())
    }

    fn erase(&mut self, from: u32, to: u32) -> Result<(), FlashError> {
        block_on(self.flash.erase(from, to))
    }
}

/// The nRF52840 lets a word be programmed twice between erases, bits only cleared
/// (nrf-softdevice declares its async `Flash` multiwrite for the same reason).
impl MultiwriteNorFlash for SdFlash {}
