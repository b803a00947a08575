//! The ARMv7E-M DSP instructions the DSP kernels use, and their definitions in portable
//! Rust.
//!
//! On a DSP core (`cfg(mota_dsp)`) each function is one instruction in inline `asm!`: this
//! is the only module of the runtime allowed `unsafe`. Everywhere else the same function is
//! the portable definition below, so the DSP kernels run (and are tested against the
//! portable kernels) on the host too. `mota-firmware`'s `dsp-check` runs both on a
//! Cortex-M4 under QEMU and compares them bit for bit.
//!
//! Halfword lanes: `lo` is bits 0..16, `hi` bits 16..32. All arithmetic wraps, as the
//! instructions do (SMLAD and SMLABB only set the Q flag on overflow, which nothing reads).
#![allow(unsafe_code)]

/// Portable definitions, on every target (the reference for the instructions).
pub mod portable {
    fn lo(x: u32) -> i32 {
        i32::from(x as u16 as i16)
    }

    fn hi(x: u32) -> i32 {
        i32::from((x >> 16) as u16 as i16)
    }

    fn pack(lo: i32, hi: i32) -> u32 {
        u32::from(lo as u16) | (u32::from(hi as u16) << 16)
    }

    /// `SXTB16`: bytes 0 and 2, sign-extended into the two halfwords.
    pub fn sxtb16(x: u32) -> u32 {
        pack(i32::from(x as u8 as i8), i32::from((x >> 16) as u8 as i8))
    }

    /// `SXTB16 …, ROR #8`: bytes 1 and 3, sign-extended into the two halfwords.
    pub fn sxtb16_ror8(x: u32) -> u32 {
        sxtb16(x.rotate_right(8))
    }

    /// `SXTAB16`: `a`'s halfwords plus bytes 0 and 2 of `x`, sign-extended.
    pub fn sxtab16(a: u32, x: u32) -> u32 {
        let b = sxtb16(x);
        pack(lo(a).wrapping_add(lo(b)), hi(a).wrapping_add(hi(b)))
    }

    /// `SXTAB16 …, ROR #8`: `a`'s halfwords plus bytes 1 and 3 of `x`, sign-extended.
    pub fn sxtab16_ror8(a: u32, x: u32) -> u32 {
        sxtab16(a, x.rotate_right(8))
    }

    /// `SMLAD`: `acc + lo(a)·lo(b) + hi(a)·hi(b)`.
    pub fn smlad(a: u32, b: u32, acc: i32) -> i32 {
        acc.wrapping_add(lo(a) * lo(b)).wrapping_add(hi(a) * hi(b))
    }

    /// `SMLABB`: `acc + lo(a)·lo(b)`.
    pub fn smlabb(a: u32, b: u32, acc: i32) -> i32 {
        acc.wrapping_add(lo(a) * lo(b))
    }

    /// `SMLATT`: `acc + hi(a)·hi(b)`.
    pub fn smlatt(a: u32, b: u32, acc: i32) -> i32 {
        acc.wrapping_add(hi(a) * hi(b))
    }

    /// [`super::conv_2x2`] once its lengths are checked.
    pub fn conv_2x2<const DX: usize, const DW: usize>(x: &[u8], w: &[u8], run: usize, mut acc: [i32; 4]) -> [i32; 4] {
        let word = |b: &[u8], at: usize| b.get(at..at + 4).map_or(0, |b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]));
        for k in (0..run).step_by(4) {
            let (xa, xb, wa, wb) = (word(x, k), word(x, DX + k), word(w, k), word(w, DW + k));
            for (i, (x, w)) in [(xa, wa), (xa, wb), (xb, wa), (xb, wb)].into_iter().enumerate() {
                acc[i] = smlad(sxtb16_ror8(x), sxtb16_ror8(w), smlad(sxtb16(x), sxtb16(w), acc[i]));
            }
        }
        acc
    }

    /// [`super::depthwise_4x9`] once its lengths are checked (shorter slices read as
    /// zeros).
    pub fn depthwise_4x9(x: &[u8], w: &[u8], stride: usize, row: usize, mut acc: [i32; 4]) -> [i32; 4] {
        let word = |b: &[u8], at: usize| b.get(at..at + 4).map_or(0, |b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]));
        for r in 0..3 {
            for t in 0..3 {
                let (x, w) = (word(x, r * row + t * stride), word(w, (3 * r + t) * stride));
                let (xl, xh, wl, wh) = (sxtb16(x), sxtb16_ror8(x), sxtb16(w), sxtb16_ror8(w));
                acc = [smlabb(xl, wl, acc[0]), smlabb(xh, wh, acc[1]), smlatt(xl, wl, acc[2]), smlatt(xh, wh, acc[3])];
            }
        }
        acc
    }

    /// [`super::depthwise_4x3`] once its lengths are checked (shorter slices read as
    /// zeros).
    pub fn depthwise_4x3(x: &[u8], w: &[u8], stride: usize, offset: u32, mut acc: [i32; 4]) -> [i32; 4] {
        let word = |b: &[u8], at: usize| b.get(at..at + 4).map_or(0, |b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]));
        for t in 0..3 {
            let (x, w) = (word(x, t * stride), word(w, t * stride));
            let (xl, xh, wl, wh) = (sxtab16(offset, x), sxtab16_ror8(offset, x), sxtb16(w), sxtb16_ror8(w));
            acc = [smlabb(xl, wl, acc[0]), smlabb(xh, wh, acc[1]), smlatt(xl, wl, acc[2]), smlatt(xh, wh, acc[3])];
        }
        acc
    }
}

#[cfg(not(mota_dsp))]
pub use portable::{smlabb, smlad, smlatt, sxtab16, sxtab16_ror8, sxtb16, sxtb16_ror8};

#[cfg(mota_dsp)]
pub use cortex_m::{smlabb, smlad, smlatt, sxtab16, sxtab16_ror8, sxtb16, sxtb16_ror8};

/// A 2 × 2 block of a convolution over runs of `run` bytes (a positive multiple of 4):
/// the second pixel's run starts `DX` bytes after the first's in `x`, the second output
/// channel's weights `DW` bytes after the first's in `w`, and `acc` gains
/// `[x0·w0, x0·w1, x1·w0, x1·w1]` (raw products: the caller adds the input offset times
/// the weights' sum). `None` when a slice is too short or `run` is not a positive
/// multiple of 4.
pub fn conv_2x2<const DX: usize, const DW: usize>(x: &[u8], w: &[u8], run: usize, acc: [i32; 4]) -> Option<[i32; 4]> {
    if run == 0 || !run.is_multiple_of(4) || x.len() < DX + run || w.len() < DW + run {
        return None;
    }
    #[cfg(mota_dsp)]
    return Some(cortex_m::conv_2x2::<DX, DW>(x, w, run, acc));
    #[cfg(not(mota_dsp))]
    return Some(portable::conv_2x2::<DX, DW>(x, w, run, acc));
}

/// A whole 3×3 depthwise window for four channels, without the input offset (the caller
/// adds `offset · Σw`): adds `w[(3·r + t)·stride + k] · x[r·row + t·stride + k]` for rows
/// `r` and taps `t` in 0..3 to `acc[k]`. `None` when a slice is too short.
#[inline(always)]
pub fn depthwise_4x9(x: &[u8], w: &[u8], stride: usize, row: usize, acc: [i32; 4]) -> Option<[i32; 4]> {
    let x_reach = row.checked_mul(2)?.checked_add(stride.checked_mul(2)?)?.checked_add(4)?;
    let w_reach = stride.checked_mul(8)?.checked_add(4)?;
    if x.len() < x_reach || w.len() < w_reach {
        return None;
    }
    #[cfg(mota_dsp)]
    return Some(cortex_m::depthwise_4x9(x, w, stride, row, acc));
    #[cfg(not(mota_dsp))]
    return Some(portable::depthwise_4x9(x, w, stride, row, acc));
}

/// Three depthwise taps `stride` bytes apart for four channels: adds
/// `w[t·stride + k] · (x[t·stride + k] + offset)` (offset in both lanes of `offset`) for
/// `t` in 0..3 to `acc[k]`. `None` when a slice is shorter than `2·stride + 4`.
#[inline(always)]
pub fn depthwise_4x3(x: &[u8], w: &[u8], stride: usize, offset: u32, acc: [i32; 4]) -> Option<[i32; 4]> {
    let reach = stride.checked_mul(2)?.checked_add(4)?;
    if x.len() < reach || w.len() < reach {
        return None;
    }
    #[cfg(mota_dsp)]
    return Some(cortex_m::depthwise_4x3(x, w, stride, offset, acc));
    #[cfg(not(mota_dsp))]
    return Some(portable::depthwise_4x3(x, w, stride, offset, acc));
}

/// The instructions themselves.
#[cfg(mota_dsp)]
mod cortex_m {
    use core::arch::asm;

    /// `SXTB16`.
    #[inline(always)]
    pub fn sxtb16(x: u32) -> u32 {
        let out: u32;
        // SAFETY: one register-to-register DSP instruction; no memory, stack or flags.
        unsafe { asm!("sxtb16 {0}, {1}", out(reg) out, in(reg) x, options(pure, nomem, nostack, preserves_flags)) };
        out
    }

    /// `SXTB16 …, ROR #8`.
    #[inline(always)]
    pub fn sxtb16_ror8(x: u32) -> u32 {
        let out: u32;
        // SAFETY: one register-to-register DSP instruction; no memory, stack or flags.
        unsafe {
            asm!("sxtb16 {0}, {1}, ror #8", out(reg) out, in(reg) x, options(pure, nomem, nostack, preserves_flags))
        };
        out
    }

    /// `SXTAB16`.
    #[inline(always)]
    pub fn sxtab16(a: u32, x: u32) -> u32 {
        let out: u32;
        // SAFETY: one register-to-register DSP instruction; no memory, stack or flags.
        unsafe {
            asm!("sxtab16 {0}, {1}, {2}", out(reg) out, in(reg) a, in(reg) x, options(pure, nomem, nostack, preserves_flags))
        };
        out
    }

    /// `SXTAB16 …, ROR #8`.
    #[inline(always)]
    pub fn sxtab16_ror8(a: u32, x: u32) -> u32 {
        let out: u32;
        // SAFETY: one register-to-register DSP instruction; no memory, stack or flags.
        unsafe {
            asm!(
                "sxtab16 {0}, {1}, {2}, ror #8",
                out(reg) out, in(reg) a, in(reg) x,
                options(pure, nomem, nostack, preserves_flags)
            )
        };
        out
    }

    /// `SMLAD` (sets Q on overflow, which nothing reads: `preserves_flags` covers NZCV only).
    #[inline(always)]
    pub fn smlad(a: u32, b: u32, acc: i32) -> i32 {
        let out: i32;
        // SAFETY: one register-to-register DSP instruction; no memory or stack.
        unsafe {
            asm!(
                "smlad {0}, {1}, {2}, {3}",
                out(reg) out, in(reg) a, in(reg) b, in(reg) acc,
                options(pure, nomem, nostack, preserves_flags)
            )
        };
        out
    }

    /// `SMLABB`.
    #[inline(always)]
    pub fn smlabb(a: u32, b: u32, acc: i32) -> i32 {
        let out: i32;
        // SAFETY: one register-to-register DSP instruction; no memory or stack.
        unsafe {
            asm!(
                "smlabb {0}, {1}, {2}, {3}",
                out(reg) out, in(reg) a, in(reg) b, in(reg) acc,
                options(pure, nomem, nostack, preserves_flags)
            )
        };
        out
    }

    /// The loop of [`super::conv_2x2`]: the second pixel and the second filter are `DX`
    /// and `DW` bytes on (immediate offsets) and the input offset is left to the caller,
    /// so the two pointers, the counter, the four accumulators, the four widened weight
    /// halves and one input register fill the twelve registers `asm!` may use, with
    /// nothing spilled. Each input word is loaded
    /// twice (once per half) instead of being kept.
    #[inline(always)]
    pub fn conv_2x2<const DX: usize, const DW: usize>(x: &[u8], w: &[u8], run: usize, acc: [i32; 4]) -> [i32; 4] {
        let [mut a00, mut a01, mut a10, mut a11] = acc;
        // SAFETY: the caller checked that `run` is a positive multiple of 4, that `x` holds
        // `DX + run` bytes and `w` `DW + run`; the loop runs `run / 4` times and reads the
        // words at `k` and `DX + k` of `x`, `k` and `DW + k` of `w`, for `k < run`,
        // advancing each pointer by 4 per turn.
        // Unaligned word loads are allowed on ARMv7-M. Only registers and the two slices
        // are touched.
        unsafe {
            asm!(
                "2:",
                "ldr {wbh}, [{wp}, #{dw}]",
                "ldr {wah}, [{wp}], #4",
                "sxtb16 {wal}, {wah}",
                "sxtb16 {wah}, {wah}, ror #8",
                "sxtb16 {wbl}, {wbh}",
                "sxtb16 {wbh}, {wbh}, ror #8",
                "ldr {t}, [{xp}]",
                "sxtb16 {t}, {t}",
                "smlad {a00}, {t}, {wal}, {a00}",
                "smlad {a01}, {t}, {wbl}, {a01}",
                "ldr {t}, [{xp}]",
                "sxtb16 {t}, {t}, ror #8",
                "smlad {a00}, {t}, {wah}, {a00}",
                "smlad {a01}, {t}, {wbh}, {a01}",
                "ldr {t}, [{xp}, #{dx}]",
                "sxtb16 {t}, {t}",
                "smlad {a10}, {t}, {wal}, {a10}",
                "smlad {a11}, {t}, {wbl}, {a11}",
                "ldr {t}, [{xp}, #{dx}]",
                "adds {xp}, #4",
                "sxtb16 {t}, {t}, ror #8",
                "smlad {a10}, {t}, {wah}, {a10}",
                "smlad {a11}, {t}, {wbh}, {a11}",
                "subs {n}, #1",
                "bne 2b",
                dx = const DX,
                dw = const DW,
                xp = inout(reg) x.as_ptr() => _,
                wp = inout(reg) w.as_ptr() => _,
                n = inout(reg) run / 4 => _,
                a00 = inout(reg) a00,
                a01 = inout(reg) a01,
                a10 = inout(reg) a10,
                a11 = inout(reg) a11,
                wal = out(reg) _,
                wah = out(reg) _,
                wbl = out(reg) _,
                wbh = out(reg) _,
                t = out(reg) _,
                options(pure, readonly, nostack)
            )
        };
        [a00, a01, a10, a11]
    }

    /// The nine taps of [`super::depthwise_4x9`] in one block: each row's taps at
    /// `[p]`, `[p, stride]`, `[p, stride, lsl #1]`, the pointers moved on by a row
    /// between rows, every operand in one of the twelve registers.
    #[inline(always)]
    pub fn depthwise_4x9(x: &[u8], w: &[u8], stride: usize, row: usize, acc: [i32; 4]) -> [i32; 4] {
        let [mut a0, mut a1, mut a2, mut a3] = acc;
        // SAFETY: the caller checked that `x` holds `2·row + 2·stride + 4` bytes and `w`
        // `8·stride + 4`, the furthest words the block reads (row 2, tap 2); unaligned
        // word loads are allowed on ARMv7-M. Only registers and the two slices are
        // touched; the pointer registers are scratch copies.
        unsafe {
            asm!(
                "ldr {xv}, [{xp}]",
                "ldr {wv}, [{wp}]",
                "sxtb16 {t}, {xv}",
                "sxtb16 {u}, {wv}",
                "smlabb {a0}, {t}, {u}, {a0}",
                "smlatt {a2}, {t}, {u}, {a2}",
                "sxtb16 {t}, {xv}, ror #8",
                "sxtb16 {u}, {wv}, ror #8",
                "smlabb {a1}, {t}, {u}, {a1}",
                "smlatt {a3}, {t}, {u}, {a3}",
                "ldr {xv}, [{xp}, {st}]",
                "ldr {wv}, [{wp}, {st}]",
                "sxtb16 {t}, {xv}",
                "sxtb16 {u}, {wv}",
                "smlabb {a0}, {t}, {u}, {a0}",
                "smlatt {a2}, {t}, {u}, {a2}",
                "sxtb16 {t}, {xv}, ror #8",
                "sxtb16 {u}, {wv}, ror #8",
                "smlabb {a1}, {t}, {u}, {a1}",
                "smlatt {a3}, {t}, {u}, {a3}",
                "ldr {xv}, [{xp}, {st}, lsl #1]",
                "ldr {wv}, [{wp}, {st}, lsl #1]",
                "sxtb16 {t}, {xv}",
                "sxtb16 {u}, {wv}",
                "smlabb {a0}, {t}, {u}, {a0}",
                "smlatt {a2}, {t}, {u}, {a2}",
                "sxtb16 {t}, {xv}, ror #8",
                "sxtb16 {u}, {wv}, ror #8",
                "smlabb {a1}, {t}, {u}, {a1}",
                "smlatt {a3}, {t}, {u}, {a3}",
                "add {xp}, {xp}, {row}",
                "add {wp}, {wp}, {st}, lsl #1",
                "add {wp}, {wp}, {st}",
                "ldr {xv}, [{xp}]",
                "ldr {wv}, [{wp}]",
                "sxtb16 {t}, {xv}",
                "sxtb16 {u}, {wv}",
                "smlabb {a0}, {t}, {u}, {a0}",
                "smlatt {a2}, {t}, {u}, {a2}",
                "sxtb16 {t}, {xv}, ror #8",
                "sxtb16 {u}, {wv}, ror #8",
                "smlabb {a1}, {t}, {u}, {a1}",
                "smlatt {a3}, {t}, {u}, {a3}",
                "ldr {xv}, [{xp}, {st}]",
                "ldr {wv}, [{wp}, {st}]",
                "sxtb16 {t}, {xv}",
                "sxtb16 {u}, {wv}",
                "smlabb {a0}, {t}, {u}, {a0}",
                "smlatt {a2}, {t}, {u}, {a2}",
                "sxtb16 {t}, {xv}, ror #8",
                "sxtb16 {u}, {wv}, ror #8",
                "smlabb {a1}, {t}, {u}, {a1}",
                "smlatt {a3}, {t}, {u}, {a3}",
                "ldr {xv}, [{xp}, {st}, lsl #1]",
                "ldr {wv}, [{wp}, {st}, lsl #1]",
                "sxtb16 {t}, {xv}",
                "sxtb16 {u}, {wv}",
                "smlabb {a0}, {t}, {u}, {a0}",
                "smlatt {a2}, {t}, {u}, {a2}",
                "sxtb16 {t}, {xv}, ror #8",
                "sxtb16 {u}, {wv}, ror #8",
                "smlabb {a1}, {t}, {u}, {a1}",
                "smlatt {a3}, {t}, {u}, {a3}",
                "add {xp}, {xp}, {row}",
                "add {wp}, {wp}, {st}, lsl #1",
                "add {wp}, {wp}, {st}",
                "ldr {xv}, [{xp}]",
                "ldr {wv}, [{wp}]",
                "sxtb16 {t}, {xv}",
                "sxtb16 {u}, {wv}",
                "smlabb {a0}, {t}, {u}, {a0}",
                "smlatt {a2}, {t}, {u}, {a2}",
                "sxtb16 {t}, {xv}, ror #8",
                "sxtb16 {u}, {wv}, ror #8",
                "smlabb {a1}, {t}, {u}, {a1}",
                "smlatt {a3}, {t}, {u}, {a3}",
                "ldr {xv}, [{xp}, {st}]",
                "ldr {wv}, [{wp}, {st}]",
                "sxtb16 {t}, {xv}",
                "sxtb16 {u}, {wv}",
                "smlabb {a0}, {t}, {u}, {a0}",
                "smlatt {a2}, {t}, {u}, {a2}",
                "sxtb16 {t}, {xv}, ror #8",
                "sxtb16 {u}, {wv}, ror #8",
                "smlabb {a1}, {t}, {u}, {a1}",
                "smlatt {a3}, {t}, {u}, {a3}",
                "ldr {xv}, [{xp}, {st}, lsl #1]",
                "ldr {wv}, [{wp}, {st}, lsl #1]",
                "sxtb16 {t}, {xv}",
                "sxtb16 {u}, {wv}",
                "smlabb {a0}, {t}, {u}, {a0}",
                "smlatt {a2}, {t}, {u}, {a2}",
                "sxtb16 {t}, {xv}, ror #8",
                "sxtb16 {u}, {wv}, ror #8",
                "smlabb {a1}, {t}, {u}, {a1}",
                "smlatt {a3}, {t}, {u}, {a3}",
                xp = inout(reg) x.as_ptr() => _,
                wp = inout(reg) w.as_ptr() => _,
                st = in(reg) stride,
                row = in(reg) row,
                a0 = inout(reg) a0,
                a1 = inout(reg) a1,
                a2 = inout(reg) a2,
                a3 = inout(reg) a3,
                xv = out(reg) _,
                wv = out(reg) _,
                t = out(reg) _,
                u = out(reg) _,
                options(pure, readonly, nostack, preserves_flags)
            )
        };
        [a0, a1, a2, a3]
    }

    /// The three taps of [`super::depthwise_4x3`] in one block, every operand in a
    /// register: the taps are loaded at `[x]`, `[x, stride]` and `[x, stride, lsl #1]`.
    #[inline(always)]
    pub fn depthwise_4x3(x: &[u8], w: &[u8], stride: usize, offset: u32, acc: [i32; 4]) -> [i32; 4] {
        let [mut a0, mut a1, mut a2, mut a3] = acc;
        // SAFETY: the caller checked that `x` and `w` hold at least `2·stride + 4` bytes,
        // so the six word loads stay inside them; unaligned word loads are allowed on
        // ARMv7-M. Only registers and the two slices are touched.
        unsafe {
            asm!(
                "ldr {xv}, [{xp}]",
                "ldr {wv}, [{wp}]",
                "sxtab16 {t}, {off}, {xv}",
                "sxtb16 {u}, {wv}",
                "smlabb {a0}, {t}, {u}, {a0}",
                "smlatt {a2}, {t}, {u}, {a2}",
                "sxtab16 {t}, {off}, {xv}, ror #8",
                "sxtb16 {u}, {wv}, ror #8",
                "smlabb {a1}, {t}, {u}, {a1}",
                "smlatt {a3}, {t}, {u}, {a3}",
                "ldr {xv}, [{xp}, {st}]",
                "ldr {wv}, [{wp}, {st}]",
                "sxtab16 {t}, {off}, {xv}",
                "sxtb16 {u}, {wv}",
                "smlabb {a0}, {t}, {u}, {a0}",
                "smlatt {a2}, {t}, {u}, {a2}",
                "sxtab16 {t}, {off}, {xv}, ror #8",
                "sxtb16 {u}, {wv}, ror #8",
                "smlabb {a1}, {t}, {u}, {a1}",
                "smlatt {a3}, {t}, {u}, {a3}",
                "ldr {xv}, [{xp}, {st}, lsl #1]",
                "ldr {wv}, [{wp}, {st}, lsl #1]",
                "sxtab16 {t}, {off}, {xv}",
                "sxtb16 {u}, {wv}",
                "smlabb {a0}, {t}, {u}, {a0}",
                "smlatt {a2}, {t}, {u}, {a2}",
                "sxtab16 {t}, {off}, {xv}, ror #8",
                "sxtb16 {u}, {wv}, ror #8",
                "smlabb {a1}, {t}, {u}, {a1}",
                "smlatt {a3}, {t}, {u}, {a3}",
                xp = in(reg) x.as_ptr(),
                wp = in(reg) w.as_ptr(),
                st = in(reg) stride,
                off = in(reg) offset,
                a0 = inout(reg) a0,
                a1 = inout(reg) a1,
                a2 = inout(reg) a2,
                a3 = inout(reg) a3,
                xv = out(reg) _,
                wv = out(reg) _,
                t = out(reg) _,
                u = out(reg) _,
                options(pure, readonly, nostack, preserves_flags)
            )
        };
        [a0, a1, a2, a3]
    }

    /// `SMLATT`.
    #[inline(always)]
    pub fn smlatt(a: u32, b: u32, acc: i32) -> i32 {
        let out: i32;
        // SAFETY: one register-to-register DSP instruction; no memory or stack.
        unsafe {
            asm!(
                "smlatt {0}, {1}, {2}, {3}",
                out(reg) out, in(reg) a, in(reg) b, in(reg) acc,
                options(pure, nomem, nostack, preserves_flags)
            )
        };
        out
    }
}
