//! Measurement helpers shared by the check firmwares: instruction-count markers for the
//! QEMU exec trace (`scripts/count-instructions.sh`) and stack-depth measurement by
//! painting.
#![no_std]

pub mod board;
pub mod demo;
pub mod size;

/// Start of a measured region: the trace script counts instructions from here.
/// (Its body differs from [`bench_end`]'s, so the linker cannot merge the two.)
#[inline(never)]
#[unsafe(no_mangle)]
pub extern "C" fn bench_start() {
    cortex_m::asm::nop();
}

/// End of a measured region.
#[inline(never)]
#[unsafe(no_mangle)]
pub extern "C" fn bench_end() {
    cortex_m::asm::nop();
    cortex_m::asm::nop();
}

const PATTERN: u32 = 0xa5a5_a5a5;

/// Fills `depth` bytes of stack below the caller's frame with a pattern; returns the
/// current stack pointer and the bottom of the painted range.
#[inline(never)]
pub fn paint_stack(depth: usize) -> (usize, usize) {
    let sp = cortex_m::register::msp::read() as usize;
    let bottom = sp - depth;
    let mut p = bottom;
    // Leave 256 bytes of headroom for this function's own frame.
    while p < sp - 256 {
        // SAFETY: [bottom, sp - 256) is unused stack inside RAM (64 KiB; .bss is a few
        // bytes plus statics far below).
        unsafe { core::ptr::write_volatile(p as *mut u32, PATTERN) };
        p += 4;
    }
    (sp, bottom)
}

/// Bytes of the painted range overwritten since [`paint_stack`], measured from `sp`.
pub fn stack_used((sp, bottom): (usize, usize)) -> usize {
    let mut p = bottom;
    // SAFETY: reads inside the painted range only.
    while p < sp && unsafe { core::ptr::read_volatile(p as *const u32) } == PATTERN {
        p += 4;
    }
    sp - p
}
