//! A bounds-checked, zero-copy reader for the FlatBuffers wire format.
//!
//! The `flatbuffers` crate trusts its input after an optional verifier that needs `alloc`;
//! here every read is checked as it happens, so a model can be read in place from flash
//! with no allocation and no way to read out of bounds, whatever the bytes are. Only what
//! TFLite models use is implemented: tables, scalars, vectors of scalars and of tables,
//! strings and unions.

use core::fmt;

/// A read that would leave the buffer, or a structure that makes no sense.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FbError {
    /// An offset, length or field points outside the buffer.
    OutOfBounds,
    /// A vtable is shorter than its header or not a multiple of 2 bytes.
    BadVtable,
    /// A string is not UTF-8.
    BadString,
}

impl fmt::Display for FbError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::OutOfBounds => "offset or length outside the buffer",
            Self::BadVtable => "malformed vtable",
            Self::BadString => "string is not UTF-8",
        })
    }
}

type Result<T> = core::result::Result<T, FbError>;

fn bytes<const N: usize>(buf: &[u8], pos: usize) -> Result<[u8; N]> {
    let end = pos.checked_add(N).ok_or(FbError::OutOfBounds)?;
    let slice = buf.get(pos..end).ok_or(FbError::OutOfBounds)?;
    let mut out = [0u8; N];
    out.copy_from_slice(slice);
    Ok(out)
}

fn read_u16(buf: &[u8], pos: usize) -> Result<u16> {
    bytes::<2>(buf, pos).map(u16::from_le_bytes)
}

fn read_u32(buf: &[u8], pos: usize) -> Result<u32> {
    bytes::<4>(buf, pos).map(u32::from_le_bytes)
}

/// Follows a `uoffset` stored at `pos` (relative to `pos`).
fn follow(buf: &[u8], pos: usize) -> Result<usize> {
    let off = read_u32(buf, pos)? as usize;
    let target = pos.checked_add(off).ok_or(FbError::OutOfBounds)?;
    if target >= buf.len() {
        return Err(FbError::OutOfBounds);
    }
    Ok(target)
}

/// A scalar type a table field or a vector element can hold.
pub trait Scalar: Sized + Copy {
    /// Its size in bytes.
    const SIZE: usize;
    /// Reads one little-endian value at `pos`.
    fn read(buf: &[u8], pos: usize) -> Result<Self>;
}

macro_rules! scalar {
    ($($ty:ty),*) => {$(
        impl Scalar for $ty {
            const SIZE: usize = core::mem::size_of::<$ty>();
            fn read(buf: &[u8], pos: usize) -> Result<Self> {
                bytes::<{ core::mem::size_of::<$ty>() }>(buf, pos).map(<$ty>::from_le_bytes)
            }
        }
    )*};
}
scalar!(u8, i8, u16, i32, u32, i64, u64, f32);

impl Scalar for bool {
    const SIZE: usize = 1;
    fn read(buf: &[u8], pos: usize) -> Result<Self> {
        u8::read(buf, pos).map(|b| b != 0)
    }
}

/// A table: a position and its vtable.
#[derive(Clone, Copy)]
pub struct Table<'a> {
    buf: &'a [u8],
    pos: usize,
    vtable: usize,
    vtable_len: usize,
}

impl<'a> Table<'a> {
    /// The root table of a buffer.
    pub fn root(buf: &'a [u8]) -> Result<Self> {
        Self::at(buf, follow(buf, 0)?)
    }

    /// The table at absolute position `pos` (a position recorded earlier).
    pub(crate) fn at(buf: &'a [u8], pos: usize) -> Result<Self> {
        let soffset = i32::read(buf, pos)?;
        let vtable = (pos as i64).checked_sub(i64::from(soffset)).ok_or(FbError::OutOfBounds)?;
        let vtable = usize::try_from(vtable).map_err(|_| FbError::OutOfBounds)?;
        let vtable_len = usize::from(read_u16(buf, vtable)?);
        if vtable_len < 4 || vtable_len % 2 != 0 {
            return Err(FbError::BadVtable);
        }
        if vtable.checked_add(vtable_len).is_none_or(|end| end > buf.len()) {
            return Err(FbError::OutOfBounds);
        }
        Ok(Self { buf, pos, vtable, vtable_len })
    }

    /// The absolute position of field `id`, if present.
    fn field(&self, id: usize) -> Result<Option<usize>> {
        let slot = 4 + 2 * id;
        if slot + 2 > self.vtable_len {
            return Ok(None);
        }
        let off = read_u16(self.buf, self.vtable + slot)?;
        if off == 0 {
            return Ok(None);
        }
        Ok(Some(self.pos + usize::from(off)))
    }

    /// The table's position in the buffer.
    pub(crate) fn position(&self) -> usize {
        self.pos
    }

    /// The absolute position of field `id` in the buffer, if present (for tools and tests
    /// that patch a model in place).
    pub fn field_position(&self, id: usize) -> Result<Option<usize>> {
        self.field(id)
    }

    /// A scalar field, or `default` when absent.
    pub fn scalar<T: Scalar>(&self, id: usize, default: T) -> Result<T> {
        match self.field(id)? {
            Some(pos) => T::read(self.buf, pos),
            None => Ok(default),
        }
    }

    /// A sub-table field.
    pub fn table(&self, id: usize) -> Result<Option<Table<'a>>> {
        match self.field(id)? {
            Some(pos) => Ok(Some(Self::at(self.buf, follow(self.buf, pos)?)?)),
            None => Ok(None),
        }
    }

    /// A vector field.
    pub fn vector(&self, id: usize) -> Result<Option<Vector<'a>>> {
        match self.field(id)? {
            Some(pos) => Ok(Some(Vector::at(self.buf, follow(self.buf, pos)?)?)),
            None => Ok(None),
        }
    }

    /// A string field.
    pub fn string(&self, id: usize) -> Result<Option<&'a str>> {
        match self.vector(id)? {
            Some(v) => core::str::from_utf8(v.raw(1)?).map(Some).map_err(|_| FbError::BadString),
            None => Ok(None),
        }
    }
}

/// A vector: a length and the position of its first element.
#[derive(Clone, Copy)]
pub struct Vector<'a> {
    buf: &'a [u8],
    start: usize,
    len: usize,
}

impl<'a> Vector<'a> {
    fn at(buf: &'a [u8], pos: usize) -> Result<Self> {
        let len = read_u32(buf, pos)? as usize;
        Ok(Self { buf, start: pos + 4, len })
    }

    /// Where its elements start in the buffer, and how many there are.
    pub(crate) fn parts(&self) -> (usize, usize) {
        (self.start, self.len)
    }

    /// A vector recorded earlier by [`Vector::parts`].
    pub(crate) fn from_parts(buf: &'a [u8], start: usize, len: usize) -> Self {
        Self { buf, start, len }
    }

    /// An empty vector (for absent optional vectors).
    pub const fn empty() -> Vector<'static> {
        Vector { buf: &[], start: 0, len: 0 }
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether it has no elements.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The elements as raw bytes, `elem` bytes each, checked against the buffer.
    pub fn raw(&self, elem: usize) -> Result<&'a [u8]> {
        let size = self.len.checked_mul(elem).ok_or(FbError::OutOfBounds)?;
        let end = self.start.checked_add(size).ok_or(FbError::OutOfBounds)?;
        self.buf.get(self.start..end).ok_or(FbError::OutOfBounds)
    }

    /// Scalar element `i`.
    pub fn get<T: Scalar>(&self, i: usize) -> Result<T> {
        if i >= self.len {
            return Err(FbError::OutOfBounds);
        }
        T::read(self.buf, self.element(i, T::SIZE)?)
    }

    /// Position of element `i` of `size` bytes; checked, as 32-bit targets can overflow.
    fn element(&self, i: usize, size: usize) -> Result<usize> {
        i.checked_mul(size).and_then(|off| self.start.checked_add(off)).ok_or(FbError::OutOfBounds)
    }

    /// Table element `i` of a vector of tables.
    pub fn table(&self, i: usize) -> Result<Table<'a>> {
        if i >= self.len {
            return Err(FbError::OutOfBounds);
        }
        Table::at(self.buf, follow(self.buf, self.element(i, 4)?)?)
    }

    /// Scalar elements, each read checked.
    pub fn iter<T: Scalar>(self) -> impl Iterator<Item = Result<T>> + 'a {
        (0..self.len).map(move |i| self.get::<T>(i))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A hand-assembled buffer: root table with a u32 field (id 0 = 7) and a vector of
    /// two i32 (id 1 = [-1, 2]), field id 2 absent.
    fn sample() -> [u8; 40] {
        let mut b = [0u8; 40];
        b[0..4].copy_from_slice(&12u32.to_le_bytes()); // root at 12
        // vtable at 4: size 8, table size 12, field 0 at +4, field 1 at +8
        b[4..6].copy_from_slice(&8u16.to_le_bytes());
        b[6..8].copy_from_slice(&12u16.to_le_bytes());
        b[8..10].copy_from_slice(&4u16.to_le_bytes());
        b[10..12].copy_from_slice(&8u16.to_le_bytes());
        // table at 12: soffset 8 (12 - 8 = 4)
        b[12..16].copy_from_slice(&8i32.to_le_bytes());
        b[16..20].copy_from_slice(&7u32.to_le_bytes());
        b[20..24].copy_from_slice(&8u32.to_le_bytes()); // vector at 28
        b[28..32].copy_from_slice(&2u32.to_le_bytes());
        b[32..36].copy_from_slice(&(-1i32).to_le_bytes());
        b[36..40].copy_from_slice(&2i32.to_le_bytes());
        b
    }

    #[test]
    fn reads_fields_vectors_and_defaults() -> Result<()> {
        let buf = sample();
        let root = Table::root(&buf)?;
        assert_eq!(root.scalar::<u32>(0, 0)?, 7);
        assert_eq!(root.scalar::<u32>(2, 99)?, 99, "absent field gives the default");
        let v = root.vector(1)?.ok_or(FbError::OutOfBounds)?;
        assert_eq!(v.iter::<i32>().collect::<Result<Vec<_>>>()?, [-1, 2]);
        assert_eq!(v.get::<i32>(2), Err(FbError::OutOfBounds));
        Ok(())
    }

    #[test]
    fn every_truncation_is_an_error_not_a_panic() {
        let buf = sample();
        for len in 0..buf.len() {
            let short = &buf[..len];
            let read = Table::root(short).and_then(|t| {
                t.scalar::<u32>(0, 0)?;
                t.vector(1)?.map(|v| v.iter::<i32>().collect::<Result<Vec<_>>>()).transpose()
            });
            assert!(read.is_err(), "truncated to {len} bytes and still read");
        }
    }

    #[test]
    fn a_huge_vector_length_is_refused() -> Result<()> {
        let mut buf = sample();
        buf[28..32].copy_from_slice(&u32::MAX.to_le_bytes());
        let v = Table::root(&buf)?.vector(1)?.ok_or(FbError::OutOfBounds)?;
        assert_eq!(v.raw(4), Err(FbError::OutOfBounds));
        assert_eq!(v.get::<i32>(5), Err(FbError::OutOfBounds));
        Ok(())
    }
}
