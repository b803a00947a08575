//! The host side: finds how the target lines up with the base, then codes it.
//!
//! Alignment is bsdiff's idea made simpler and model-aware. A "diagonal" maps target
//! offset `i` to base offset `i + d`; along a good diagonal the target is coded as
//! bytewise differences from the base (fine-tuned int8 weights move by ±1..3, so the
//! differences are tiny even where no byte is equal). Diagonals come from two sources:
//! tensors paired by name and size between the two flatbuffers (a layer added upstream
//! shifts every later tensor, and the pairing finds each one without searching), and
//! exact 8-byte matches anywhere in the base (for everything that is not a tensor, or
//! models that are not TFLite). Where no diagonal fits, bytes are literals.
//!
//! Where both models parse, the pairing is typed: int32 and float32 tensors and the
//! per-channel quantization scales are paired as 32-bit words (ADD32) when enough of their
//! words changed (with a multiplier where int32 values scale together), and while coding a
//! block a word range that is the float32 product of the block's previous one (bias
//! scales = input scale × weight scales) becomes SCALED.
//! Blocks the base holds unchanged are copied. The whole is coded for every block size
//! from 2 KiB to 4 KiB in steps of 32 bytes, and the smallest patch is kept.

use std::collections::{HashMap, VecDeque};
use std::ops::Add;

use sha2::{Digest, Sha256};

use crate::decode::{Base, Checkpoint, Decoder, DeltaError, IoError, Sink};
use crate::format::{self, HEADER, Header, MAX_BLOCK, MODE_CODED, MODE_COPY, MODE_STORED, Model};
use crate::rc::{Encoder, WordContext};

/// One operation of the alignment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    /// `len` target bytes as differences from the base at `base_off`.
    Add { len: usize, base_off: usize },
    /// `len` literal target bytes.
    Extra { len: usize },
    /// `words` little-endian 32-bit words as differences from the base words at `base_off`.
    Add32 { words: usize, base_off: usize },
    /// `words` words predicted from the block's last ADD32 under `factor` (made from ADD32
    /// operations while coding a block).
    Scaled { words: usize, factor: u32 },
}

/// Bytes looked at to judge a diagonal.
const WINDOW: usize = 16;
/// A diagonal is good where this many of `WINDOW` bytes differ by at most `NEAR`.
const GOOD: usize = 10;
const NEAR: i16 = 4;
/// Anchor length for exact matches.
const ANCHOR: usize = 8;
/// Candidates kept per anchor.
const CANDIDATES: usize = 8;

fn near(a: u8, b: u8) -> bool {
    (i16::from(a as i8) - i16::from(b as i8)).abs() <= NEAR
}

/// How many of the next `window` target bytes from `i` are near the base along `d`.
fn score(base: &[u8], target: &[u8], i: usize, d: isize, window: usize) -> usize {
    (0..window)
        .filter(|&k| {
            let t = i + k;
            let b = t as isize + d;
            t < target.len() && b >= 0 && (b as usize) < base.len() && near(target[t], base[b as usize])
        })
        .count()
}

/// A target range with a forced diagonal: `(start, end, diagonal, words)`, `words` when
/// it holds 32-bit values (int32 and float32 tensors, quantization scales).
type Forced = (usize, usize, isize, bool);

/// Where a tensor's bytes are in its model.
struct TensorBytes {
    name: String,
    /// Its contents (`len` 0 for activations).
    start: usize,
    len: usize,
    /// Whether its elements are 32-bit.
    words: bool,
    /// Its quantization scales (offset, bytes).
    scales: Option<(usize, usize)>,
}

/// Target ranges with a forced diagonal, from tensors paired by name and size (their
/// contents, and their quantization scales as 32-bit words).
fn paired_tensors(base: &[u8], target: &[u8]) -> Vec<Forced> {
    let offset = |whole: &[u8], part: &[u8]| (part.as_ptr() as usize).wrapping_sub(whole.as_ptr() as usize);
    let mut ranges = Vec::new();
    // Typed pairing where the models parse; plain constants otherwise.
    let typed = |bytes: &'_ [u8]| -> Option<Vec<TensorBytes>> {
        let model = mota_runtime::model::Model::parse(bytes).ok()?;
        let mut out = Vec::new();
        for i in 0..model.tensor_count() {
            let t = model.tensor(i).ok()?;
            let scales = t.quantization.and_then(|q| q.scales_raw().ok()).map(|s| (offset(bytes, s), s.len()));
            let (start, len) = t.data.map_or((0, 0), |d| (offset(bytes, d), d.len()));
            let words = t.dtype.size() == 4;
            out.push(TensorBytes { name: t.name().to_string(), start, len, words, scales });
        }
        Some(out)
    };
    if let (Some(bt), Some(tt)) = (typed(base), typed(target)) {
        let mut data: HashMap<(&str, usize), usize> = HashMap::new();
        let mut scales: HashMap<(&str, usize), usize> = HashMap::new();
        for TensorBytes { name, start, len, scales: sc, .. } in &bt {
            if *len > 0 {
                data.insert((name.as_str(), *len), *start);
            }
            if let Some((s, l)) = sc {
                scales.insert((name.as_str(), *l), *s);
            }
        }
        for TensorBytes { name, start, len, words, scales: sc } in &tt {
            if *len > 0
                && let Some(&b) = data.get(&(name.as_str(), *len))
            {
                let w = *words && len % 4 == 0;
                ranges.push((*start, start + len, b as isize - *start as isize, w));
            }
            if let Some((s, l)) = sc
                && *l >= MIN_SCALES * 4
                && let Some(&b) = scales.get(&(name.as_str(), *l))
            {
                ranges.push((*s, s + l, b as isize - *s as isize, true));
            }
        }
    } else {
        let mut base_tensors: HashMap<(&str, usize), usize> = HashMap::new();
        let _ = mota_runtime::model::for_each_constant(base, |name, data| {
            base_tensors.insert((name, data.len()), offset(base, data));
        });
        let _ = mota_runtime::model::for_each_constant(target, |name, data| {
            if let Some(&b) = base_tensors.get(&(name, data.len())) {
                let t = offset(target, data);
                ranges.push((t, t + data.len(), b as isize - t as isize, false));
            }
        });
    }
    ranges.sort_unstable();
    // Shared buffers can pair twice: keep the first of overlapping ranges.
    let mut kept: Vec<Forced> = Vec::new();
    for r in ranges {
        if kept.last().is_none_or(|k| k.1 <= r.0) {
            kept.push(r);
        }
    }
    kept
}

/// Whether a forced word range is worth its own operation: enough of its words changed
/// (unchanged ones cost next to nothing inside a byte run, and a run broken costs more).
fn worth_words(base: &[u8], target: &[u8], start: usize, end: usize, d: isize) -> bool {
    let b = (start as isize + d) as usize;
    let changed = target[start..end].chunks(4).zip(base[b..].chunks(4)).filter(|(t, b)| t != b).count();
    changed * WORDS_CHANGED >= (end - start) / 4 && changed > 0
}

/// A word range gets its own operation when at least 1 in this many words changed.
const WORDS_CHANGED: usize = 4;

/// Per-channel scale vectors shorter than this are left to the byte matcher.
const MIN_SCALES: usize = 2;

/// Aligns `target` against `base`.
fn align(base: &[u8], target: &[u8]) -> Vec<Op> {
    let forced = paired_tensors(base, target);
    let mut index: HashMap<&[u8], Vec<usize>> = HashMap::new();
    for (p, w) in base.windows(ANCHOR).enumerate() {
        let v = index.entry(w).or_default();
        if v.len() < CANDIDATES {
            v.push(p);
        }
    }
    let mut ops: Vec<Op> = Vec::new();
    let mut push = |op: Op| match (ops.last_mut(), op) {
        (Some(Op::Extra { len }), Op::Extra { len: n }) => *len += n,
        (Some(Op::Add { len, base_off }), Op::Add { len: n, base_off: b }) if *base_off + *len == b => *len += n,
        _ => ops.push(op),
    };
    let mut diag: Option<isize> = None;
    let mut f = 0;
    let mut i = 0;
    while i < target.len() {
        while f < forced.len() && forced[f].1 <= i {
            f += 1;
        }
        if let Some(&(start, end, d, words)) = forced.get(f)
            && start <= i
        {
            let base_off = (i as isize + d) as usize;
            if words && i == start && worth_words(base, target, start, end, d) {
                push(Op::Add32 { words: (end - i) / 4, base_off });
            } else {
                push(Op::Add { len: end - i, base_off });
            }
            diag = Some(d);
            i = end;
            continue;
        }
        // Judge diagonals on the bytes before the next paired tensor only: its own
        // (changed) contents say nothing about the bytes in front of it.
        let next = forced.get(f).map_or(usize::MAX, |r| r.0);
        let window = WINDOW.min(next - i);
        let good = |d: isize| {
            let n = score(base, target, i, d, window);
            n > 0 && n * WINDOW >= GOOD * window
        };
        let keep = diag.filter(|&d| good(d));
        let d = keep.or_else(|| forced.get(f).map(|r| r.2).filter(|&d| good(d))).or_else(|| {
            let w = target.get(i..i + ANCHOR)?;
            let best = index
                .get(w)?
                .iter()
                .map(|&p| p as isize - i as isize)
                .max_by_key(|&d| score(base, target, i, d, window))?;
            good(best).then_some(best)
        });
        let b = d.map(|d| i as isize + d).filter(|&b| b >= 0 && (b as usize) < base.len());
        match b {
            Some(b) => {
                push(Op::Add { len: 1, base_off: b as usize });
                diag = d;
            }
            None => {
                push(Op::Extra { len: 1 });
                diag = None;
            }
        }
        i += 1;
    }
    ops
}

/// Codes `ops` into blocks.
fn code(base: &[u8], target: &[u8], ops: &[Op], base_size: u32, base_sha256: [u8; 32], block_size: usize) -> Vec<u8> {
    let blocks = target.len().div_ceil(block_size);
    let header = Header {
        block_size: block_size as u32,
        blocks: blocks as u32,
        target_size: target.len() as u32,
        base_size,
        base_sha256,
        target_sha256: Sha256::digest(target).into(),
    };
    let mut out = header.to_bytes().to_vec();
    // Split operations at block boundaries.
    let mut per_block: Vec<Vec<Op>> = vec![Vec::new(); blocks];
    let mut pos = 0usize;
    for &op in ops {
        let (mut len, base_off, words) = match op {
            Op::Add { len, base_off } => (len, Some(base_off), false),
            Op::Extra { len } => (len, None, false),
            Op::Add32 { words, base_off } => (4 * words, Some(base_off), true),
            // Only made while coding a block; as literals here.
            Op::Scaled { words, .. } => (4 * words, None, false),
        };
        let mut done = 0;
        while len > 0 {
            let block = pos / block_size;
            let mut n = len.min(block_size - pos % block_size);
            let piece = match base_off {
                // Whole words where the block boundary allows; the bytes of a word it cuts
                // go as byte differences.
                Some(b) if words && n >= 4 && done % 4 == 0 => {
                    n -= n % 4;
                    Op::Add32 { words: n / 4, base_off: b + done }
                }
                Some(b) if words => {
                    n = n.min(4 - done % 4);
                    Op::Add { len: n, base_off: b + done }
                }
                Some(b) => Op::Add { len: n, base_off: b + done },
                None => Op::Extra { len: n },
            };
            per_block[block].push(piece);
            pos += n;
            done += n;
            len -= n;
        }
    }
    let mut base_pos = 0usize;
    for (b, block_ops) in per_block.iter().enumerate() {
        let start = b * block_size;
        let end = (start + block_size).min(target.len());
        if let [Op::Add { len, base_off }] = block_ops[..]
            && base_off == base_pos
            && len == end - start
            && base[base_off..base_off + len] == target[start..end]
        {
            out.extend(format::block_header(MODE_COPY, 0));
            base_pos += len;
            continue;
        }
        let (payload, next_base) = code_block(base, target, start, block_ops, base_pos);
        if payload.len() < end - start && payload.len() <= MAX_BLOCK {
            out.extend(format::block_header(MODE_CODED, payload.len()));
            out.extend(payload);
            base_pos = next_base;
        } else {
            out.extend(format::block_header(MODE_STORED, end - start));
            out.extend(&target[start..end]);
        }
    }
    out
}

fn code_block(base: &[u8], target: &[u8], start: usize, ops: &[Op], mut base_pos: usize) -> (Vec<u8>, usize) {
    let mut m = Model::new();
    let mut e = Encoder::default();
    let mut t = start;
    let mut prev_kind = format::KIND_ADD;
    let mut prev_zero = 1usize;
    let mut words = WordContext::default();
    let word = |b: &[u8], at: usize| u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]);
    // The target words of the block's last ADD32 (the decoder's history).
    let mut history: Vec<u32> = Vec::new();
    let mut queue: VecDeque<Op> = ops.iter().copied().collect();
    while let Some(op) = queue.pop_front() {
        // A word range predicted by the last one: split it into byte differences for the
        // words before the prediction lines up, SCALED, and ADD32 for the rest.
        if let Op::Add32 { words: n, base_off } = op {
            let new: Vec<u32> = (0..n).map(|k| word(target, t + 4 * k)).collect();
            if let Some((skip, count, factor)) = scale_split(&history, &new) {
                if skip + count < n {
                    queue.push_front(Op::Add32 { words: n - skip - count, base_off: base_off + 4 * (skip + count) });
                }
                queue.push_front(Op::Scaled { words: count, factor });
                if skip > 0 {
                    queue.push_front(Op::Add { len: 4 * skip, base_off });
                }
                continue;
            }
        }
        let (kind, count, len) = match op {
            Op::Add { len, .. } => (format::KIND_ADD, len, len),
            Op::Extra { len } => (format::KIND_EXTRA, len, len),
            Op::Add32 { words, .. } => (format::KIND_ADD32, words, 4 * words),
            Op::Scaled { words, .. } => (format::KIND_SCALED, words, 4 * words),
        };
        e.bit(&mut m.kind[prev_kind], u32::from(kind != format::KIND_ADD));
        if kind != format::KIND_ADD {
            e.bit(&mut m.kind2[prev_kind], u32::from(kind != format::KIND_EXTRA));
        }
        if kind >= format::KIND_ADD32 {
            e.bit(&mut m.kind3[prev_kind], u32::from(kind == format::KIND_SCALED));
        }
        e.gamma(&mut m.len[kind], count as u32);
        match op {
            Op::Add { len, base_off } => {
                let seek = base_off as i64 - base_pos as i64;
                e.gamma(&mut m.seek, format::zigzag(seek) + 1);
                for k in 0..len {
                    let diff = target[t + k].wrapping_sub(base[base_off + k]);
                    e.signed(&mut m.diff, (prev_zero ^ 1) | (usize::from((base[base_off + k] as i8) < 0) << 1), diff);
                    prev_zero = usize::from(diff == 0);
                }
                base_pos = base_off + len;
            }
            Op::Add32 { words: n, base_off } => {
                let seek = base_off as i64 - base_pos as i64;
                e.gamma(&mut m.seek, format::zigzag(seek) + 1);
                let old: Vec<u32> = (0..n).map(|k| word(base, base_off + 4 * k)).collect();
                let new: Vec<u32> = (0..n).map(|k| word(target, t + 4 * k)).collect();
                let multiplier = multiplier(&old, &new);
                e.bit(&mut m.multiplied, u32::from(multiplier.is_some()));
                if let Some(k) = multiplier {
                    e.gamma(&mut m.multiplier, format::zigzag(k - format::ONE) + 1);
                }
                history.clear();
                for (&o, &v) in old.iter().zip(&new) {
                    e.word(&mut m.word, &mut words, v.wrapping_sub(format::multiply(o, multiplier)));
                    if history.len() < format::HISTORY {
                        history.push(v);
                    }
                }
                base_pos = base_off + 4 * n;
            }
            Op::Extra { len } => {
                for &byte in &target[t..t + len] {
                    e.tree_byte(&mut m.literal, byte);
                }
            }
            Op::Scaled { words: n, factor } => {
                e.direct(factor, 32);
                let mut c = WordContext::default();
                for (k, &h) in history.iter().take(n).enumerate() {
                    e.word(&mut m.scaled, &mut c, word(target, t + 4 * k).wrapping_sub(format::scaled(h, factor)));
                }
                base_pos += len;
            }
        }
        t += len;
        prev_kind = kind;
    }
    (e.finish(), base_pos)
}

/// The multiplier (16 fraction bits) under which `new` is best predicted from `old` as
/// int32 values, if that saves more than it costs (int32 biases of a fine-tune scale
/// roughly together when the input scale moves).
fn multiplier(old: &[u32], new: &[u32]) -> Option<i64> {
    let (mut ab, mut bb) = (0f64, 0f64);
    for (&o, &v) in old.iter().zip(new) {
        let (o, v) = (f64::from(o as i32), f64::from(v as i32));
        ab += o * v;
        bb += o * o;
    }
    if bb == 0.0 || new.len() < 4 {
        return None;
    }
    let k = (ab / bb * format::ONE as f64).round();
    if !(0.0..=4.0 * format::ONE as f64).contains(&k) {
        return None;
    }
    let k = k as i64;
    let bits = |p: &dyn Fn(u32) -> u32| -> f64 {
        old.iter().zip(new).map(|(&o, &v)| f64::from(v.wrapping_sub(p(o)) as i32).abs().add(1.0).log2()).sum()
    };
    let plain = bits(&|o| o);
    let scaled = bits(&|o| format::multiply(o, Some(k)));
    // About 2 log2 bits of the multiplier's offset from one, and the length bits.
    let cost = 2.0 * ((k - format::ONE).unsigned_abs() as f64 + 1.0).log2() + 4.0;
    (scaled + cost < plain).then_some(k)
}

/// How `new` lines up with float32 products of `history`: words to skip first, words to
/// predict, and the factor, if that pays (at least 4 words, half of them exact).
fn scale_split(history: &[u32], new: &[u32]) -> Option<(usize, usize, u32)> {
    let mut best: Option<(usize, usize, usize, u32)> = None;
    for skip in 0..new.len().min(4) {
        let count = (new.len() - skip).min(history.len());
        if count < 4 {
            continue;
        }
        let part = &new[skip..skip + count];
        if let Some((exact, f)) = scale_factor(history, part)
            && best.is_none_or(|b| exact > b.0)
        {
            best = Some((exact, skip, count, f));
        }
    }
    best.filter(|&(exact, _, count, _)| 2 * exact >= count).map(|(_, skip, count, f)| (skip, count, f))
}

/// The factor under which `new` is best predicted as float32 products of `history`
/// (a per-channel bias scale vector is the input scale times the weight scales), if at
/// least half of the words come out exact.
fn scale_factor(history: &[u32], new: &[u32]) -> Option<(usize, u32)> {
    if new.is_empty() || new.len() > history.len() {
        return None;
    }
    let exact = |f: u32| history.iter().zip(new).filter(|&(&h, &v)| format::scaled(h, f) == v).count();
    let mut best: Option<(usize, u32)> = None;
    for (&h, &v) in history.iter().zip(new).take(4) {
        let q = f32::from_bits(v) / f32::from_bits(h);
        if !q.is_normal() {
            continue;
        }
        for ulp in -3i32..=3 {
            let f = q.to_bits().wrapping_add_signed(ulp);
            let n = exact(f);
            if best.is_none_or(|(b, _)| n > b) {
                best = Some((n, f));
            }
        }
    }
    best
}

/// Block sizes [`make`] tries, largest first (the smallest patch wins): where blocks
/// start decides which weight and bias scale vectors share a block, and so which SCALED
/// predictions are possible.
fn block_sizes() -> impl Iterator<Item = usize> {
    (MAX_BLOCK / 2..=MAX_BLOCK).rev().step_by(32)
}

/// A patch from `base` to `target`.
pub fn make(base: &[u8], target: &[u8]) -> Vec<u8> {
    let ops = align(base, target);
    let sha = Sha256::digest(base).into();
    block_sizes()
        .map(|size| code(base, target, &ops, base.len() as u32, sha, size))
        .min_by_key(Vec::len)
        .unwrap_or_default()
}

/// A patch that rebuilds `target` without a base (the fallback when nothing is shared).
pub fn full(target: &[u8]) -> Vec<u8> {
    let ops = if target.is_empty() { Vec::new() } else { vec![Op::Extra { len: target.len() }] };
    code(&[], target, &ops, 0, [0; 32], MAX_BLOCK)
}

/// The smaller of [`make`] and [`full`]: never larger than the full-image patch.
pub fn best(base: &[u8], target: &[u8]) -> Vec<u8> {
    let delta = make(base, target);
    let image = full(target);
    if delta.len() < image.len() { delta } else { image }
}

struct SliceBase<'a>(&'a [u8]);

impl Base for SliceBase<'_> {
    fn read(&mut self, offset: u32, buf: &mut [u8]) -> Result<(), IoError> {
        let start = offset as usize;
        buf.copy_from_slice(self.0.get(start..start + buf.len()).ok_or(IoError)?);
        Ok(())
    }
}

impl Sink for Vec<u8> {
    fn write(&mut self, bytes: &[u8]) -> Result<(), IoError> {
        self.extend_from_slice(bytes);
        Ok(())
    }
}

/// Applies a patch in memory (host convenience, and the reference the device decoder is
/// tested against): checks the base digest first and the target digest last.
pub fn apply(base: &[u8], patch: &[u8]) -> Result<Vec<u8>, DeltaError> {
    let mut decoder = Decoder::new(Sha256::digest(base).into(), base.len() as u32, u32::MAX);
    let mut out = Vec::new();
    decoder.push(patch, &mut SliceBase(base), &mut out)?;
    decoder.finish()?;
    let header = patch.get(..HEADER).and_then(|h| <&[u8; HEADER]>::try_from(h).ok()).ok_or(DeltaError::Truncated)?;
    let expected = Header::parse(header).map_err(DeltaError::Header)?.target_sha256;
    if <[u8; 32]>::from(Sha256::digest(&out)) != expected {
        return Err(DeltaError::Corrupt(u32::MAX));
    }
    Ok(out)
}

/// Applies a patch from a checkpoint on (tests of resumption).
pub fn apply_from(base: &[u8], patch: &[u8], checkpoint: Checkpoint, out: &mut Vec<u8>) -> Result<(), DeltaError> {
    let mut decoder = Decoder::resume(checkpoint, base.len() as u32, u32::MAX)?;
    let rest = patch.get(checkpoint.patch_offset as usize..).ok_or(DeltaError::Truncated)?;
    decoder.push(rest, &mut SliceBase(base), out)?;
    decoder.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Per-channel weight scales and the bias scales they imply (`input × weight`).
    fn scale_vectors(seed: u32, n: usize, input: f32) -> (Vec<u8>, Vec<u8>) {
        let w: Vec<f32> =
            (0..n).map(|i| 0.001 + ((seed.wrapping_mul(2_654_435_761) ^ i as u32) % 1000) as f32 * 1e-5).collect();
        let b: Vec<f32> = w.iter().map(|&w| w * input).collect();
        (w.iter().flat_map(|v| v.to_le_bytes()).collect(), b.iter().flat_map(|v| v.to_le_bytes()).collect())
    }

    fn round_trip(base: &[u8], target: &[u8], ops: &[Op], block_size: usize) -> Vec<u8> {
        let patch = code(base, target, ops, base.len() as u32, Sha256::digest(base).into(), block_size);
        assert_eq!(apply(base, &patch).as_deref(), Ok(target));
        patch
    }

    #[test]
    fn bias_scales_are_predicted_from_weight_scales() {
        let (w0, b0) = scale_vectors(1, 64, 0.031);
        let (w1, b1) = scale_vectors(2, 64, 0.027);
        let base = [w0, vec![7; 40], b0].concat();
        let target = [w1.clone(), vec![7; 40], b1].concat();
        let ops = [
            Op::Add32 { words: 64, base_off: 0 },
            Op::Add { len: 40, base_off: 256 },
            Op::Add32 { words: 64, base_off: 296 },
        ];
        let scaled = round_trip(&base, &target, &ops, MAX_BLOCK);
        // The same bias words without the product relation cost about as much as the
        // weights; predicted, they cost a few bytes.
        let mut unrelated = target.clone();
        for (i, b) in unrelated[296..].iter_mut().enumerate() {
            if i % 4 < 2 {
                *b ^= (i * 37) as u8;
            }
        }
        let plain = round_trip(&base, &unrelated, &ops, MAX_BLOCK);
        assert!(scaled.len() + 100 < plain.len(), "{} vs {}", scaled.len(), plain.len());
    }

    #[test]
    fn int32_vectors_that_scale_together_take_a_multiplier() {
        let old: Vec<i32> = (0..64).map(|i| (i * 7919 % 9000) - 4500).collect();
        let new: Vec<i32> =
            old.iter().enumerate().map(|(i, &v)| (f64::from(v) * 0.85) as i32 + (i as i32 % 5) - 2).collect();
        let bytes = |v: &[i32]| -> Vec<u8> { v.iter().flat_map(|x| x.to_le_bytes()).collect() };
        let (base, target) = (bytes(&old), bytes(&new));
        let words =
            |v: &[u8]| -> Vec<u32> { v.chunks(4).map(|w| u32::from_le_bytes([w[0], w[1], w[2], w[3]])).collect() };
        let k = multiplier(&words(&base), &words(&target));
        assert!(k.is_some_and(|k| (k - (0.85 * format::ONE as f64) as i64).abs() < 200), "{k:?}");
        round_trip(&base, &target, &[Op::Add32 { words: 64, base_off: 0 }], MAX_BLOCK);
        // Unrelated values get none.
        assert_eq!(multiplier(&words(&base), &words(&base[..]).iter().map(|w| w ^ 0x5555).collect::<Vec<_>>()), None);
    }

    #[test]
    fn unchanged_blocks_are_copied() {
        let base: Vec<u8> = (0..10_000u32).map(|i| (i * 7 % 253) as u8).collect();
        let mut target = base.clone();
        target[9_000] ^= 1;
        let patch = round_trip(&base, &target, &[Op::Add { len: base.len(), base_off: 0 }], MAX_BLOCK);
        assert!(patch.len() < HEADER + 3 * 3 + 20, "{} bytes", patch.len());
    }

    fn ops_strategy() -> impl Strategy<Value = (Vec<u8>, Vec<u8>, Vec<Op>, usize)> {
        (
            proptest::collection::vec((0..3u8, 1..400usize, any::<u16>(), any::<bool>()), 1..40),
            any::<u64>(),
            0..=32usize,
        )
            .prop_map(|(spec, seed, bs)| {
                let mut state = seed | 1;
                let mut next = move || {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    state
                };
                let base: Vec<u8> = (0..12_000).map(|_| next() as u8).collect();
                let (mut target, mut ops) = (Vec::new(), Vec::new());
                let mut last_words = 0;
                for (kind, len, at, scaled) in spec {
                    match kind {
                        0 => {
                            let off = usize::from(at) % (base.len() - len);
                            target.extend(base[off..off + len].iter().map(|&b| b.wrapping_add((next() % 5) as u8)));
                            ops.push(Op::Add { len, base_off: off });
                        }
                        1 => {
                            target.extend((0..len).map(|_| next() as u8));
                            ops.push(Op::Extra { len });
                        }
                        _ => {
                            let words = len / 4 + 1;
                            let off = usize::from(at) % (base.len() - 4 * words);
                            if scaled {
                                // Float products of the last word range's words (a few
                                // noisy, where it is short).
                                let prev: Vec<u8> = target[last_words..].to_vec();
                                let f = 0.01 + (next() % 100) as f32 * 1e-3;
                                for k in 0..words {
                                    let w = prev
                                        .get(4 * k..4 * k + 4)
                                        .map_or(0.5, |b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]));
                                    let noise = u32::from(next() % 8 == 0);
                                    target.extend(((w * f).to_bits() ^ noise).to_le_bytes());
                                }
                            } else {
                                // Small int32 values, every other range scaled by 0.9 (a multiplier).
                                let factor = if len % 2 == 0 { 0.9 } else { 1.0 };
                                target.extend(base[off..off + 4 * words].chunks(4).flat_map(|w| {
                                    let v = (i32::from_le_bytes([w[0], w[1], w[2], w[3]]) >> 12) as f64 * factor;
                                    (v as i32 as u32).wrapping_add((next() % 64) as u32).wrapping_sub(32).to_le_bytes()
                                }));
                            }
                            ops.push(Op::Add32 { words, base_off: off });
                            last_words = target.len() - 4 * words;
                        }
                    }
                }
                (base, target, ops, MAX_BLOCK / 2 + 64 * bs)
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

        /// Any mix of operations, word ranges cut anywhere by any block size, round-trips.
        #[test]
        fn any_operations_round_trip((base, target, ops, block_size) in ops_strategy()) {
            round_trip(&base, &target, &ops, block_size);
        }
    }
}
