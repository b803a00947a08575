//! An adaptive binary range coder (the LZMA design: 32-bit range, 11-bit probabilities;
//! adaptation shift 4, faster than LZMA's 5, because every block starts from one half;
//! and two-speed mixed probabilities for int8 differences) and the integer, word and byte
//! codings built on it.
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
/// Adaptation shifts of the two estimates of a [`Mixed`] probability.
const FAST: u32 = 3;
const SLOW: u32 = 6;

/// A probability kept as two estimates, one adapting fast and one slowly, coded with
/// their mean: int8 differences drift in spread from channel to channel (the fast one
/// follows) around a stable shape (the slow one holds it).
pub type Mixed = [u16; 2];
/// Precision of the two estimates (finer than the coder's, so that the slow one can
/// still approach 0 and 1).
const MIXED_BITS: u32 = 15;
/// Both estimates at one half.
pub const MIXED_HALF: Mixed = [1 << (MIXED_BITS - 1); 2];

/// The coding probability of a [`Mixed`]: the mean of its estimates at the coder's
/// precision, kept within the range one decoder normalization step allows (as 11-bit
/// probabilities under shift 4 are).
fn mixed(p: &Mixed) -> u32 {
    ((u32::from(p[0]) + u32::from(p[1])) >> (MIXED_BITS + 1 - BITS)).clamp(MIXED_MIN, (1 << BITS) - MIXED_MIN)
}

/// Smallest coding probability of a [`Mixed`].
const MIXED_MIN: u32 = 1;

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
        for _ in 0..4 {
            d.code = (d.code << 8) | u32::from(d.byte()?);
        }
        Ok(d)
    }

    /// The next input byte; past the end, zeros (the encoder drops trailing zero bytes).
    fn byte(&mut self) -> Result<u8, Corrupt> {
        let b = self.input.get(self.pos).copied().unwrap_or(0);
        self.pos = self.pos.saturating_add(1);
        Ok(b)
    }

    fn normalize(&mut self) -> Result<(), Corrupt> {
        // At most twice: a bit leaves at least (2^24 >> 11) * 1 of the range.
        while self.range < TOP {
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

    /// One bit under a [`Mixed`] probability: the mean of a fast and a slow estimate.
    pub fn bit2(&mut self, p: &mut Mixed) -> Result<u32, Corrupt> {
        let bound = (self.range >> BITS) * mixed(p);
        let bit = if self.code < bound {
            self.range = bound;
            p[0] += ((1 << MIXED_BITS) - p[0]) >> FAST;
            p[1] += ((1 << MIXED_BITS) - p[1]) >> SLOW;
            0
        } else {
            self.range -= bound;
            self.code -= bound;
            p[0] -= p[0] >> FAST;
            p[1] -= p[1] >> SLOW;
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
    pub zero: [Mixed; 2],
    /// Sign, by context (the sign of the base byte for differences).
    pub sign: [Mixed; 2],
    /// Unary magnitude steps.
    pub magnitude: [Mixed; UNARY],
    /// Escaped magnitudes (beyond the unary part), as a bit tree of 7 bits.
    pub escape: [u16; 128],
}

/// Magnitudes coded in unary before the escape.
pub const UNARY: usize = 8;

impl SignedModel {
    /// All at one half.
    pub const fn new() -> Self {
        Self { zero: [MIXED_HALF; 2], sign: [MIXED_HALF; 2], magnitude: [MIXED_HALF; UNARY], escape: [HALF; 128] }
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
        if self.bit2(&mut m.zero[ctx & 1])? == 0 {
            return Ok(0);
        }
        let negative = self.bit2(&mut m.sign[(ctx >> 1) & 1])? == 1;
        let mut magnitude = 1u32;
        while (magnitude as usize) <= UNARY && self.bit2(&mut m.magnitude[magnitude as usize - 1])? == 1 {
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

/// Probabilities of a 32-bit word difference (`new − base` of little-endian words,
/// wrapping): zero or not (context: previous difference zero), sign (context: previous
/// sign), the bit length of the magnitude through a 5-bit tree (context: whether the
/// previous magnitude was long), the bit below the leading one (context: bit length),
/// then the remaining bits direct. Float32 scales and int32 biases of a fine-tune move by
/// amounts whose bit length is stable within a tensor but whose low bits are noise.
#[derive(Clone)]
pub struct WordModel {
    /// Zero or not, by previous zero-ness.
    pub zero: [u16; 2],
    /// Sign, by previous sign.
    pub sign: [u16; 2],
    /// Bit length minus one (0..=31), as a 5-bit tree, by previous length class.
    pub length: [[u16; 32]; 2],
    /// The bit below the leading one, by bit length.
    pub top: [u16; 32],
}

/// A previous magnitude at least this many bits long selects the second length context.
pub const LONG_WORD: u32 = 13;

impl WordModel {
    /// All at one half.
    pub const fn new() -> Self {
        Self { zero: [HALF; 2], sign: [HALF; 2], length: [[HALF; 32]; 2], top: [HALF; 32] }
    }
}

impl Default for WordModel {
    fn default() -> Self {
        Self::new()
    }
}

/// What a word difference leaves as context for the next one.
#[derive(Clone, Copy, Default)]
pub struct WordContext {
    /// Previous difference was not zero.
    pub nonzero: usize,
    /// Previous nonzero difference was negative.
    pub negative: usize,
    /// Previous nonzero magnitude was long (≥ [`LONG_WORD`] bits).
    pub long: usize,
}

impl WordContext {
    fn update(&mut self, d: u32) {
        self.nonzero = usize::from(d != 0);
        if d != 0 {
            let negative = (d as i32) < 0;
            let magnitude = if negative { d.wrapping_neg() } else { d };
            self.negative = usize::from(negative);
            self.long = usize::from(32 - magnitude.leading_zeros() >= LONG_WORD);
        }
    }
}

impl Decoder<'_> {
    /// A word difference coded by [`Encoder::word`].
    pub fn word(&mut self, m: &mut WordModel, c: &mut WordContext) -> Result<u32, Corrupt> {
        if self.bit(&mut m.zero[c.nonzero & 1])? == 0 {
            c.update(0);
            return Ok(0);
        }
        let negative = self.bit(&mut m.sign[c.negative & 1])? == 1;
        let tree = &mut m.length[c.long & 1];
        let mut t: usize = 1;
        while t < 32 {
            t = (t << 1) | self.bit(tree.get_mut(t).ok_or(Corrupt)?)? as usize;
        }
        let len = (t - 32) as u32; // bits below the leading one
        let mut magnitude: u32 = 1;
        if len > 0 {
            let top = self.bit(m.top.get_mut(len as usize).ok_or(Corrupt)?)?;
            magnitude = ((2 | top) << (len - 1)) | self.direct(len - 1)?;
        }
        let d = if negative { magnitude.wrapping_neg() } else { magnitude };
        c.update(d);
        Ok(d)
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

    /// One bit under a [`Mixed`] probability.
    pub fn bit2(&mut self, p: &mut Mixed, bit: u32) {
        let pm = mixed(p);
        let bound = (self.range >> BITS) * pm;
        if bit == 0 {
            self.range = bound;
            p[0] += ((1 << MIXED_BITS) - p[0]) >> FAST;
            p[1] += ((1 << MIXED_BITS) - p[1]) >> SLOW;
        } else {
            self.low += u64::from(bound);
            self.range -= bound;
            p[0] -= p[0] >> FAST;
            p[1] -= p[1] >> SLOW;
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
            self.bit2(&mut m.zero[ctx & 1], 0);
            return;
        }
        self.bit2(&mut m.zero[ctx & 1], 1);
        self.bit2(&mut m.sign[(ctx >> 1) & 1], u32::from(v < 0));
        let magnitude = v.unsigned_abs();
        for k in 1..=UNARY as u32 {
            if magnitude > k {
                self.bit2(&mut m.magnitude[k as usize - 1], 1);
            } else {
                self.bit2(&mut m.magnitude[k as usize - 1], 0);
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

    /// A 32-bit word difference through a [`WordModel`].
    pub fn word(&mut self, m: &mut WordModel, c: &mut WordContext, d: u32) {
        if d == 0 {
            self.bit(&mut m.zero[c.nonzero & 1], 0);
            c.update(0);
            return;
        }
        self.bit(&mut m.zero[c.nonzero & 1], 1);
        let negative = (d as i32) < 0;
        self.bit(&mut m.sign[c.negative & 1], u32::from(negative));
        let magnitude = if negative { d.wrapping_neg() } else { d };
        let len = 31 - magnitude.leading_zeros(); // bits below the leading one
        let tree = &mut m.length[c.long & 1];
        let mut t: usize = 1;
        for i in (0..5).rev() {
            let bit = (len >> i) & 1;
            self.bit(&mut tree[t], bit);
            t = (t << 1) | bit as usize;
        }
        if len > 0 {
            self.bit(&mut m.top[len as usize], (magnitude >> (len - 1)) & 1);
            self.direct(magnitude & ((1 << (len - 1)) - 1), len - 1);
        }
        c.update(d);
    }

    /// Flushes and returns the coded bytes.
    /// Flushes and returns the coded bytes: the value in the final interval with the most
    /// trailing zero bits, without the leading byte (always 0 in this design) and without
    /// trailing zero bytes (the decoder reads zeros past the end).
    pub fn finish(mut self) -> Vec<u8> {
        let end = self.low + u64::from(self.range);
        for bits in (1..=32).rev() {
            let mask = (1u64 << bits) - 1;
            let v = (self.low + mask) & !mask;
            if v < end {
                self.low = v;
                break;
            }
        }
        for _ in 0..5 {
            self.shift_low();
        }
        debug_assert_eq!(self.out.first(), Some(&0));
        self.out.remove(0);
        while self.out.last() == Some(&0) {
            self.out.pop();
        }
        self.out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn words_round_trip(values: &[u32]) {
        let (mut m, mut c) = (WordModel::new(), WordContext::default());
        let mut e = Encoder::default();
        for &v in values {
            e.word(&mut m, &mut c, v);
        }
        let bytes = e.finish();
        let (mut m, mut c) = (WordModel::new(), WordContext::default());
        let d = Decoder::new(&bytes);
        assert!(d.is_ok());
        let Ok(mut d) = d else { return };
        for &v in values {
            assert_eq!(d.word(&mut m, &mut c), Ok(v));
        }
    }

    #[test]
    fn word_edges_round_trip() {
        words_round_trip(&[0, 1, 2, 3, u32::MAX, 0x8000_0000, 0x7fff_ffff, 0x8000_0001, 1 << 20, 0, 0, 5]);
    }

    #[test]
    fn mixed_bits_survive_long_runs() {
        // Long runs drive the mixed probability to its floor, where a bit needs two
        // normalization steps.
        let bits: Vec<u32> = (0..20_000u32).map(|i| u32::from(i % 5000 == 4999)).collect();
        let mut p = [MIXED_HALF; 1];
        let mut e = Encoder::default();
        for &b in &bits {
            e.bit2(&mut p[0], b);
        }
        let bytes = e.finish();
        assert!(bytes.len() < 64, "{} bytes", bytes.len());
        let mut p = [MIXED_HALF; 1];
        let d = Decoder::new(&bytes);
        assert!(d.is_ok());
        let Ok(mut d) = d else { return };
        for &b in &bits {
            assert_eq!(d.bit2(&mut p[0]), Ok(b));
        }
    }

    proptest! {
        #[test]
        fn words_round_trip_any(values in proptest::collection::vec(any::<u32>(), 0..300),
                                small in proptest::collection::vec(-2000i32..2000, 0..300)) {
            let mut all = values;
            all.extend(small.iter().map(|&v| v as u32));
            words_round_trip(&all);
        }

        #[test]
        fn signed_round_trip_any(values in proptest::collection::vec(any::<u8>(), 0..2000)) {
            let mut m = SignedModel::new();
            let mut e = Encoder::default();
            for (i, &v) in values.iter().enumerate() {
                e.signed(&mut m, i % 4, v);
            }
            let bytes = e.finish();
            let mut m = SignedModel::new();
            let Ok(mut d) = Decoder::new(&bytes) else { return Err(TestCaseError::fail("no decoder")) };
            for (i, &v) in values.iter().enumerate() {
                prop_assert_eq!(d.signed(&mut m, i % 4), Ok(v));
            }
        }

        #[test]
        fn any_bytes_decode_without_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let Ok(mut d) = Decoder::new(&bytes) else { return Ok(()) };
            let (mut w, mut c, mut s) = (WordModel::new(), WordContext::default(), SignedModel::new());
            let mut p = MIXED_HALF;
            for i in 0..400 {
                let r = match i % 3 {
                    0 => d.word(&mut w, &mut c).map(|_| ()),
                    1 => d.signed(&mut s, i % 4).map(|_| ()),
                    _ => d.bit2(&mut p).map(|_| ()),
                };
                if r.is_err() {
                    break;
                }
            }
        }
    }
}
