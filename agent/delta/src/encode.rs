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

use std::collections::HashMap;

use sha2::{Digest, Sha256};

use crate::decode::{Base, Checkpoint, Decoder, DeltaError, IoError, Sink};
use crate::format::{self, HEADER, Header, MAX_BLOCK, MODE_CODED, MODE_STORED, Model};
use crate::rc::Encoder;

/// One operation of the alignment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    /// `len` target bytes as differences from the base at `base_off`.
    Add { len: usize, base_off: usize },
    /// `len` literal target bytes.
    Extra { len: usize },
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

/// How many of the next `WINDOW` target bytes from `i` are near the base along `d`.
fn score(base: &[u8], target: &[u8], i: usize, d: isize) -> usize {
    (0..WINDOW)
        .filter(|&k| {
            let t = i + k;
            let b = t as isize + d;
            t < target.len() && b >= 0 && (b as usize) < base.len() && near(target[t], base[b as usize])
        })
        .count()
}

/// Target ranges with a forced diagonal, from tensors paired by name and size.
fn paired_tensors(base: &[u8], target: &[u8]) -> Vec<(usize, usize, isize)> {
    let offset = |whole: &[u8], part: &[u8]| (part.as_ptr() as usize).wrapping_sub(whole.as_ptr() as usize);
    let mut base_tensors: HashMap<(&str, usize), usize> = HashMap::new();
    let _ = mota_runtime::model::for_each_constant(base, |name, data| {
        base_tensors.insert((name, data.len()), offset(base, data));
    });
    let mut ranges = Vec::new();
    let _ = mota_runtime::model::for_each_constant(target, |name, data| {
        if let Some(&b) = base_tensors.get(&(name, data.len())) {
            let t = offset(target, data);
            ranges.push((t, t + data.len(), b as isize - t as isize));
        }
    });
    ranges.sort_unstable();
    ranges
}

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
        if let Some(&(start, end, d)) = forced.get(f)
            && start <= i
        {
            push(Op::Add { len: end - i, base_off: (i as isize + d) as usize });
            diag = Some(d);
            i = end;
            continue;
        }
        let keep = diag.filter(|&d| score(base, target, i, d) >= GOOD);
        let d = keep.or_else(|| {
            let w = target.get(i..i + ANCHOR)?;
            let best =
                index.get(w)?.iter().map(|&p| p as isize - i as isize).max_by_key(|&d| score(base, target, i, d))?;
            (score(base, target, i, best) >= GOOD).then_some(best)
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
fn code(base: &[u8], target: &[u8], ops: &[Op], base_size: u32, base_sha256: [u8; 32]) -> Vec<u8> {
    let block_size = MAX_BLOCK;
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
        let (mut len, base_off) = match op {
            Op::Add { len, base_off } => (len, Some(base_off)),
            Op::Extra { len } => (len, None),
        };
        let mut done = 0;
        while len > 0 {
            let block = pos / block_size;
            let n = len.min(block_size - pos % block_size);
            per_block[block].push(match base_off {
                Some(b) => Op::Add { len: n, base_off: b + done },
                None => Op::Extra { len: n },
            });
            pos += n;
            done += n;
            len -= n;
        }
    }
    let mut base_pos = 0usize;
    for (b, block_ops) in per_block.iter().enumerate() {
        let start = b * block_size;
        let end = (start + block_size).min(target.len());
        let (payload, next_base) = code_block(base, target, start, block_ops, base_pos);
        if payload.len() < end - start && payload.len() <= MAX_BLOCK {
            out.push(MODE_CODED);
            out.extend((payload.len() as u16).to_le_bytes());
            out.extend(payload);
            base_pos = next_base;
        } else {
            out.push(MODE_STORED);
            out.extend(((end - start) as u16).to_le_bytes());
            out.extend(&target[start..end]);
        }
    }
    out
}

fn code_block(base: &[u8], target: &[u8], start: usize, ops: &[Op], mut base_pos: usize) -> (Vec<u8>, usize) {
    let mut m = Model::new();
    let mut e = Encoder::default();
    let mut t = start;
    let mut prev_kind = 0usize;
    let mut prev_zero = 1usize;
    for &op in ops {
        let (kind, len) = match op {
            Op::Add { len, .. } => (0usize, len),
            Op::Extra { len } => (1, len),
        };
        e.bit(&mut m.kind[prev_kind], kind as u32);
        e.gamma(&mut m.len[kind], len as u32);
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
            Op::Extra { len } => {
                for &byte in &target[t..t + len] {
                    e.tree_byte(&mut m.literal, byte);
                }
            }
        }
        t += len;
        prev_kind = kind;
    }
    (e.finish(), base_pos)
}

/// A patch from `base` to `target`.
pub fn make(base: &[u8], target: &[u8]) -> Vec<u8> {
    let ops = align(base, target);
    code(base, target, &ops, base.len() as u32, Sha256::digest(base).into())
}

/// A patch that rebuilds `target` without a base (the fallback when nothing is shared).
pub fn full(target: &[u8]) -> Vec<u8> {
    let ops = if target.is_empty() { Vec::new() } else { vec![Op::Extra { len: target.len() }] };
    code(&[], target, &ops, 0, [0; 32])
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
