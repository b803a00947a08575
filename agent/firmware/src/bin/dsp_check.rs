//! Checks on a Cortex-M4 (QEMU mps2-an386) that every DSP operation mota-runtime runs in
//! inline `asm!` equals its portable definition bit for bit. The host tests compare the
//! DSP kernels with the portable kernels, but on the host both are built on the portable
//! definitions: only here do the instructions themselves run. Random inputs from a fixed
//! xorshift seed (with the edge values mixed in) go through each public function of
//! `mota_runtime::kernels::dsp::intrinsics` and its `portable::` definition; slices too
//! short for a block must give `None`. Exit status 0 means no mismatch.
//! Run: `cargo run --release --bin dsp-check`.
#![no_std]
#![no_main]

use cortex_m_rt::entry;
use cortex_m_semihosting::{debug, hprintln};
use mota_runtime::kernels::dsp::intrinsics::{self as dsp, portable};
use panic_semihosting as _;

/// Random cases per scalar operation (the edge values' combinations come on top).
const SCALAR_CASES: u32 = 100_000;
/// Random cases for `depthwise_4x3` and for each `conv_2x2` instantiation.
const DEPTHWISE_CASES: u32 = 20_000;
const CONV_CASES: u32 = 2_000;
/// Bytes of each scratch buffer the block operations' slices are cut from.
const BUF: usize = 2048;
/// Room for a misaligned start (up to 3 bytes) and a longer slice (up to 8 bytes).
const SLACK: usize = 3 + 8;

/// Words at the edges of the int8 and int16 lanes.
const EDGE_WORDS: [u32; 12] = [
    0,
    1,
    0x8080_8080,
    0x7f7f_7f7f,
    0xffff_ffff,
    0x8000_8000,
    0x7fff_7fff,
    0x8000_0000,
    0x7fff_ffff,
    0x0080_0080,
    0xff7f_ff7f,
    0x0180_7f81,
];
/// Accumulators at the edges of `i32`.
const EDGE_ACCS: [i32; 6] = [0, 1, -1, i32::MIN, i32::MAX, i32::MIN + 1];

/// xorshift64 (Marsaglia), from a fixed seed: the same cases on every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 32) as u32
    }

    /// Uniform in `0..n` (0 when `n` is 0).
    fn below(&mut self, n: usize) -> usize {
        ((u64::from(self.next()) * n as u64) >> 32) as usize
    }

    /// A random word, one time in eight an edge value.
    fn word(&mut self) -> u32 {
        if self.next().is_multiple_of(8) { EDGE_WORDS[self.below(EDGE_WORDS.len())] } else { self.next() }
    }

    /// A random accumulator, one time in eight an edge value.
    fn acc(&mut self) -> i32 {
        if self.next().is_multiple_of(8) { EDGE_ACCS[self.below(EDGE_ACCS.len())] } else { self.next() as i32 }
    }

    fn accs(&mut self) -> [i32; 4] {
        [self.acc(), self.acc(), self.acc(), self.acc()]
    }

    /// Fills `buf` with [`Self::word`]s, so edge bytes (0x80, 0x7f, 0xff, 0) come in runs.
    fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(4) {
            let word = self.word().to_le_bytes();
            chunk.copy_from_slice(&word[..chunk.len()]);
        }
    }
}

/// Cases run and mismatches seen for one operation.
#[derive(Default)]
struct Tally {
    cases: u32,
    mismatches: u32,
}

impl Tally {
    fn check(&mut self, equal: bool) {
        self.cases += 1;
        self.mismatches += u32::from(!equal);
    }
}

fn unary(rng: &mut Rng, asm: fn(u32) -> u32, def: fn(u32) -> u32) -> Tally {
    let mut t = Tally::default();
    for x in EDGE_WORDS {
        t.check(asm(x) == def(x));
    }
    for _ in 0..SCALAR_CASES {
        let x = rng.word();
        t.check(asm(x) == def(x));
    }
    t
}

fn binary(rng: &mut Rng, asm: fn(u32, u32) -> u32, def: fn(u32, u32) -> u32) -> Tally {
    let mut t = Tally::default();
    for a in EDGE_WORDS {
        for x in EDGE_WORDS {
            t.check(asm(a, x) == def(a, x));
        }
    }
    for _ in 0..SCALAR_CASES {
        let (a, x) = (rng.word(), rng.word());
        t.check(asm(a, x) == def(a, x));
    }
    t
}

fn mac(rng: &mut Rng, asm: fn(u32, u32, i32) -> i32, def: fn(u32, u32, i32) -> i32) -> Tally {
    let mut t = Tally::default();
    for a in EDGE_WORDS {
        for b in EDGE_WORDS {
            for acc in EDGE_ACCS {
                t.check(asm(a, b, acc) == def(a, b, acc));
            }
        }
    }
    for _ in 0..SCALAR_CASES {
        let (a, b, acc) = (rng.word(), rng.word(), rng.acc());
        t.check(asm(a, b, acc) == def(a, b, acc));
    }
    t
}

/// `offset` in both halfword lanes.
fn lanes(offset: i16) -> u32 {
    let half = u32::from(offset as u16);
    half | (half << 16)
}

fn depthwise(rng: &mut Rng, xbuf: &mut [u8; BUF], wbuf: &mut [u8; BUF]) -> Tally {
    let mut t = Tally::default();
    for case in 0..DEPTHWISE_CASES {
        let stride = 4 + rng.below(61);
        let need = 2 * stride + 4;
        // Exactly the needed length every other case, else up to 8 bytes more.
        let extra = |rng: &mut Rng| if case % 2 == 0 { 0 } else { rng.below(9) };
        let (xl, wl) = (need + extra(rng), need + extra(rng));
        let (xs, ws) = (rng.below(4), rng.below(4));
        let (Some(x), Some(w)) = (xbuf.get_mut(xs..xs + xl), wbuf.get_mut(ws..ws + wl)) else {
            t.check(false);
            continue;
        };
        rng.fill(x);
        rng.fill(w);
        // The kernels' offsets (-zero point, in both lanes) and any word.
        let offset = if case % 4 < 2 { lanes(rng.below(256) as i16 - 127) } else { rng.word() };
        let acc = rng.accs();
        let (x, w) = (&*x, &*w);
        t.check(
            dsp::depthwise_4x3(x, w, stride, offset, acc) == Some(portable::depthwise_4x3(x, w, stride, offset, acc)),
        );
    }
    // Too short by one byte (either slice or both), and strides whose reach overflows.
    for _ in 0..100 {
        let stride = 4 + rng.below(61);
        let need = 2 * stride + 4;
        let (x, w) = (&xbuf[..need], &wbuf[..need]);
        let (offset, acc) = (rng.word(), rng.accs());
        for (x, w) in [(&x[..need - 1], w), (x, &w[..need - 1]), (&x[..need - 1], &w[..need - 1])] {
            t.check(dsp::depthwise_4x3(x, w, stride, offset, acc).is_none());
        }
    }
    for stride in [BUF, usize::MAX / 2 - 1, usize::MAX / 2, usize::MAX / 2 + 1, usize::MAX] {
        t.check(dsp::depthwise_4x3(xbuf, wbuf, stride, 0, [0; 4]).is_none());
    }
    t
}

/// The whole-window depthwise block: random channel strides and row lengths, slices of
/// exactly the reach or a little more, misaligned; one byte short gives `None`.
fn depthwise_window(rng: &mut Rng, xbuf: &mut [u8; BUF], wbuf: &mut [u8; BUF]) -> Tally {
    let mut t = Tally::default();
    for case in 0..DEPTHWISE_CASES {
        let stride = 4 + rng.below(61);
        let row = 3 * stride + rng.below(4 * stride);
        let (x_need, w_need) = (2 * row + 2 * stride + 4, 8 * stride + 4);
        let extra = |rng: &mut Rng| if case % 2 == 0 { 0 } else { rng.below(9) };
        let (xl, wl) = (x_need + extra(rng), w_need + extra(rng));
        let (xs, ws) = (rng.below(4), rng.below(4));
        let (Some(x), Some(w)) = (xbuf.get_mut(xs..xs + xl), wbuf.get_mut(ws..ws + wl)) else {
            t.check(false);
            continue;
        };
        rng.fill(x);
        rng.fill(w);
        let acc = rng.accs();
        let (x, w) = (&*x, &*w);
        t.check(dsp::depthwise_4x9(x, w, stride, row, acc) == Some(portable::depthwise_4x9(x, w, stride, row, acc)));
        t.check(dsp::depthwise_4x9(&x[..x_need - 1], w, stride, row, acc).is_none());
        t.check(dsp::depthwise_4x9(x, &w[..w_need - 1], stride, row, acc).is_none());
    }
    t
}

fn conv<const DX: usize, const DW: usize>(rng: &mut Rng, xbuf: &mut [u8; BUF], wbuf: &mut [u8; BUF]) -> Tally {
    let mut t = Tally::default();
    // The longest run both buffers hold, in words.
    let words = BUF.saturating_sub(DX.max(DW) + SLACK) / 4;
    for case in 0..CONV_CASES {
        // Short runs every other case, else any run the buffers allow.
        let run = 4 * (1 + rng.below(if case % 2 == 0 { words.min(16) } else { words }));
        let extra = |rng: &mut Rng| if case % 4 < 2 { 0 } else { rng.below(9) };
        let (xl, wl) = (DX + run + extra(rng), DW + run + extra(rng));
        let (xs, ws) = (rng.below(4), rng.below(4));
        let (Some(x), Some(w)) = (xbuf.get_mut(xs..xs + xl), wbuf.get_mut(ws..ws + wl)) else {
            t.check(false);
            continue;
        };
        rng.fill(x);
        rng.fill(w);
        let acc = rng.accs();
        let (x, w) = (&*x, &*w);
        t.check(dsp::conv_2x2::<DX, DW>(x, w, run, acc) == Some(portable::conv_2x2::<DX, DW>(x, w, run, acc)));
    }
    // Runs that are not a positive multiple of 4, and slices one byte too short.
    for _ in 0..100 {
        let run = 4 * (1 + rng.below(words.min(64)));
        let acc = rng.accs();
        let (Some(x), Some(w)) = (xbuf.get(..DX + run), wbuf.get(..DW + run)) else {
            t.check(false);
            continue;
        };
        for bad in [0, run - 1, run - 2, run - 3] {
            t.check(dsp::conv_2x2::<DX, DW>(x, w, bad, acc).is_none());
        }
        let (xs, ws) = (&x[..x.len() - 1], &w[..w.len() - 1]);
        for (x, w) in [(xs, w), (x, ws), (xs, ws)] {
            t.check(dsp::conv_2x2::<DX, DW>(x, w, run, acc).is_none());
        }
    }
    t
}

/// Prints one operation's line; true when it had no mismatch.
fn report(name: &str, t: &Tally) -> bool {
    hprintln!("{}: {} cases, {} mismatches", name, t.cases, t.mismatches);
    t.mismatches == 0
}

#[entry]
fn main() -> ! {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let (mut xbuf, mut wbuf) = ([0u8; BUF], [0u8; BUF]);
    let mut all = true;
    all &= report("sxtb16", &unary(&mut rng, dsp::sxtb16, portable::sxtb16));
    all &= report("sxtb16_ror8", &unary(&mut rng, dsp::sxtb16_ror8, portable::sxtb16_ror8));
    all &= report("sxtab16", &binary(&mut rng, dsp::sxtab16, portable::sxtab16));
    all &= report("sxtab16_ror8", &binary(&mut rng, dsp::sxtab16_ror8, portable::sxtab16_ror8));
    all &= report("smlad", &mac(&mut rng, dsp::smlad, portable::smlad));
    all &= report("smlabb", &mac(&mut rng, dsp::smlabb, portable::smlabb));
    all &= report("smlatt", &mac(&mut rng, dsp::smlatt, portable::smlatt));
    all &= report("depthwise_4x3", &depthwise(&mut rng, &mut xbuf, &mut wbuf));
    all &= report("depthwise_4x9", &depthwise_window(&mut rng, &mut xbuf, &mut wbuf));
    // Every instantiation the conv kernel dispatches to.
    macro_rules! conv {
        ($(($dx:literal, $dw:literal)),*) => {$(
            all &= report(
                concat!("conv_2x2::<", $dx, ", ", $dw, ">"),
                &conv::<$dx, $dw>(&mut rng, &mut xbuf, &mut wbuf),
            );
        )*};
    }
    conv!(
        (8, 8),
        (16, 16),
        (24, 24),
        (32, 32),
        (48, 48),
        (64, 64),
        (96, 96),
        (128, 128),
        (192, 192),
        (256, 256),
        (9, 9),
        (27, 27),
        (40, 40),
        (72, 72),
        (144, 144),
        (288, 288),
        (576, 576)
    );
    debug::exit(if all { debug::EXIT_SUCCESS } else { debug::EXIT_FAILURE });
    #[allow(clippy::empty_loop)]
    loop {}
}
