//! Sector maps: uniform (most SPI NOR and many MCUs) or mixed (STM32F4's 16/64/128 KiB),
//! with the write granularity and the erased value of the part.

/// The layout of a simulated part.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Geometry {
    sectors: Vec<u32>,
    /// Bytes per program operation unit (1–32).
    pub write_size: usize,
    /// Value of an erased byte (0xFF on most parts, 0x00 on some).
    pub erased: u8,
    /// Program page of SPI NOR parts: one program operation never crosses a page, so a
    /// longer write is several operations (and power can fail between them).
    pub page: Option<usize>,
}

/// A geometry that no part could have.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum GeometryError {
    /// Write size outside 1..=32 or not a power of two.
    #[error("write size must be a power of two from 1 to 32")]
    WriteSize,
    /// No sectors, or a sector that is empty or not a multiple of the write size.
    #[error("sectors must be non-empty multiples of the write size")]
    Sectors,
    /// A program page that is not a power of two, a multiple of the write size and a
    /// divisor of every sector.
    #[error("page must be a power of two, a multiple of the write size, dividing every sector")]
    Page,
}

impl Geometry {
    /// Sectors of the given sizes, in address order.
    pub fn new(sectors: Vec<u32>, write_size: usize, erased: u8) -> Result<Self, GeometryError> {
        if !(1..=32).contains(&write_size) || !write_size.is_power_of_two() {
            return Err(GeometryError::WriteSize);
        }
        if sectors.is_empty() || sectors.iter().any(|&s| s == 0 || !(s as usize).is_multiple_of(write_size)) {
            return Err(GeometryError::Sectors);
        }
        Ok(Self { sectors, write_size, erased, page: None })
    }

    /// `count` sectors of `size` bytes.
    pub fn uniform(count: usize, size: u32, write_size: usize, erased: u8) -> Result<Self, GeometryError> {
        Self::new(vec![size; count], write_size, erased)
    }

    /// STM32F4-like: 4 × 16 KiB, 1 × 64 KiB, then `large` × 128 KiB.
    pub fn stm32f4(large: usize, write_size: usize, erased: u8) -> Result<Self, GeometryError> {
        let mut sectors = vec![16 * 1024; 4];
        sectors.push(64 * 1024);
        sectors.extend(std::iter::repeat_n(128 * 1024, large));
        Self::new(sectors, write_size, erased)
    }

    /// The same part with a program page of `page` bytes (a power of two, a multiple of
    /// the write size, dividing every sector).
    pub fn with_page(mut self, page: usize) -> Result<Self, GeometryError> {
        if !page.is_power_of_two()
            || !page.is_multiple_of(self.write_size)
            || self.sectors.iter().any(|&s| !(s as usize).is_multiple_of(page))
        {
            return Err(GeometryError::Page);
        }
        self.page = Some(page);
        Ok(self)
    }

    /// Sector sizes, in address order.
    pub fn sectors(&self) -> &[u32] {
        &self.sectors
    }

    /// Total bytes.
    pub fn capacity(&self) -> usize {
        self.sectors.iter().map(|&s| s as usize).sum()
    }

    /// The smallest sector (the `ERASE_SIZE` a uniform part reports).
    pub fn min_sector(&self) -> u32 {
        self.sectors.iter().copied().min().unwrap_or(0)
    }

    /// Whether `offset` is a sector boundary (the end of the part counts).
    pub fn is_boundary(&self, offset: usize) -> bool {
        let mut at = 0usize;
        for &s in &self.sectors {
            if at == offset {
                return true;
            }
            at += s as usize;
        }
        at == offset
    }

    /// The sector holding `offset`: (start, size).
    pub fn sector_of(&self, offset: usize) -> Option<(usize, usize)> {
        let mut at = 0usize;
        for &s in &self.sectors {
            if offset < at + s as usize {
                return Some((at, s as usize));
            }
            at += s as usize;
        }
        None
    }
}
