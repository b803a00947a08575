//! The patch format, version 1 (codec 1). All integers little-endian.
//!
//! ```text
//! header (88 bytes)
//!   0  4  magic "MDLT"
//!   4  1  format version = 1
//!   5  1  codec = 1
//!   6  2  reserved, 0
//!   8  4  block size: output bytes per block (the last block may be shorter), ≤ 4096
//!  12  4  block count
//!  16  4  target size
//!  20  4  base size (0: a full-image patch, no base is read)
//!  24 32  base sha256 (zeros for a full-image patch)
//!  56 32  target sha256
//! blocks, in output order
//!   0  1  mode: 0 coded, 1 stored
//!   1  2  payload length (≤ 4096)
//!   3  …  payload: the block's output bytes (stored) or its coded operations (coded)
//! ```
//!
//! A coded block is one range-coder stream (`rc`), its probabilities reset to one half at
//! the block's start, holding operations until the block's output is complete:
//! `kind` (adaptive bit, context: previous kind; 0 ADD, 1 EXTRA), `length` (gamma,
//! per-kind contexts), and then for ADD a base seek (zig-zag, gamma) relative to the base
//! cursor and `length` difference bytes (`new − base` as a signed byte: zero flag with the
//! previous difference's zero-ness as context, sign, unary magnitude up to 8, then a 7-bit
//! tree; few probabilities, so short blocks learn them), for EXTRA `length` literal bytes
//! (bit tree). Operations
//! never cross a block boundary, and blocks share nothing but the base cursor, so a
//! decoder can resume at any block from a 28-byte checkpoint.

/// Magic bytes.
pub const MAGIC: &[u8; 4] = b"MDLT";
/// Format version.
pub const VERSION: u8 = 1;
/// The only codec: block-coded ADD/EXTRA operations under an adaptive range coder.
pub const CODEC: u8 = 1;
/// Header length.
pub const HEADER: usize = 88;
/// Block header length (mode, payload length).
pub const BLOCK_HEADER: usize = 3;
/// Largest block size and largest block payload.
pub const MAX_BLOCK: usize = 4096;
/// Block modes.
pub const MODE_CODED: u8 = 0;
/// Stored block: the payload is the output.
pub const MODE_STORED: u8 = 1;

/// A parsed header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Output bytes per block.
    pub block_size: u32,
    /// Number of blocks.
    pub blocks: u32,
    /// Size of the rebuilt image.
    pub target_size: u32,
    /// Size of the base (0 for a full-image patch).
    pub base_size: u32,
    /// SHA-256 of the base.
    pub base_sha256: [u8; 32],
    /// SHA-256 of the target.
    pub target_sha256: [u8; 32],
}

/// Why a header is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeaderError {
    /// Not a mota-delta patch.
    Magic,
    /// A format version or codec this build does not decode.
    Unsupported,
    /// Sizes that contradict each other.
    Inconsistent,
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    b.get(at..at + 4).map_or(0, |s| u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
}

impl Header {
    /// Parses and checks the first [`HEADER`] bytes of a patch.
    pub fn parse(b: &[u8; HEADER]) -> Result<Self, HeaderError> {
        if &b[..4] != MAGIC {
            return Err(HeaderError::Magic);
        }
        if b[4] != VERSION || b[5] != CODEC {
            return Err(HeaderError::Unsupported);
        }
        let mut base_sha256 = [0u8; 32];
        base_sha256.copy_from_slice(&b[24..56]);
        let mut target_sha256 = [0u8; 32];
        target_sha256.copy_from_slice(&b[56..88]);
        let h = Self {
            block_size: u32_at(b, 8),
            blocks: u32_at(b, 12),
            target_size: u32_at(b, 16),
            base_size: u32_at(b, 20),
            base_sha256,
            target_sha256,
        };
        let bs = h.block_size as usize;
        let expected_blocks = h.target_size.div_ceil(h.block_size.max(1));
        if bs == 0 || bs > MAX_BLOCK || h.blocks != expected_blocks {
            return Err(HeaderError::Inconsistent);
        }
        Ok(h)
    }

    /// Output length of block `i`.
    pub fn block_len(&self, i: u32) -> usize {
        let start = u64::from(i) * u64::from(self.block_size);
        (u64::from(self.target_size).saturating_sub(start)).min(u64::from(self.block_size)) as usize
    }

    /// Encodes the header.
    pub fn to_bytes(&self) -> [u8; HEADER] {
        let mut b = [0u8; HEADER];
        b[..4].copy_from_slice(MAGIC);
        b[4] = VERSION;
        b[5] = CODEC;
        b[8..12].copy_from_slice(&self.block_size.to_le_bytes());
        b[12..16].copy_from_slice(&self.blocks.to_le_bytes());
        b[16..20].copy_from_slice(&self.target_size.to_le_bytes());
        b[20..24].copy_from_slice(&self.base_size.to_le_bytes());
        b[24..56].copy_from_slice(&self.base_sha256);
        b[56..88].copy_from_slice(&self.target_sha256);
        b
    }
}

/// The adaptive probabilities of one coded block.
pub struct Model {
    /// Operation kind, by previous kind.
    pub kind: [u16; 2],
    /// Lengths, by kind.
    pub len: [[u16; 32]; 2],
    /// Base seeks.
    pub seek: [u16; 32],
    /// Difference bytes (context: whether the previous difference was zero).
    pub diff: crate::rc::SignedModel,
    /// Literal bytes.
    pub literal: [u16; 256],
}

impl Model {
    /// All probabilities at one half.
    pub const fn new() -> Self {
        use crate::rc::HALF;
        Self {
            kind: [HALF; 2],
            len: [[HALF; 32]; 2],
            seek: [HALF; 32],
            diff: crate::rc::SignedModel::new(),
            literal: [HALF; 256],
        }
    }
}

impl Model {
    /// Back to one half everywhere, in place (no 2 KiB temporary on the stack).
    pub fn reset(&mut self) {
        use crate::rc::HALF;
        self.kind.fill(HALF);
        self.len.iter_mut().for_each(|l| l.fill(HALF));
        self.seek.fill(HALF);
        self.diff = crate::rc::SignedModel::new();
        self.literal.fill(HALF);
    }
}

impl Default for Model {
    fn default() -> Self {
        Self::new()
    }
}

/// Zig-zag: signed seeks as unsigned (0, -1, 1, -2, ...).
pub fn zigzag(v: i64) -> u32 {
    ((v << 1) ^ (v >> 63)) as u32
}

/// Inverse of [`zigzag`].
pub fn unzigzag(v: u32) -> i64 {
    i64::from(v >> 1) ^ -i64::from(v & 1)
}
