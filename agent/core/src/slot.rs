//! Writing into the inactive slot so that a power cut costs at most a re-request.
//!
//! Writes are strictly sequential. Persisted progress marks where the last fully written
//! unit ended, but a cut usually comes later: some units after it are already written
//! (with the right bytes, since the artifact and the patch output are deterministic) and
//! one write may be torn. After a reboot the writer reads every unit before programming
//! it: an erased unit is programmed, a unit that already holds exactly the wanted bytes
//! is skipped, anything else is a torn write, which the caller answers by erasing the
//! slot and starting again. No unit is ever programmed twice knowingly; a unit a cut
//! tore while it still reads erased is refused by a single-write (ECC) part when it is
//! programmed again, which counts as torn too (found by the single-write power-cut
//! sweep). The final SHA-256 over the slot is the only test of what was written.

use embedded_storage::nor_flash::{NorFlash, NorFlashError, NorFlashErrorKind, ReadNorFlash};

use mota_proto::{Crypto, Digest};

/// Largest supported `WRITE_SIZE`.
pub const MAX_UNIT: usize = 32;
/// Bytes compared and programmed per flash operation.
const PIECE: usize = 256;

/// Why a write into the slot failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteError {
    /// A flash operation failed.
    Flash,
    /// A unit holds neither the erased value nor the wanted bytes (a torn write).
    Torn,
    /// The write would pass the end of its area.
    Overflow,
}

impl core::fmt::Display for WriteError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            Self::Flash => "flash operation failed",
            Self::Torn => "torn write found",
            Self::Overflow => "write past the end of its area",
        })
    }
}

impl core::error::Error for WriteError {}

/// A sequential writer into one area of a slot.
pub struct Writer {
    /// Next flash offset to program (unit-aligned).
    pos: u32,
    /// End of the area.
    limit: u32,
    unit: [u8; MAX_UNIT],
    fill: usize,
    erased: u8,
    /// The area is known to read erased (blank-checked in this boot, nothing written past
    /// `pos` since): program without reading back first.
    known_erased: bool,
}

impl Writer {
    /// Writes from `pos` (unit-aligned) up to `limit`. `known_erased`: the area from `pos`
    /// on was blank-checked in this boot; otherwise (after a reboot) every unit is read
    /// before it is programmed.
    pub fn new(pos: u32, limit: u32, erased: u8, known_erased: bool) -> Self {
        Self { pos, limit, unit: [erased; MAX_UNIT], fill: 0, erased, known_erased }
    }

    /// Offset of the next byte (including bytes held back for a partial unit).
    pub fn position(&self) -> u32 {
        self.pos + self.fill as u32
    }

    /// Offset up to which everything is programmed.
    pub fn flushed(&self) -> u32 {
        self.pos
    }

    /// Appends `data`.
    pub fn write<F: NorFlash>(&mut self, flash: &mut F, mut data: &[u8]) -> Result<(), WriteError> {
        let w = F::WRITE_SIZE;
        if u64::from(self.position()) + data.len() as u64 > u64::from(self.limit) {
            return Err(WriteError::Overflow);
        }
        if self.fill > 0 {
            let take = (w - self.fill).min(data.len());
            let (head, rest) = data.split_at(take);
            self.unit.get_mut(self.fill..self.fill + take).ok_or(WriteError::Overflow)?.copy_from_slice(head);
            self.fill += take;
            data = rest;
            if self.fill < w {
                return Ok(());
            }
            let unit = self.unit;
            self.program(flash, unit.get(..w).ok_or(WriteError::Overflow)?)?;
            self.fill = 0;
        }
        let whole = data.len() - data.len() % w;
        let (body, tail) = data.split_at(whole);
        for piece in body.chunks(PIECE) {
            self.program(flash, piece)?;
        }
        self.unit.get_mut(..tail.len()).ok_or(WriteError::Overflow)?.copy_from_slice(tail);
        self.fill = tail.len();
        Ok(())
    }

    /// Programs the partial last unit, padded with the erased value.
    pub fn flush<F: NorFlash>(&mut self, flash: &mut F) -> Result<(), WriteError> {
        if self.fill == 0 {
            return Ok(());
        }
        let w = F::WRITE_SIZE;
        if u64::from(self.pos) + w as u64 > u64::from(self.limit.next_multiple_of(w as u32)) {
            return Err(WriteError::Overflow);
        }
        let mut unit = self.unit;
        unit.get_mut(self.fill..w).ok_or(WriteError::Overflow)?.fill(self.erased);
        self.program(flash, unit.get(..w).ok_or(WriteError::Overflow)?)?;
        self.fill = 0;
        Ok(())
    }

    /// Programs whole units at `pos`, skipping those already holding `bytes`.
    #[inline(never)]
    fn program<F: NorFlash>(&mut self, flash: &mut F, bytes: &[u8]) -> Result<(), WriteError> {
        if self.known_erased {
            flash.write(self.pos, bytes).map_err(|_| WriteError::Flash)?;
            self.pos += bytes.len() as u32;
            return Ok(());
        }
        // A unit a cut tore may read erased and still refuse a program on a single-write
        // (ECC) part: after a reboot a refused program counts as torn, so the slot is
        // erased and the artifact started again (a failing part ends at MAX_RESTARTS).
        let torn = |_| WriteError::Torn;
        let w = F::WRITE_SIZE;
        let mut have = [0u8; PIECE];
        let have = have.get_mut(..bytes.len()).ok_or(WriteError::Overflow)?;
        flash.read(self.pos, have).map_err(|_| WriteError::Flash)?;
        if have.iter().all(|&b| b == self.erased) {
            flash.write(self.pos, bytes).map_err(torn)?;
        } else {
            for (i, (want, got)) in bytes.chunks(w).zip(have.chunks(w)).enumerate() {
                if want == got {
                    continue;
                }
                if got.iter().any(|&b| b != self.erased) {
                    return Err(WriteError::Torn);
                }
                flash.write(self.pos + (i * w) as u32, want).map_err(torn)?;
            }
        }
        self.pos += bytes.len() as u32;
        Ok(())
    }
}

/// SHA-256 (through `crypto`) of `len` bytes from `offset` of `flash`.
#[inline(never)]
pub fn sha256<F: ReadNorFlash>(
    crypto: &dyn Crypto,
    flash: &mut F,
    offset: u32,
    len: u32,
) -> Result<Digest, WriteError> {
    let end = offset.checked_add(len).ok_or(WriteError::Overflow)?;
    if end as usize > flash.capacity() {
        return Err(WriteError::Overflow);
    }
    let mut failed = None;
    let digest = crypto.sha256(&mut |feed| {
        let mut buf = [0u8; PIECE];
        let mut at = offset;
        while at < end && failed.is_none() {
            let n = ((end - at) as usize).min(PIECE);
            let Some(piece) = buf.get_mut(..n) else { break };
            if flash.read(at, piece).is_err() {
                failed = Some(WriteError::Flash);
                break;
            }
            feed(piece);
            at += n as u32;
        }
    });
    failed.map_or(Ok(digest), Err)
}

/// Whether the bytes `from..to` of `flash` all read `erased`.
#[inline(never)]
pub fn is_erased<F: ReadNorFlash>(flash: &mut F, from: u32, to: u32, erased: u8) -> Result<bool, WriteError> {
    let mut buf = [0u8; PIECE];
    let mut at = from;
    while at < to {
        let n = ((to - at) as usize).min(PIECE);
        let piece = buf.get_mut(..n).ok_or(WriteError::Overflow)?;
        flash.read(at, piece).map_err(|_| WriteError::Flash)?;
        if piece.iter().any(|&b| b != erased) {
            return Ok(false);
        }
        at += n as u32;
    }
    Ok(true)
}

/// Erases at least `budget` bytes of `flash` from `from` (a sector boundary), never past
/// `end`, and checks they read `erased`; returns where the next piece starts, or `None`
/// when the part did not erase (a failing part; a power cut is an `Err`). Sectors may
/// differ in size (STM32F4/F7 banks): a piece the driver refuses as not aligned grows by
/// `ERASE_SIZE` until it ends on a sector boundary.
#[inline(never)]
pub fn erase_piece<F: NorFlash>(
    flash: &mut F,
    from: u32,
    budget: u32,
    end: u32,
    erased: u8,
) -> Result<Option<u32>, WriteError> {
    let unit = u32::try_from(F::ERASE_SIZE).map_err(|_| WriteError::Overflow)?.max(1);
    let mut to = from.saturating_add(budget.max(1).next_multiple_of(unit)).min(end);
    loop {
        match flash.erase(from, to) {
            Ok(()) => break,
            Err(e) if e.kind() == NorFlashErrorKind::NotAligned && to < end => to = to.saturating_add(unit).min(end),
            Err(_) => return Err(WriteError::Flash),
        }
    }
    Ok(is_erased(flash, from, to, erased)?.then_some(to))
}

/// Copies `len` bytes from `src` at `from` through `writer` into `dst`.
#[inline(never)]
pub fn copy<F: NorFlash>(src: &mut F, from: u32, len: u32, dst: &mut F, writer: &mut Writer) -> Result<(), WriteError> {
    let mut buf = [0u8; PIECE];
    let mut done = 0u32;
    while done < len {
        let n = ((len - done) as usize).min(PIECE);
        let piece = buf.get_mut(..n).ok_or(WriteError::Overflow)?;
        src.read(from + done, piece).map_err(|_| WriteError::Flash)?;
        writer.write(dst, piece)?;
        done += n as u32;
    }
    Ok(())
}

/// Where the validation set starts in a slot holding an image of `image_size` bytes.
pub fn set_offset(image_size: u32) -> Option<u32> {
    image_size.checked_next_multiple_of(MAX_UNIT as u32)
}

/// The active slot as the patch decoder's base.
pub struct Base<'a, F>(pub &'a mut F);

impl<F: ReadNorFlash> mota_delta::Base for Base<'_, F> {
    fn read(&mut self, offset: u32, buf: &mut [u8]) -> Result<(), mota_delta::IoError> {
        if u64::from(offset) + buf.len() as u64 > self.0.capacity() as u64 {
            return Err(mota_delta::IoError);
        }
        self.0.read(offset, buf).map_err(|_| mota_delta::IoError)
    }
}

/// The inactive slot as the patch decoder's output; remembers why a write failed.
pub struct Sink<'a, F> {
    /// The slot.
    pub flash: &'a mut F,
    /// Its writer.
    pub writer: &'a mut Writer,
    /// The first failure.
    pub error: Option<WriteError>,
}

impl<F: NorFlash> mota_delta::Sink for Sink<'_, F> {
    fn write(&mut self, bytes: &[u8]) -> Result<(), mota_delta::IoError> {
        self.writer.write(self.flash, bytes).map_err(|e| {
            self.error.get_or_insert(e);
            mota_delta::IoError
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mota_simflash::{CutMode, Geometry, SimFlash};

    type TestResult = Result<(), Box<dyn std::error::Error>>;
    type Flash = SimFlash<8, 4096>;

    fn part() -> Result<Flash, Box<dyn std::error::Error>> {
        Ok(SimFlash::new(Geometry::uniform(2, 4096, 8, 0xFF)?))
    }

    fn data(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i * 7 + 3) as u8).collect()
    }

    #[test]
    fn odd_pieces_land_in_order_and_the_tail_is_padded() -> TestResult {
        let mut f = part()?;
        let want = data(1001);
        let mut w = Writer::new(0, 8192, 0xFF, false);
        for piece in want.chunks(13) {
            w.write(&mut f, piece)?;
        }
        assert_eq!(w.position(), 1001);
        assert_eq!(w.flushed(), 1000);
        w.flush(&mut f)?;
        assert_eq!(&f.contents()[..1001], &want[..]);
        assert_eq!(&f.contents()[1001..1008], &[0xFF; 7]);
        assert_eq!(sha256(&mota_proto::Software, &mut f, 0, 1001)?, Digest::of(&want));
        Ok(())
    }

    #[test]
    fn rewriting_after_a_cut_skips_what_is_there_and_finds_a_torn_unit() -> TestResult {
        let want = data(3000);
        for mode in [CutMode::Before, CutMode::TearPrefix, CutMode::TearBits] {
            let mut f = part()?;
            f.cut_at(5, mode);
            let mut w = Writer::new(0, 8192, 0xFF, false);
            assert!(want.chunks(256).try_for_each(|p| w.write(&mut f, p)).is_err());
            f.restore_power();
            // Resume from a persisted offset of 512: the same bytes again.
            let mut w = Writer::new(512, 8192, 0xFF, false);
            let writes = f.stats().writes;
            let result = want[512..].chunks(100).try_for_each(|p| w.write(&mut f, p)).and_then(|()| w.flush(&mut f));
            match result {
                Ok(()) => assert_eq!(&f.contents()[..3000], &want[..], "{mode:?}"),
                Err(e) => assert_eq!((e, mode == CutMode::Before), (WriteError::Torn, false), "{mode:?}"),
            }
            if mode == CutMode::Before {
                assert!(f.stats().writes - writes < 3000 / 8, "units already written are skipped");
            }
        }
        Ok(())
    }

    #[test]
    fn a_known_erased_area_is_programmed_without_reading_it_back() -> TestResult {
        let want = data(3000);
        let mut checked = part()?;
        let mut w = Writer::new(0, 8192, 0xFF, false);
        w.write(&mut checked, &want)?;
        let mut fresh = part()?;
        let mut w = Writer::new(0, 8192, 0xFF, true);
        w.write(&mut fresh, &want)?;
        assert_eq!(fresh.contents(), checked.contents());
        assert_eq!(fresh.stats().reads, 0);
        assert!(checked.stats().reads > 0);
        Ok(())
    }

    #[test]
    fn a_blank_check_sees_one_programmed_byte() -> TestResult {
        let mut f = part()?;
        assert!(is_erased(&mut f, 0, 8192, 0xFF)?);
        f.write(4096 + 8, &[0xFE; 8])?;
        assert!(is_erased(&mut f, 0, 4096, 0xFF)?);
        assert!(!is_erased(&mut f, 0, 8192, 0xFF)?);
        Ok(())
    }

    #[test]
    fn the_area_is_a_hard_limit() -> TestResult {
        let mut f = part()?;
        let mut w = Writer::new(0, 100, 0xFF, false);
        w.write(&mut f, &data(100))?;
        assert_eq!(w.write(&mut f, &[1]), Err(WriteError::Overflow));
        assert_eq!(sha256(&mota_proto::Software, &mut f, 8000, 500), Err(WriteError::Overflow));
        assert_eq!(set_offset(1001), Some(1024));
        assert_eq!(set_offset(u32::MAX), None);
        Ok(())
    }
}
