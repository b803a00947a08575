//! Reading and writing NumPy `.npy` files (version 1–3, C order), for the host tools:
//! `mota model run` takes and writes them, validation sets are built from them, and the
//! fixture tests read TFLM's recorded inputs and outputs from them.

use std::fmt;

/// An array read from a `.npy` file: its dtype descriptor, shape and raw little-endian data.
#[derive(Debug, Clone, PartialEq)]
pub struct Npy {
    /// NumPy dtype descriptor, e.g. `|i1`, `<f4`, `<i8`.
    pub descr: String,
    /// Shape.
    pub shape: Vec<usize>,
    /// Raw data, C order.
    pub data: Vec<u8>,
}

/// Why a `.npy` file could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NpyError(pub &'static str);

impl fmt::Display for NpyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "not a supported .npy file: {}", self.0)
    }
}

impl std::error::Error for NpyError {}

impl Npy {
    /// Bytes per element of the dtype.
    pub fn item_size(&self) -> Option<usize> {
        self.descr.get(2..)?.parse().ok()
    }

    /// Number of rows (the first dimension).
    pub fn rows(&self) -> usize {
        self.shape.first().copied().unwrap_or(1)
    }

    /// The bytes of row `i`.
    pub fn row(&self, i: usize) -> Option<&[u8]> {
        let per_row = self.data.len() / self.rows().max(1);
        self.data.get(i * per_row..(i + 1) * per_row)
    }

    /// Parses a file's bytes.
    pub fn parse(bytes: &[u8]) -> Result<Self, NpyError> {
        let rest = bytes.strip_prefix(b"\x93NUMPY").ok_or(NpyError("magic"))?;
        let (&major, rest) = rest.split_first().ok_or(NpyError("version"))?;
        let rest = rest.get(1..).ok_or(NpyError("version"))?;
        let (len, rest) = match major {
            1 => {
                let b = rest.get(..2).ok_or(NpyError("header length"))?;
                (usize::from(u16::from_le_bytes([b[0], b[1]])), rest.get(2..))
            }
            2 | 3 => {
                let b = rest.get(..4).ok_or(NpyError("header length"))?;
                (u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize, rest.get(4..))
            }
            _ => return Err(NpyError("version")),
        };
        let rest = rest.ok_or(NpyError("header length"))?;
        let header = std::str::from_utf8(rest.get(..len).ok_or(NpyError("header"))?).map_err(|_| NpyError("header"))?;
        let data = rest.get(len..).ok_or(NpyError("header"))?.to_vec();
        let field = |key: &str| header.split(key).nth(1).ok_or(NpyError("header field"));
        let descr = field("'descr':")?.split('\'').nth(1).ok_or(NpyError("descr"))?.to_owned();
        if field("'fortran_order':")?.trim_start().starts_with("True") {
            return Err(NpyError("Fortran order"));
        }
        let shape_text = field("'shape':")?.split(['(', ')']).nth(1).ok_or(NpyError("shape"))?;
        let shape = shape_text
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| s.parse().map_err(|_| NpyError("shape")))
            .collect::<Result<Vec<usize>, _>>()?;
        if descr.starts_with('>') {
            return Err(NpyError("big-endian data"));
        }
        let npy = Self { descr, shape, data };
        let expected = npy
            .shape
            .iter()
            .try_fold(npy.item_size().ok_or(NpyError("dtype"))?, |acc, &d| acc.checked_mul(d))
            .ok_or(NpyError("shape too large"))?;
        if npy.data.len() != expected {
            return Err(NpyError("data length does not match the shape"));
        }
        Ok(npy)
    }

    /// Encodes as a version 1.0 file.
    pub fn to_bytes(&self) -> Vec<u8> {
        let shape = match self.shape.as_slice() {
            [one] => format!("({one},)"),
            dims => format!("({})", dims.iter().map(usize::to_string).collect::<Vec<_>>().join(", ")),
        };
        let mut header = format!("{{'descr': '{}', 'fortran_order': False, 'shape': {shape}, }}", self.descr);
        while (10 + header.len() + 1) % 64 != 0 {
            header.push(' ');
        }
        header.push('\n');
        let mut out = b"\x93NUMPY\x01\x00".to_vec();
        out.extend((header.len() as u16).to_le_bytes());
        out.extend(header.as_bytes());
        out.extend(&self.data);
        out
    }
}

#[cfg(test)]
mod tests {
    type TestResult = Result<(), Box<dyn std::error::Error>>;

    use super::*;

    #[test]
    fn round_trip_and_refusals() -> TestResult {
        let npy = Npy { descr: "|i1".into(), shape: vec![2, 3], data: vec![1, 2, 3, 4, 5, 6] };
        let bytes = npy.to_bytes();
        assert_eq!(bytes.len() % 64, 6, "header padded to 64 bytes, then 6 data bytes");
        let back = Npy::parse(&bytes)?;
        assert_eq!(back, npy);
        assert_eq!(back.row(1), Some(&[4u8, 5, 6][..]));
        assert!(Npy::parse(&bytes[..bytes.len() - 1]).is_err(), "truncated data");
        assert!(Npy::parse(b"not npy").is_err());
        let huge = Npy { descr: "|i1".into(), shape: vec![99_999_999_999_999, 99_999_999_999], data: vec![] };
        assert_eq!(Npy::parse(&huge.to_bytes()), Err(NpyError("shape too large")));
        assert!(Npy::parse(b"\x93NUMPY\x01\x00\x05").is_err(), "header length cut short");
        Ok(())
    }
}
