//! The device side: rebuilds the target from the base and patch bytes as they arrive.
//!
//! Patch bytes are pushed in chunks of any size; a block is decoded once its bytes are
//! all in (at most 4 KiB buffered), reading the base through [`Base`] and writing the
//! output through [`Sink`], strictly in order. At every block boundary the decoder's
//! whole state is a [`Checkpoint`] of 28 bytes: persist it, and after a power cut
//! [`Decoder::resume`] continues from there with the patch bytes that follow it.
//!
//! RAM: the decoder struct (block buffer, adaptive model with its 512-byte word history,
//! small I/O buffers) is 6,404 bytes on a Cortex-M4, plus about 1,080 bytes of stack;
//! nothing else is allocated. The 4 KiB block buffer can be lent instead
//! ([`Decoder::with_buffer`]): memory that is idle while a model downloads, such as the
//! tensor arena, then carries it. Every length, offset and size is checked: a corrupt,
//! truncated or oversized patch gives an error, never a panic or an out-of-range access.

use core::fmt;

use crate::format::{self, BLOCK_HEADER, HEADER, Header, MAX_BLOCK, MODE_CODED, MODE_COPY, MODE_STORED, Model};
use crate::rc::{self, Corrupt};

/// Random-access reads of the base (the active flash slot).
pub trait Base {
    /// Fills `buf` from `offset`; `Err` when the read fails.
    fn read(&mut self, offset: u32, buf: &mut [u8]) -> Result<(), IoError>;
}

/// Sequential writes of the target (the inactive flash slot).
pub trait Sink {
    /// Appends `bytes`; `Err` when the write fails.
    fn write(&mut self, bytes: &[u8]) -> Result<(), IoError>;
}

/// A failed read or write (the caller knows why).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IoError;

/// Why decoding stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeltaError {
    /// The header is not a supported mota-delta header.
    Header(format::HeaderError),
    /// The patch is for another base than the one given.
    WrongBase,
    /// The patch needs a base larger than the one given.
    BaseTooSmall,
    /// The target does not fit where it is written.
    TargetTooLarge,
    /// Block `0` is malformed (bad mode or length, corrupt coding, reads outside the base).
    Corrupt(u32),
    /// More patch bytes after the last block.
    TrailingBytes,
    /// The patch ended before its last block.
    Truncated,
    /// The base could not be read.
    Base,
    /// The output could not be written.
    Sink,
}

impl fmt::Display for DeltaError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Header(e) => write!(f, "bad patch header: {e:?}"),
            Self::WrongBase => f.write_str("patch made for another base"),
            Self::BaseTooSmall => f.write_str("base smaller than the patch expects"),
            Self::TargetTooLarge => f.write_str("target larger than the destination"),
            Self::Corrupt(b) => write!(f, "corrupt patch block {b}"),
            Self::TrailingBytes => f.write_str("bytes after the last block"),
            Self::Truncated => f.write_str("patch truncated"),
            Self::Base => f.write_str("base read failed"),
            Self::Sink => f.write_str("output write failed"),
        }
    }
}

impl core::error::Error for DeltaError {}

/// Everything needed to continue at a block boundary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Checkpoint {
    /// Next block to decode.
    pub block: u32,
    /// Patch offset of that block (where to resume the download).
    pub patch_offset: u32,
    /// Output bytes already written.
    pub output: u32,
    /// Base cursor.
    pub base_pos: u32,
    /// From the header: block size, block count, target size.
    pub block_size: u32,
    /// Block count.
    pub blocks: u32,
    /// Target size.
    pub target_size: u32,
}

impl Checkpoint {
    /// Bytes of [`Checkpoint::to_bytes`].
    pub const LEN: usize = 28;

    /// Little-endian encoding, for persistence.
    pub fn to_bytes(&self) -> [u8; Self::LEN] {
        let mut b = [0u8; Self::LEN];
        let fields =
            [self.block, self.patch_offset, self.output, self.base_pos, self.block_size, self.blocks, self.target_size];
        for (chunk, v) in b.chunks_exact_mut(4).zip(fields) {
            chunk.copy_from_slice(&v.to_le_bytes());
        }
        b
    }

    /// Inverse of [`Checkpoint::to_bytes`].
    pub fn from_bytes(b: &[u8; Self::LEN]) -> Self {
        let f = |i: usize| u32::from_le_bytes([b[4 * i], b[4 * i + 1], b[4 * i + 2], b[4 * i + 3]]);
        Self {
            block: f(0),
            patch_offset: f(1),
            output: f(2),
            base_pos: f(3),
            block_size: f(4),
            blocks: f(5),
            target_size: f(6),
        }
    }
}

/// Progress after a push.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// More patch bytes are needed.
    NeedMore,
    /// The last block is written.
    Done,
}

/// Bytes of the block buffer a decoder needs (a block and its header).
pub const BLOCK_BUFFER: usize = BLOCK_HEADER + MAX_BLOCK;

/// The streaming decoder.
///
/// `B` holds the block being received: by default an array inside the decoder; with
/// [`Decoder::with_buffer`], memory the caller lends (an agent lends its tensor arena,
/// idle while a model downloads) and takes back with [`Decoder::into_buffer`].
pub struct Decoder<B = [u8; BLOCK_BUFFER]> {
    header: [u8; HEADER],
    ck: Option<Checkpoint>,
    expected_base: [u8; 32],
    base_size: u32,
    max_target: u32,
    buf: B,
    fill: usize,
    consumed: u32,
    model: Model,
}

const OUT_CHUNK: usize = 64;

impl Decoder {
    /// A decoder for a patch against a base with SHA-256 `base_sha256` and `base_size`
    /// bytes, writing at most `max_target` bytes. For a full-image patch the base is
    /// ignored.
    pub fn new(base_sha256: [u8; 32], base_size: u32, max_target: u32) -> Self {
        Self {
            header: [0; HEADER],
            ck: None,
            expected_base: base_sha256,
            base_size,
            max_target,
            buf: [0; BLOCK_HEADER + MAX_BLOCK],
            fill: 0,
            consumed: 0,
            model: Model::new(),
        }
    }

    /// Continues from `checkpoint`; push the patch bytes from `checkpoint.patch_offset` on.
    pub fn resume(checkpoint: Checkpoint, base_size: u32, max_target: u32) -> Result<Self, DeltaError> {
        let mut d = Self::new([0; 32], base_size, max_target);
        d.restart_at(checkpoint, base_size, max_target)?;
        Ok(d)
    }
}

impl<B: AsRef<[u8]> + AsMut<[u8]>> Decoder<B> {
    /// [`Decoder::new`] with a block buffer lent by the caller; `None` when it is shorter
    /// than [`BLOCK_BUFFER`].
    pub fn with_buffer(base_sha256: [u8; 32], base_size: u32, max_target: u32, buf: B) -> Option<Self> {
        (buf.as_ref().len() >= BLOCK_BUFFER).then_some(Self {
            header: [0; HEADER],
            ck: None,
            expected_base: base_sha256,
            base_size,
            max_target,
            buf,
            fill: 0,
            consumed: 0,
            model: Model::new(),
        })
    }

    /// Gives the lent buffer back.
    pub fn into_buffer(self) -> B {
        self.buf
    }

    /// The block buffer, for other work between two patches (an agent runs its validator
    /// in it). The decoder forgets its patch: push again only after a restart.
    pub fn lend_buffer(&mut self) -> &mut [u8] {
        self.restart([0; 32], 0, 0);
        self.buf.as_mut()
    }

    /// [`Decoder::new`] in place: firmware keeps one decoder in static memory and re-arms
    /// it for each download, with no second decoder-sized value on its stack.
    pub fn restart(&mut self, base_sha256: [u8; 32], base_size: u32, max_target: u32) {
        self.header = [0; HEADER];
        self.ck = None;
        self.expected_base = base_sha256;
        self.base_size = base_size;
        self.max_target = max_target;
        self.fill = 0;
        self.consumed = 0;
        self.model.reset();
    }

    /// [`Decoder::resume`] in place.
    pub fn restart_at(&mut self, checkpoint: Checkpoint, base_size: u32, max_target: u32) -> Result<(), DeltaError> {
        if checkpoint.block_size == 0
            || checkpoint.block_size as usize > MAX_BLOCK
            || checkpoint.target_size > max_target
        {
            return Err(DeltaError::Header(format::HeaderError::Inconsistent));
        }
        self.restart([0; 32], base_size, max_target);
        self.consumed = checkpoint.patch_offset;
        self.ck = Some(checkpoint);
        Ok(())
    }

    /// The state at the last block boundary (`None` before the header is in).
    pub fn checkpoint(&self) -> Option<Checkpoint> {
        self.ck
    }

    /// The header, once read (not after a resume).
    pub fn header(&self) -> Option<Header> {
        (self.ck.is_some() && self.header[..4] == *format::MAGIC).then(|| Header::parse(&self.header).ok()).flatten()
    }

    /// Whether every block has been written.
    pub fn is_done(&self) -> bool {
        self.ck.is_some_and(|c| c.block >= c.blocks)
    }

    /// Feeds patch bytes; decodes every block they complete.
    pub fn push(&mut self, mut data: &[u8], base: &mut impl Base, sink: &mut impl Sink) -> Result<Status, DeltaError> {
        while !data.is_empty() {
            let Some(ck) = self.ck else {
                let take = (HEADER - self.fill).min(data.len());
                self.header[self.fill..self.fill + take].copy_from_slice(&data[..take]);
                self.fill += take;
                data = &data[take..];
                if self.fill == HEADER {
                    self.start()?;
                }
                continue;
            };
            if ck.block >= ck.blocks {
                return Err(DeltaError::TrailingBytes);
            }
            let need = if self.fill < BLOCK_HEADER { BLOCK_HEADER } else { BLOCK_HEADER + self.payload_len() };
            let take = (need - self.fill).min(data.len());
            let Some(room) = self.buf.as_mut().get_mut(self.fill..self.fill + take) else {
                return Err(DeltaError::Corrupt(ck.block));
            };
            room.copy_from_slice(&data[..take]);
            self.fill += take;
            data = &data[take..];
            if self.fill == BLOCK_HEADER && self.payload_len() > MAX_BLOCK {
                return Err(DeltaError::Corrupt(ck.block));
            }
            if self.fill >= BLOCK_HEADER && self.fill == BLOCK_HEADER + self.payload_len() {
                self.block(base, sink)?;
            }
        }
        Ok(if self.is_done() { Status::Done } else { Status::NeedMore })
    }

    /// Call when the patch has ended: an error if blocks are missing.
    pub fn finish(&self) -> Result<(), DeltaError> {
        if self.is_done() { Ok(()) } else { Err(DeltaError::Truncated) }
    }

    fn payload_len(&self) -> usize {
        format::parse_block_header(self.block_header()).1
    }

    fn block_header(&self) -> [u8; 2] {
        match self.buf.as_ref() {
            [a, b, ..] => [*a, *b],
            _ => [0, 0],
        }
    }

    fn start(&mut self) -> Result<(), DeltaError> {
        let h = Header::parse(&self.header).map_err(DeltaError::Header)?;
        if h.base_size != 0 {
            if h.base_sha256 != self.expected_base {
                return Err(DeltaError::WrongBase);
            }
            if h.base_size > self.base_size {
                return Err(DeltaError::BaseTooSmall);
            }
        }
        if h.target_size > self.max_target {
            return Err(DeltaError::TargetTooLarge);
        }
        self.base_size = h.base_size;
        self.consumed = HEADER as u32;
        self.fill = 0;
        self.ck = Some(Checkpoint {
            block: 0,
            patch_offset: HEADER as u32,
            output: 0,
            base_pos: 0,
            block_size: h.block_size,
            blocks: h.blocks,
            target_size: h.target_size,
        });
        Ok(())
    }

    /// Decodes the buffered block and advances the checkpoint.
    fn block(&mut self, base: &mut impl Base, sink: &mut impl Sink) -> Result<(), DeltaError> {
        let Some(mut ck) = self.ck else { return Err(DeltaError::Truncated) };
        let start = u64::from(ck.block) * u64::from(ck.block_size);
        let out_len = (u64::from(ck.target_size).saturating_sub(start)).min(u64::from(ck.block_size)) as usize;
        let len = self.payload_len();
        let corrupt = DeltaError::Corrupt(ck.block);
        let mode = format::parse_block_header(self.block_header()).0;
        let payload = self.buf.as_ref().get(BLOCK_HEADER..BLOCK_HEADER + len).ok_or(corrupt)?;
        match mode {
            MODE_STORED => {
                if len != out_len {
                    return Err(corrupt);
                }
                sink.write(payload).map_err(|_| DeltaError::Sink)?;
            }
            MODE_COPY => {
                let end = u64::from(ck.base_pos) + out_len as u64;
                if len != 0 || end > u64::from(self.base_size) {
                    return Err(corrupt);
                }
                let mut chunk = [0u8; OUT_CHUNK];
                let mut at = ck.base_pos;
                let mut left = out_len;
                while left > 0 {
                    let n = left.min(OUT_CHUNK);
                    base.read(at, &mut chunk[..n]).map_err(|_| DeltaError::Base)?;
                    sink.write(&chunk[..n]).map_err(|_| DeltaError::Sink)?;
                    at += n as u32;
                    left -= n;
                }
                ck.base_pos = at;
            }
            MODE_CODED => {
                self.model.reset();
                let base_pos = decode_block(payload, out_len, ck.base_pos, self.base_size, &mut self.model, base, sink)
                    .map_err(|e| match e {
                        BlockError::Corrupt => corrupt,
                        BlockError::Base => DeltaError::Base,
                        BlockError::Sink => DeltaError::Sink,
                    })?;
                ck.base_pos = base_pos;
            }
            _ => return Err(corrupt),
        }
        self.consumed = self.consumed.saturating_add((BLOCK_HEADER + len) as u32);
        ck.block += 1;
        ck.patch_offset = self.consumed;
        ck.output = ck.output.saturating_add(out_len as u32);
        self.ck = Some(ck);
        self.fill = 0;
        Ok(())
    }
}

enum BlockError {
    Corrupt,
    Base,
    Sink,
}

impl From<Corrupt> for BlockError {
    fn from(_: Corrupt) -> Self {
        Self::Corrupt
    }
}

/// Decodes one coded block of `out_len` output bytes; returns the new base cursor.
fn decode_block(
    payload: &[u8],
    out_len: usize,
    mut base_pos: u32,
    base_size: u32,
    m: &mut Model,
    base: &mut impl Base,
    sink: &mut impl Sink,
) -> Result<u32, BlockError> {
    let mut d = rc::Decoder::new(payload)?;
    let mut out = [0u8; OUT_CHUNK];
    let mut old = [0u8; OUT_CHUNK];
    let mut produced = 0usize;
    let mut prev_kind = format::KIND_ADD;
    let mut prev_zero = 1usize;
    let mut words = rc::WordContext::default();
    while produced < out_len {
        let kctx = prev_kind.min(format::KINDS - 1);
        let kind = if d.bit(&mut m.kind[kctx])? == 0 {
            format::KIND_ADD
        } else if d.bit(&mut m.kind2[kctx])? == 0 {
            format::KIND_EXTRA
        } else if d.bit(&mut m.kind3[kctx])? == 0 {
            format::KIND_ADD32
        } else {
            format::KIND_SCALED
        };
        let count = d.gamma(m.len.get_mut(kind).ok_or(BlockError::Corrupt)?)? as usize;
        // Word kinds count words.
        let len = if kind >= format::KIND_ADD32 { count.checked_mul(4).ok_or(BlockError::Corrupt)? } else { count };
        if len > out_len - produced {
            return Err(BlockError::Corrupt);
        }
        if kind == format::KIND_SCALED {
            if count > m.history_len {
                return Err(BlockError::Corrupt);
            }
            let factor = d.direct(32)?;
            let mut words = rc::WordContext::default();
            let mut k = 0usize;
            while k < count {
                let n = (count - k).min(OUT_CHUNK / 4);
                let history = m.history.get(k..k + n).ok_or(BlockError::Corrupt)?;
                for (o, &h) in out.chunks_exact_mut(4).zip(history) {
                    let v = format::scaled(h, factor).wrapping_add(d.word(&mut m.scaled, &mut words)?);
                    o.copy_from_slice(&v.to_le_bytes());
                }
                sink.write(&out[..4 * n]).map_err(|_| BlockError::Sink)?;
                k += n;
            }
            // As if it had read the base words in its place.
            base_pos = base_pos.checked_add(len as u32).ok_or(BlockError::Corrupt)?;
        } else if kind == format::KIND_EXTRA {
            let mut left = len;
            while left > 0 {
                let n = left.min(OUT_CHUNK);
                for o in out[..n].iter_mut() {
                    *o = d.tree_byte(&mut m.literal)?;
                }
                sink.write(&out[..n]).map_err(|_| BlockError::Sink)?;
                left -= n;
            }
        } else {
            let seek = format::unzigzag(d.gamma(&mut m.seek)? - 1);
            let pos = i64::from(base_pos) + seek;
            if pos < 0 || pos + len as i64 > i64::from(base_size) {
                return Err(BlockError::Corrupt);
            }
            base_pos = pos as u32;
            let multiplier = if kind == format::KIND_ADD32 && d.bit(&mut m.multiplied)? == 1 {
                Some(format::ONE + format::unzigzag(d.gamma(&mut m.multiplier)? - 1))
            } else {
                None
            };
            let mut history = 0usize;
            let mut left = len;
            while left > 0 {
                // A multiple of 4 (OUT_CHUNK is), so words never straddle chunks.
                let n = left.min(OUT_CHUNK);
                base.read(base_pos, &mut old[..n]).map_err(|_| BlockError::Base)?;
                if kind == format::KIND_ADD {
                    for (o, &b) in out[..n].iter_mut().zip(&old[..n]) {
                        let diff = d.signed(&mut m.diff, (prev_zero ^ 1) | (usize::from((b as i8) < 0) << 1))?;
                        prev_zero = usize::from(diff == 0);
                        *o = b.wrapping_add(diff);
                    }
                } else {
                    for (o, b) in out[..n].chunks_exact_mut(4).zip(old[..n].chunks_exact(4)) {
                        let w = u32::from_le_bytes(b.try_into().map_err(|_| BlockError::Corrupt)?);
                        let v = format::multiply(w, multiplier).wrapping_add(d.word(&mut m.word, &mut words)?);
                        o.copy_from_slice(&v.to_le_bytes());
                        if let Some(h) = m.history.get_mut(history) {
                            *h = v;
                            history += 1;
                        }
                    }
                }
                sink.write(&out[..n]).map_err(|_| BlockError::Sink)?;
                base_pos += n as u32;
                left -= n;
            }
            if kind == format::KIND_ADD32 {
                m.history_len = history;
            }
        }
        produced += len;
        prev_kind = kind;
    }
    Ok(base_pos)
}
