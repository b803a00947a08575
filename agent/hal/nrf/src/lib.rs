//! mota-agent on the nRF52840's internal flash (4 KiB pages, 4-byte words, erased to
//! 0xFF, a word may be programmed twice between erases: multiwrite, so the state is a
//! map). The same layout for both builds (`memory-*.x` has the whole map); the flash
//! driver is embassy-nrf's `Nvmc` without a SoftDevice, nrf-softdevice's `Flash` under
//! one ([`SdFlash`]).
#![no_std]

#[cfg(feature = "s140")]
mod sd_flash;
#[cfg(feature = "s140")]
pub use sd_flash::SdFlash;

/// Slot 0 and slot 1 (absolute addresses: the nRF's flash starts at 0).
pub const SLOTS: [u32; 2] = [0x8_0000, 0xB_0000];
/// Bytes in a slot.
pub const SLOT_BYTES: u32 = 192 * 1024;
/// The state region.
pub const STATE: u32 = 0xE_0000;
/// Bytes in the state region: four pages.
pub const STATE_BYTES: u32 = 4 * 4096;

/// Resets the chip.
pub fn reset() -> ! {
    cortex_m::peripheral::SCB::sys_reset()
}
