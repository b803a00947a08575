//! The CBOR codec of the contract, written by hand.
//!
//! Why not a library: minicbor's derive, used until issue 19, cost about 9.5 KB of flash
//! on a Cortex-M4 (thumbv7em, opt-level "z"), a fifth of the device's 48 KiB budget, for
//! a handful of fixed types whose bytes are pinned anyway by the vectors under
//! `tests/vectors/` and checked by an independent decoder (`crosscheck.py`, cbor2).
//! ciborium and serde_cbor need `alloc` and serde, which the device has neither of. The
//! contract uses only unsigned integers, byte and text strings, maps with integer keys,
//! tags, booleans and `null`, so that is all this module writes and reads (other items
//! are only skipped, as unknown map values).
//!
//! Shape of the code, for size: each wire type lists its fields once, in key order, for
//! the encoder ([`Encoder::map`]: a slice of `&dyn Encode`, an absent `Option` field is
//! left out) and for the decoder ([`Decoder::map`]: a slice of `&mut dyn Slot`), and one
//! loop on each side does the rest. There is one concrete [`Encoder`], whose output is
//! a buffer, a counter, or a comparison with expected bytes (how canonical form is
//! checked: the decoded value is re-encoded against the input, so there is no second,
//! stricter decoder to keep in step).
//!
//! What the decoder accepts is what minicbor's derived decoders accepted before it:
//! definite and indefinite maps, integer arguments in any width (canonical types refuse
//! the non-minimal ones through the re-encoding), integer map keys, unknown keys skipped,
//! a later duplicate key replacing an earlier one, `null` for an optional field, and
//! strings of definite length only. It never panics and checks every length against the
//! input; nesting in skipped values is bounded by [`MAX_SKIP_DEPTH`].

/// The input is not CBOR of the expected shape (details are not kept: every cause is
/// reported as [`crate::DecodeError::Malformed`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Malformed;

impl From<Malformed> for crate::DecodeError {
    fn from(_: Malformed) -> Self {
        Self::Malformed
    }
}

/// Deepest nesting of arrays, maps and tags inside a skipped (unknown) value.
pub const MAX_SKIP_DEPTH: u8 = 16;

const UINT: u8 = 0;
const NINT: u8 = 1;
const BYTES: u8 = 2;
const TEXT: u8 = 3;
const ARRAY: u8 = 4;
const MAP: u8 = 5;
const TAG: u8 = 6;
const SIMPLE: u8 = 7;
const FALSE: u8 = 0xf4;
const TRUE: u8 = 0xf5;
const NULL: u8 = 0xf6;
const BREAK: u8 = 0xff;

/// Where an [`Encoder`]'s bytes go.
enum Out<'b> {
    /// Nowhere: only their number matters.
    Count,
    /// Into a buffer.
    Write(&'b mut [u8]),
    /// Compared with these bytes.
    Expect(&'b [u8]),
}

/// Writes CBOR in its deterministic form (RFC 8949 §4.2.1: shortest arguments,
/// definite lengths; map keys are written in the order given, which is ascending).
pub struct Encoder<'b> {
    out: Out<'b>,
    len: usize,
    ok: bool,
}

impl<'b> Encoder<'b> {
    fn new(out: Out<'b>) -> Self {
        Self { out, len: 0, ok: true }
    }

    fn put(&mut self, bytes: &[u8]) {
        let Some(end) = self.len.checked_add(bytes.len()) else {
            self.ok = false;
            return;
        };
        match &mut self.out {
            Out::Count => {}
            Out::Write(buf) => match buf.get_mut(self.len..end) {
                Some(dst) => dst.iter_mut().zip(bytes).for_each(|(d, s)| *d = *s),
                None => self.ok = false,
            },
            Out::Expect(expected) => {
                if expected.get(self.len..end) != Some(bytes) {
                    self.ok = false;
                }
            }
        }
        self.len = end;
    }

    /// An item head: major type and argument, in the shortest form.
    fn head(&mut self, major: u8, arg: u64) {
        let (info, n) = match arg {
            0..=23 => (arg as u8, 0),
            24..=0xff => (24, 1),
            0x100..=0xffff => (25, 2),
            0x1_0000..=0xffff_ffff => (26, 4),
            _ => (27, 8),
        };
        self.put(&[major << 5 | info]);
        self.put(arg.to_be_bytes().get(8 - n..).unwrap_or(&[]));
    }

    /// An unsigned integer.
    pub fn uint(&mut self, v: u64) {
        self.head(UINT, v);
    }

    /// A byte string.
    pub fn bytes(&mut self, v: &[u8]) {
        self.head(BYTES, v.len() as u64);
        self.put(v);
    }

    /// A text string.
    pub fn text(&mut self, v: &str) {
        self.head(TEXT, v.len() as u64);
        self.put(v.as_bytes());
    }

    /// A tag; the tagged item follows.
    pub fn tag(&mut self, tag: u64) {
        self.head(TAG, tag);
    }

    /// A map whose key `i` holds `fields[i]`; absent fields (a `None`) are left out.
    pub fn map(&mut self, fields: &[&dyn Encode]) {
        self.head(MAP, fields.iter().filter(|f| !f.absent()).count() as u64);
        for (key, field) in fields.iter().enumerate() {
            if !field.absent() {
                self.uint(key as u64);
                field.encode(self);
            }
        }
    }
}

/// The number of bytes `value` encodes to.
pub fn encoded_len(value: &dyn Encode) -> usize {
    let mut e = Encoder::new(Out::Count);
    value.encode(&mut e);
    e.len
}

/// Encodes `value` into `buf`; the length written, or `None` when it does not fit.
pub fn encode_into(value: &dyn Encode, buf: &mut [u8]) -> Option<usize> {
    let mut e = Encoder::new(Out::Write(buf));
    value.encode(&mut e);
    e.ok.then_some(e.len)
}

/// Whether `value` encodes to exactly `bytes`.
pub fn encodes_to(value: &dyn Encode, bytes: &[u8]) -> bool {
    let mut e = Encoder::new(Out::Expect(bytes));
    value.encode(&mut e);
    e.ok && e.len == bytes.len()
}

/// Encodes `value` into a new vector (host tests and the testkit).
#[cfg(all(feature = "std", any(test, feature = "_testkit")))]
pub fn to_vec(value: &dyn Encode) -> Vec<u8> {
    let mut buf = vec![0; encoded_len(value)];
    let n = encode_into(value, &mut buf).unwrap_or(0);
    buf.truncate(n);
    buf
}

/// A value with a CBOR encoding.
pub trait Encode {
    /// Writes the value.
    fn encode(&self, e: &mut Encoder<'_>);

    /// Whether the value is left out of a map (only a `None` is).
    fn absent(&self) -> bool {
        false
    }
}

/// A value with a CBOR decoding, borrowing from the input.
pub trait Decode<'a>: Sized {
    /// Whether a map may lack the field (only an `Option` may).
    const OPTIONAL: bool = false;

    /// Reads the value.
    fn decode(d: &mut Decoder<'a>) -> Result<Self, Malformed>;
}

/// A field being decoded: [`Decoder::map`] fills it from the value under its key.
pub trait Slot<'a> {
    /// Decodes the field's value from `d` into the field.
    fn fill(&mut self, d: &mut Decoder<'a>) -> Result<(), Malformed>;
    /// Whether the map may lack the field.
    fn optional(&self) -> bool;
}

impl<'a, T: Decode<'a>> Slot<'a> for T {
    fn fill(&mut self, d: &mut Decoder<'a>) -> Result<(), Malformed> {
        *self = T::decode(d)?;
        Ok(())
    }

    fn optional(&self) -> bool {
        T::OPTIONAL
    }
}

/// Reads CBOR from a byte slice, borrowing strings from it.
pub struct Decoder<'a> {
    input: &'a [u8],
    pos: usize,
}

impl<'a> Decoder<'a> {
    /// A decoder at the start of `input`.
    pub fn new(input: &'a [u8]) -> Self {
        Self { input, pos: 0 }
    }

    /// Whether all the input has been read.
    pub fn at_end(&self) -> bool {
        self.pos >= self.input.len()
    }

    fn peek(&self) -> Result<u8, Malformed> {
        self.input.get(self.pos).copied().ok_or(Malformed)
    }

    /// Consumes the next byte if it is `b`.
    fn eat(&mut self, b: u8) -> bool {
        let hit = self.peek() == Ok(b);
        if hit {
            self.pos += 1;
        }
        hit
    }

    fn take(&mut self, n: u64) -> Result<&'a [u8], Malformed> {
        let n = usize::try_from(n).map_err(|_| Malformed)?;
        let end = self.pos.checked_add(n).ok_or(Malformed)?;
        let bytes = self.input.get(self.pos..end).ok_or(Malformed)?;
        self.pos = end;
        Ok(bytes)
    }

    /// An item head: its major type and argument (`None`: indefinite length, or a
    /// break when the major type is 7).
    fn head(&mut self) -> Result<(u8, Option<u64>), Malformed> {
        let first = self.peek()?;
        self.pos += 1;
        let info = first & 0x1f;
        let arg = match info {
            0..=23 => Some(u64::from(info)),
            24..=27 => Some(self.take(1 << (info - 24))?.iter().fold(0, |acc, &b| acc << 8 | u64::from(b))),
            31 => None,
            _ => return Err(Malformed),
        };
        Ok((first >> 5, arg))
    }

    /// The argument of an item of major type `major` with a definite argument.
    fn argument_of(&mut self, major: u8) -> Result<u64, Malformed> {
        match self.head()? {
            (m, Some(arg)) if m == major => Ok(arg),
            _ => Err(Malformed),
        }
    }

    /// An unsigned integer.
    pub fn uint(&mut self) -> Result<u64, Malformed> {
        self.argument_of(UINT)
    }

    /// A byte string of definite length.
    pub fn bytes(&mut self) -> Result<&'a [u8], Malformed> {
        let n = self.argument_of(BYTES)?;
        self.take(n)
    }

    /// A UTF-8 text string of definite length.
    pub fn text(&mut self) -> Result<&'a str, Malformed> {
        let n = self.argument_of(TEXT)?;
        core::str::from_utf8(self.take(n)?).map_err(|_| Malformed)
    }

    /// A boolean.
    pub fn bool(&mut self) -> Result<bool, Malformed> {
        if self.eat(TRUE) {
            Ok(true)
        } else if self.eat(FALSE) {
            Ok(false)
        } else {
            Err(Malformed)
        }
    }

    /// Consumes a `null` if one comes next.
    pub fn null(&mut self) -> bool {
        self.eat(NULL)
    }

    /// The tag `expected`.
    pub fn tag(&mut self, expected: u64) -> Result<(), Malformed> {
        if self.argument_of(TAG)? == expected { Ok(()) } else { Err(Malformed) }
    }

    /// A map header: the number of entries, `None` for an indefinite map.
    pub fn map_header(&mut self) -> Result<Option<u64>, Malformed> {
        match self.head()? {
            (MAP, len) => Ok(len),
            _ => Err(Malformed),
        }
    }

    /// A map with integer keys: the value under key `i` fills `slots[i]`, the value of
    /// any other key is skipped. Every slot that is not optional must be filled.
    pub fn map(&mut self, slots: &mut [&mut dyn Slot<'a>]) -> Result<(), Malformed> {
        let mut left = self.map_header()?;
        let mut seen = 0u64;
        loop {
            match &mut left {
                Some(0) => break,
                Some(n) => *n -= 1,
                None if self.eat(BREAK) => break,
                None => {}
            }
            // Keys are read as minicbor's derive read them: any integer in i64's range.
            let slot = match self.head()? {
                (UINT, Some(key)) if key <= i64::MAX as u64 => {
                    usize::try_from(key).ok().and_then(|i| Some((i, slots.get_mut(i)?)))
                }
                (NINT, Some(key)) if key <= i64::MAX as u64 => None,
                _ => return Err(Malformed),
            };
            match slot {
                Some((i, slot)) => {
                    slot.fill(self)?;
                    seen |= 1u64.wrapping_shl(i as u32);
                }
                None => self.skip(0)?,
            }
        }
        let missing = slots.iter().enumerate().any(|(i, s)| seen & 1u64.wrapping_shl(i as u32) == 0 && !s.optional());
        if missing { Err(Malformed) } else { Ok(()) }
    }

    /// Skips a string of `n` bytes; text must be UTF-8 even when skipped.
    fn skip_string(&mut self, major: u8, n: u64) -> Result<(), Malformed> {
        let bytes = self.take(n)?;
        if major == TEXT && core::str::from_utf8(bytes).is_err() {
            return Err(Malformed);
        }
        Ok(())
    }

    /// Skips one well-formed item of any type.
    fn skip(&mut self, depth: u8) -> Result<(), Malformed> {
        if depth > MAX_SKIP_DEPTH {
            return Err(Malformed);
        }
        let (major, arg) = self.head()?;
        match (major, arg) {
            (UINT | NINT | SIMPLE, Some(_)) => {}
            (BYTES | TEXT, Some(n)) => self.skip_string(major, n)?,
            // Indefinite strings: definite chunks of the same major type, then a break.
            (BYTES | TEXT, None) => {
                while !self.eat(BREAK) {
                    let n = self.argument_of(major)?;
                    self.skip_string(major, n)?;
                }
            }
            (ARRAY | MAP, Some(n)) => {
                let items = if major == MAP { n.saturating_mul(2) } else { n };
                // Each item takes at least a byte: a huge count runs out of input.
                for _ in 0..items {
                    self.skip(depth + 1)?;
                }
            }
            (ARRAY | MAP, None) => {
                while !self.eat(BREAK) {
                    self.skip(depth + 1)?;
                }
            }
            (TAG, Some(_)) => self.skip(depth + 1)?,
            _ => return Err(Malformed),
        }
        Ok(())
    }
}

macro_rules! uint {
    ($($ty:ty),*) => {$(
        impl Encode for $ty {
            fn encode(&self, e: &mut Encoder<'_>) {
                e.uint(u64::from(*self));
            }
        }

        impl Decode<'_> for $ty {
            fn decode(d: &mut Decoder<'_>) -> Result<Self, Malformed> {
                <$ty>::try_from(d.uint()?).map_err(|_| Malformed)
            }
        }
    )*};
}
uint!(u16, u32, u64);

impl Encode for bool {
    fn encode(&self, e: &mut Encoder<'_>) {
        e.put(&[if *self { TRUE } else { FALSE }]);
    }
}

impl Decode<'_> for bool {
    fn decode(d: &mut Decoder<'_>) -> Result<Self, Malformed> {
        d.bool()
    }
}

impl Encode for &str {
    fn encode(&self, e: &mut Encoder<'_>) {
        e.text(self);
    }
}

impl<'a> Decode<'a> for &'a str {
    fn decode(d: &mut Decoder<'a>) -> Result<Self, Malformed> {
        d.text()
    }
}

impl Encode for &[u8] {
    fn encode(&self, e: &mut Encoder<'_>) {
        e.bytes(self);
    }
}

impl<'a> Decode<'a> for &'a [u8] {
    fn decode(d: &mut Decoder<'a>) -> Result<Self, Malformed> {
        d.bytes()
    }
}

impl<const N: usize> Encode for [u8; N] {
    fn encode(&self, e: &mut Encoder<'_>) {
        e.bytes(self);
    }
}

/// Exactly `N` bytes; any other length is malformed.
impl<const N: usize> Decode<'_> for [u8; N] {
    fn decode(d: &mut Decoder<'_>) -> Result<Self, Malformed> {
        d.bytes()?.try_into().map_err(|_| Malformed)
    }
}

/// An optional map value: absent when `None` (and `null` read as `None`).
impl<T: Encode> Encode for Option<T> {
    fn encode(&self, e: &mut Encoder<'_>) {
        if let Some(v) = self {
            v.encode(e);
        }
    }

    fn absent(&self) -> bool {
        self.is_none()
    }
}

impl<'a, T: Decode<'a>> Decode<'a> for Option<T> {
    const OPTIONAL: bool = true;

    fn decode(d: &mut Decoder<'a>) -> Result<Self, Malformed> {
        if d.null() { Ok(None) } else { T::decode(d).map(Some) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode<'a, T: Decode<'a>>(bytes: &'a [u8]) -> Result<T, Malformed> {
        let mut d = Decoder::new(bytes);
        let v = T::decode(&mut d)?;
        if d.at_end() { Ok(v) } else { Err(Malformed) }
    }

    #[test]
    fn integers_take_the_shortest_head() -> Result<(), &'static str> {
        for (v, hex) in [
            (0u64, "00"),
            (23, "17"),
            (24, "1818"),
            (255, "18ff"),
            (256, "190100"),
            (65_535, "19ffff"),
            (65_536, "1a00010000"),
            (u64::from(u32::MAX), "1affffffff"),
            (1 << 32, "1b0000000100000000"),
            (u64::MAX, "1bffffffffffffffff"),
        ] {
            let mut buf = [0; 9];
            let n = encode_into(&v, &mut buf).ok_or("does not fit")?;
            assert_eq!(hex::encode(&buf[..n]), hex, "{v}");
            assert_eq!(encoded_len(&v), n);
            assert_eq!(decode::<u64>(&buf[..n]), Ok(v));
        }
        // Any width decodes (canonical form is the re-encoding's business), within range.
        assert_eq!(decode::<u16>(&[0x1b, 0, 0, 0, 0, 0, 0, 0, 7]), Ok(7));
        assert_eq!(decode::<u16>(&[0x1a, 0, 1, 0, 0]), Err(Malformed));
        assert_eq!(decode::<u32>(&[0x20]), Err(Malformed), "negative");
        assert_eq!(decode::<u32>(&[0x1c]), Err(Malformed), "reserved width");
        assert_eq!(decode::<u32>(&[0x1f]), Err(Malformed), "indefinite integer");
        assert_eq!(decode::<u32>(&[0x19, 1]), Err(Malformed), "truncated");
        assert_eq!(decode::<u32>(&[]), Err(Malformed));
        Ok(())
    }

    #[test]
    fn strings_are_definite_and_bounded_by_the_input() {
        assert_eq!(decode::<&str>(&[0x62, b'h', b'i']), Ok("hi"));
        assert_eq!(decode::<&str>(&[0x62, 0xff, 0xfe]), Err(Malformed), "not UTF-8");
        assert_eq!(decode::<&str>(&[0x7f, 0x61, b'a', 0xff]), Err(Malformed), "indefinite");
        assert_eq!(decode::<&[u8]>(&[0x43, 1, 2]), Err(Malformed), "truncated");
        assert_eq!(decode::<&[u8]>(&[0x5b, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]), Err(Malformed));
        assert_eq!(decode::<[u8; 2]>(&[0x42, 1, 2]), Ok([1, 2]));
        assert_eq!(decode::<[u8; 2]>(&[0x43, 1, 2, 3]), Err(Malformed), "wrong length");
        let mut small = [0; 2];
        assert_eq!(encode_into(&"hello", &mut small), None);
    }

    #[test]
    fn maps_fill_slots_skip_unknown_keys_and_need_required_ones() {
        let read = |bytes: &[u8]| {
            let (mut a, mut b) = (0u32, None::<u32>);
            let mut d = Decoder::new(bytes);
            d.map(&mut [&mut a, &mut b]).map(|()| (a, b, d.at_end()))
        };
        assert_eq!(read(&[0xa1, 0x00, 0x05]), Ok((5, None, true)));
        assert_eq!(read(&[0xa2, 0x00, 0x05, 0x01, 0xf6]), Ok((5, None, true)), "null is none");
        assert_eq!(read(&[0xa1, 0x01, 0x05]), Err(Malformed), "key 0 is required");
        assert_eq!(read(&[0xbf, 0x00, 0x05, 0x01, 0x06, 0xff]), Ok((5, Some(6), true)), "indefinite");
        assert_eq!(read(&[0xa2, 0x00, 0x05, 0x00, 0x06]), Ok((6, None, true)), "the later duplicate wins");
        // Unknown keys, negative keys and their values of every kind are skipped.
        let unknown = [
            0xa4, 0x00, 0x05, 0x07, 0x9f, 0x82, 0x01, 0xbf, 0xff, 0x5f, 0x41, 0x00, 0xff, 0xff, 0x20, 0xc1, 0xf9, 0x3c,
            0x00, 0x18, 0x20, 0x7f, 0x61, b'x', 0xff,
        ];
        assert_eq!(read(&unknown), Ok((5, None, true)));
        assert_eq!(read(&[0xa1, 0x61, b'k', 0x05]), Err(Malformed), "text key");
        assert_eq!(read(&[0xa2, 0x00, 0x05, 0x07, 0x61, 0xff]), Err(Malformed), "skipped text is still UTF-8");
        assert_eq!(read(&[0xa2, 0x00, 0x05, 0x07, 0x7f, 0x61, 0xff, 0xff]), Err(Malformed), "in chunks too");
        assert_eq!(read(&[0xa1, 0x1b, 0x80, 0, 0, 0, 0, 0, 0, 0, 0x05]), Err(Malformed), "key beyond i64");
        assert_eq!(read(&[0xa1, 0x00]), Err(Malformed), "truncated");
        assert_eq!(read(&[0xbf, 0x00, 0x05]), Err(Malformed), "no break");
        assert_eq!(read(&[0xa2, 0x00, 0x05, 0x02, 0xff]), Err(Malformed), "stray break");
        // Deep nesting in a skipped value is refused, not recursed into without end.
        let mut deep = vec![0xa2, 0x00, 0x05, 0x02];
        deep.extend([0x81; 10_000]);
        deep.push(0x00);
        assert_eq!(read(&deep), Err(Malformed));
        let mut ok = vec![0xa2, 0x00, 0x05, 0x02];
        ok.extend([0x81; MAX_SKIP_DEPTH as usize]);
        ok.push(0x00);
        assert_eq!(read(&ok), Ok((5, None, true)));
    }

    #[test]
    fn the_encoder_writes_counts_and_compares() -> Result<(), &'static str> {
        let fields: [&dyn Encode; 4] = [&1u16, &None::<u32>, &"ab", &Some(true)];
        struct Fields<'f>(&'f [&'f dyn Encode]);
        impl Encode for Fields<'_> {
            fn encode(&self, e: &mut Encoder<'_>) {
                e.tag(1_836_020_737);
                e.map(self.0);
            }
        }
        let value = Fields(&fields);
        let mut buf = [0; 32];
        let n = encode_into(&value, &mut buf).ok_or("does not fit")?;
        assert_eq!(hex::encode(&buf[..n]), "da6d6f7401a3000102626162 03f5".replace(' ', ""));
        assert_eq!(encoded_len(&value), n);
        assert!(encodes_to(&value, &buf[..n]));
        assert!(!encodes_to(&value, &buf[..n - 1]));
        assert!(!encodes_to(&value, &buf[..n + 1]));
        assert_eq!(encode_into(&value, &mut buf[..n - 1]), None);
        Ok(())
    }
}
