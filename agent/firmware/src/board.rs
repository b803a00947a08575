//! The board under the networked firmware (QEMU mps2-an386): UART0 as the MQTT byte
//! stream, SysTick as the millisecond clock, and the part's contents kept in a host file
//! through semihosting, so that killing QEMU is a power cut and starting it again boots
//! from what was written.

use core::ffi::CStr;
use core::sync::atomic::{AtomicU32, Ordering};

use cortex_m::peripheral::syst::SystClkSource;
use cortex_m::peripheral::{NVIC, SYST};
use cortex_m_rt::exception;
use embedded_io::{ErrorType, Read, ReadReady, Write};
use semihosting::fs::File;
use semihosting::io::{Read as _, Seek, SeekFrom, Write as _};

/// CMSDK APB UART0 of the MPS2 boards (QEMU: the first `-serial`).
const UART0: usize = 0x4000_4000;
const DATA: usize = 0x00;
const STATE: usize = 0x04;
const CTRL: usize = 0x08;
const BAUDDIV: usize = 0x10;
const TX_FULL: u32 = 1 << 0;
const RX_FULL: u32 = 1 << 1;
const INTCLEAR: usize = 0x0C;
const TX_EN: u32 = 1 << 0;
const RX_EN: u32 = 1 << 1;
const RX_INT_EN: u32 = 1 << 3;
const RX_INT: u32 = 1 << 1;
/// UART0's receive interrupt on the MPS2 FPGA images (AN385, AN386).
const UART0_RX_IRQ: u32 = 0;

/// How long `read` keeps waiting for the next byte of a burst: QEMU hands the UART one
/// byte at a time, from its I/O thread, so returning at the first empty poll would cost
/// a whole session poll per byte.
const BURST_SPINS: u32 = 2_000;

fn reg(offset: usize) -> *mut u32 {
    (UART0 + offset) as *mut u32
}

/// UART0: the bytes of the MQTT connection (QEMU carries them to the broker over TCP).
pub struct Uart(());

impl Uart {
    /// Enables UART0's transmitter and receiver, and its receive interrupt (which only
    /// wakes the core from [`sleep`]). Call once.
    pub fn take(nvic: &mut NVIC) -> Self {
        // SAFETY: UART0's registers on this board; only this value (and the interrupt
        // handler, which only clears the interrupt) touches them.
        unsafe {
            reg(BAUDDIV).write_volatile(16);
            reg(CTRL).write_volatile(TX_EN | RX_EN | RX_INT_EN);
            // SAFETY: the handler (`DefaultHandler`) only clears the flag.
            nvic.iser[0].write(1 << UART0_RX_IRQ);
        }
        Self(())
    }

    fn state(&self) -> u32 {
        // SAFETY: as in `take`.
        unsafe { reg(STATE).read_volatile() }
    }
}

impl ErrorType for Uart {
    type Error = core::convert::Infallible;
}

impl Read for Uart {
    fn read(&mut self, buf: &mut [u8]) -> Result<usize, Self::Error> {
        let mut n = 0;
        while n < buf.len() {
            let mut spins = 0;
            while self.state() & RX_FULL == 0 {
                // The first byte is waited for (embedded-io's contract); later ones
                // only for a burst's gap.
                if n > 0 && spins == BURST_SPINS {
                    return Ok(n);
                }
                spins += 1;
            }
            // SAFETY: as in `take`.
            let byte = unsafe { reg(DATA).read_volatile() };
            if let Some(b) = buf.get_mut(n) {
                *b = byte as u8;
            }
            n += 1;
        }
        Ok(n)
    }
}

impl ReadReady for Uart {
    fn read_ready(&mut self) -> Result<bool, Self::Error> {
        Ok(self.state() & RX_FULL != 0)
    }
}

impl Write for Uart {
    fn write(&mut self, buf: &[u8]) -> Result<usize, Self::Error> {
        for &b in buf {
            while self.state() & TX_FULL != 0 {}
            // SAFETY: as in `take`.
            unsafe { reg(DATA).write_volatile(u32::from(b)) };
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> Result<(), Self::Error> {
        Ok(())
    }
}

/// Waits for the next interrupt (a received byte, or the millisecond tick) unless a
/// byte is already waiting: the main loop's idle, so an idle QEMU device costs the host
/// next to nothing.
pub fn sleep() {
    // SAFETY: as in `Uart::take` (a read of the status register).
    if unsafe { reg(STATE).read_volatile() } & RX_FULL == 0 {
        cortex_m::asm::wfi();
    }
}

#[exception]
unsafe fn DefaultHandler(_irq: i16) {
    // SAFETY: as in `Uart::take`: clears UART0's receive interrupt, the one enabled.
    unsafe { reg(INTCLEAR).write_volatile(RX_INT) };
}

static MILLIS: AtomicU32 = AtomicU32::new(0);

/// Core clock cycles per millisecond (the board's CPU clock is 25 MHz).
const CYCLES_PER_MS: u32 = 25_000;

/// Starts SysTick at 1 kHz.
pub fn start_clock(mut syst: SYST) {
    syst.set_clock_source(SystClkSource::Core);
    syst.set_reload(CYCLES_PER_MS - 1);
    syst.clear_current();
    syst.enable_interrupt();
    syst.enable_counter();
}

#[exception]
fn SysTick() {
    MILLIS.fetch_add(1, Ordering::Relaxed);
}

/// Nanoseconds since boot, to SysTick's resolution (40 ns). Under QEMU's `-icount
/// shift=0` one instruction takes one nanosecond: the difference of two readings taken
/// while the core runs is the instructions executed between them.
pub fn nanos() -> u64 {
    loop {
        let ms = MILLIS.load(Ordering::SeqCst);
        let into = CYCLES_PER_MS - 1 - SYST::get_current().min(CYCLES_PER_MS - 1);
        // A wrap between the two loads (the tick ran): read again.
        if MILLIS.load(Ordering::SeqCst) == ms {
            return u64::from(ms) * 1_000_000 + u64::from(into) * (1_000_000 / u64::from(CYCLES_PER_MS));
        }
    }
}

/// Milliseconds since boot, from SysTick (wraps after 49 days, which the agent's
/// retry timers tolerate: they only compare recent times).
#[derive(Debug, Clone, Copy, Default)]
pub struct SysClock;

impl mota_agent::Clock for SysClock {
    fn now_ms(&self) -> u64 {
        u64::from(MILLIS.load(Ordering::Relaxed))
    }

    fn unix_time(&self) -> Option<u64> {
        None
    }
}

impl mota_runtime::validation::Clock for SysClock {
    fn now_us(&self) -> u64 {
        nanos() / 1000
    }
}

/// The host file behind the part: every program and erase is written through before
/// the flash operation returns.
pub struct Backing(File);

/// Why the flash file could not be used.
#[derive(Debug)]
pub struct BackingError(pub semihosting::io::Error);

impl Backing {
    /// Opens the part's file, or creates it from `fresh` (the part as it leaves the
    /// factory). Fills `image` with the part's contents.
    pub fn open(path: &CStr, image: &mut [u8], fresh: impl FnOnce(&mut [u8])) -> Result<Self, BackingError> {
        if let Ok(mut file) = File::options().read(true).write(true).open(path)
            && file.metadata().is_ok_and(|m| m.len() == image.len() as u64)
        {
            let mut at = 0;
            while at < image.len() {
                match file.read(image.get_mut(at..).unwrap_or_default()).map_err(BackingError)? {
                    0 => break,
                    n => at += n,
                }
            }
            return Ok(Self(file));
        }
        fresh(image);
        let mut file = File::create(path).map_err(BackingError)?;
        file.write_all(image).map_err(BackingError)?;
        Ok(Self(file))
    }

    /// Writes `bytes`, the part's contents at `offset`, to the file.
    pub fn store(&mut self, offset: usize, bytes: &[u8]) -> Result<(), BackingError> {
        self.0.seek(SeekFrom::Start(offset as u64)).map_err(BackingError)?;
        self.0.write_all(bytes).map_err(BackingError)
    }
}
