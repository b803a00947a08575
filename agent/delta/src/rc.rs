//! An adaptive binary range coder (the LZMA design: 32-bit range, 11-bit probabilities;
//! adaptation shift 4, faster than LZMA's 5, because every 4 KiB block starts from one
//! half) and the integer and byte codings built on it.
//!
//! Why this coder: fine-tuned int8 weights change by small amounts, so the delta bytes
//! are highly skewed but not repetitive; an adaptive arithmetic coder captures that skew
//! (LZ-style coders cannot), and its decoder needs only a few hundred bytes of
//! probabilities and no window.

/// Probability precision.
const BITS: u32 = 11;
/// Initial probability (one half).
pub const HALF: u16 = 1 << (BITS - 1);
const MOVE_BITS: u32 = 4;
const TOP: u32 = 1 << 24;

/// Decoding ran past the end of the block or met an impossible state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Corrupt;

/// Range decoder over one block of coded bytes.
pub struct Decoder<'a> {
    input: &'a [u8],
    pos: usize,
    range: u32,
    code: u32,
}

impl<'a> Decoder<'a> {
    /// Starts decoding `input` (5 initial bytes, the first always 0).
    pub fn new(input: &'a [u8]) -> Result<Self, Corrupt> {
        let mut d = Self { input, pos: 0, range: u32::MAX, code: 0 };
        if d.byte()? != 0 {
            return Err(Corrupt);
        }
        for _ in 0..4 {
            d.code = (d.code << 8) | u32::from(d.byte()?);
        }
        Ok(d)
    }

    fn byte(&mut self) -> Result<u8, Corrupt> {
        let b = *self.input.get(self.pos).ok_or(Corrupt)?;
        self.pos += 1;
        Ok(b)
    }

    fn normalize(&mut self) -> Result<(), Corrupt> {
        if self.range < TOP {
            self.range <<= 8;
            self.code = (self.code << 8) | u32::from(self.byte()?);
        }
        Ok(())
    }

    /// One bit with adaptive probability `p` (of a zero).
    pub fn bit(&mut self, p: &mut u16) -> Result<u32, Corrupt> {
        let bound = (self.range >> BITS) * u32::from(*p);
        let bit = if self.code < bound {
            self.range = bound;
            *p += ((1 << BITS) - *p) >> MOVE_BITS;
            0
        } else {
            self.range -= bound;
            self.code -= bound;
            *p -= *p >> MOVE_BITS;
            1
        };
        self.normalize()?;
        Ok(bit)
    }

    /// `count` bits with fixed probability one half, most significant first.
    pub fn direct(&mut self, count: u32) -> Result<u32, Corrupt> {
        let mut v = 0;
        for _ in 0..count {
            self.range >>= 1;
            let bit = u32::from(self.code >= self.range);
            if bit == 1 {
                self.code -= self.range;
            }
            v = (v << 1) | bit;
            self.normalize()?;
        }
        Ok(v)
    }

    /// A byte through a bit tree of 255 probabilities.
    pub fn tree_byte(&mut self, probs: &mut [u16; 256]) -> Result<u8, Corrupt> {
        let mut m: usize = 1;
        while m < 256 {
            m = (m << 1) | self.bit(&mut probs[m])? as usize;
        }
        Ok((m - 256) as u8)
    }

    /// An integer ≥ 1 in Elias-gamma form: the bit length in unary (adaptive, one
    /// probability per position), then the bits below the leading one (direct).
    pub fn gamma(&mut self, probs: &mut [u16; 32]) -> Result<u32, Corrupt> {
        let mut len = 0usize;
        while self.bit(&mut probs[len])? == 1 {
            len += 1;
            if len >= 31 {
                return Err(Corrupt);
            }
        }
        Ok((1 << len) | self.direct(len as u32)?)
    }
}

/// Probabilities of a small signed value: zero or not, sign, then a unary magnitude up
/// to [`UNARY`] and 7 direct bits beyond. Few probabilities, so they are learned within
/// a few hundred bytes, where a 255-entry bit tree would still be near one half.
#[derive(Clone)]
pub struct SignedModel {
    /// Zero or not, by context.
    pub zero: [u16; 2],
    /// Sign, by context (the sign of the base byte for differences).
    pub sign: [u16; 2],
    /// Unary magnitude steps.
    pub magnitude: [u16; UNARY],
    /// Escaped magnitudes (beyond the unary part), as a bit tree of 7 bits.
    pub escape: [u16; 128],
}

/// Magnitudes coded in unary before the escape.
pub const UNARY: usize = 8;

impl SignedModel {
    /// All at one half.
    pub const fn new() -> Self {
        Self { zero: [HALF; 2], sign: [HALF; 2], magnitude: [HALF; UNARY], escape: [HALF; 128] }
    }
}

impl Default for SignedModel {
    fn default() -> Self {
        Self::new()
    }
}

impl Decoder<'_> {
    /// A signed byte coded by [`Encoder::signed`].
    pub fn signed(&mut self, m: &mut SignedModel, ctx: usize) -> Result<u8, Corrupt> {
        if self.bit(&mut m.zero[ctx & 1])? == 0 {
            return Ok(0);
        }
        let negative = self.bit(&mut m.sign[(ctx >> 1) & 1])? == 1;
        let mut magnitude = 1u32;
        while (magnitude as usize) <= UNARY && self.bit(&mut m.magnitude[magnitude as usize - 1])? == 1 {
            magnitude += 1;
        }
        if magnitude as usize > UNARY {
            let mut m7: usize = 1;
            while m7 < 128 {
                m7 = (m7 << 1) | self.bit(&mut m.escape[m7])? as usize;
            }
            magnitude = UNARY as u32 + 1 + (m7 - 128) as u32;
        }
        if magnitude > 128 || (!negative && magnitude == 128) {
            return Err(Corrupt);
        }
        let v = if negative { -(magnitude as i32) } else { magnitude as i32 };
        Ok(v as i8 as u8)
    }
}

/// Range encoder (host side).
#[cfg(feature = "encode")]
pub struct Encoder {
    low: u64,
    range: u32,
    cache: u8,
    cache_size: u64,
    out: Vec<u8>,
}

#[cfg(feature = "encode")]
impl Default for Encoder {
    fn default() -> Self {
        Self { low: 0, range: u32::MAX, cache: 0, cache_size: 1, out: Vec::new() }
    }
}

#[cfg(feature = "encode")]
impl Encoder {
    fn shift_low(&mut self) {
        if self.low < 0xFF00_0000 || self.low > 0xFFFF_FFFF {
            let carry = (self.low >> 32) as u8;
            let mut temp = self.cache;
            loop {
                self.out.push(temp.wrapping_add(carry));
                temp = 0xFF;
                self.cache_size -= 1;
                if self.cache_size == 0 {
                    break;
                }
            }
            self.cache = ((self.low >> 24) & 0xFF) as u8;
        }
        self.cache_size += 1;
        self.low = (self.low & 0x00FF_FFFF) << 8;
    }

    /// One bit with adaptive probability `p`.
    pub fn bit(&mut self, p: &mut u16, bit: u32) {
        let bound = (self.range >> BITS) * u32::from(*p);
        if bit == 0 {
            self.range = bound;
            *p += ((1 << BITS) - *p) >> MOVE_BITS;
        } else {
            self.low += u64::from(bound);
            self.range -= bound;
            *p -= *p >> MOVE_BITS;
        }
        while self.range < TOP {
            self.range <<= 8;
            self.shift_low();
        }
    }

    /// `count` bits of `value` with probability one half, most significant first.
    pub fn direct(&mut self, value: u32, count: u32) {
        for i in (0..count).rev() {
            self.range >>= 1;
            if (value >> i) & 1 == 1 {
                self.low += u64::from(self.range);
            }
            while self.range < TOP {
                self.range <<= 8;
                self.shift_low();
            }
        }
    }

    /// A byte through a bit tree.
    pub fn tree_byte(&mut self, probs: &mut [u16; 256], byte: u8) {
        let mut m: usize = 1;
        for i in (0..8).rev() {
            let bit = u32::from((byte >> i) & 1);
            self.bit(&mut probs[m], bit);
            m = (m << 1) | bit as usize;
        }
    }

    /// An integer ≥ 1 in Elias-gamma form.
    pub fn gamma(&mut self, probs: &mut [u16; 32], value: u32) {
        debug_assert!(value >= 1);
        let len = 31 - value.leading_zeros() as usize;
        for p in probs.iter_mut().take(len) {
            self.bit(p, 1);
        }
        self.bit(&mut probs[len], 0);
        self.direct(value & ((1 << len) - 1), len as u32);
    }

    /// A signed byte (two's complement) through a [`SignedModel`].
    pub fn signed(&mut self, m: &mut SignedModel, ctx: usize, value: u8) {
        let v = i32::from(value as i8);
        if v == 0 {
            self.bit(&mut m.zero[ctx & 1], 0);
            return;
        }
        self.bit(&mut m.zero[ctx & 1], 1);
        self.bit(&mut m.sign[(ctx >> 1) & 1], u32::from(v < 0));
        let magnitude = v.unsigned_abs();
        for k in 1..=UNARY as u32 {
            if magnitude > k {
                self.bit(&mut m.magnitude[k as usize - 1], 1);
            } else {
                self.bit(&mut m.magnitude[k as usize - 1], 0);
                return;
            }
        }
        let rest = magnitude - UNARY as u32 - 1;
        let mut m7: usize = 1;
        for i in (0..7).rev() {
            let bit = (rest >> i) & 1;
            self.bit(&mut m.escape[m7], bit);
            m7 = (m7 << 1) | bit as usize;
        }
    }

    /// Flushes and returns the coded bytes.
    pub fn finish(mut self) -> Vec<u8> {
        for _ in 0..5 {
            self.shift_low();
        }
        self.out
    }
}
