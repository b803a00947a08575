//! A power-cut-safe journal of one record (the newest of a series) on NOR flash that
//! allows each program unit to be written **once** between erases.
//!
//! Single-write parts (ECC flash: STM32 L4/G4/H7/U5/WB/WL, where a flash word carries its
//! own ECC bits) refuse, or corrupt, a second program of a unit, even one that still
//! reads erased after a torn write. sequential-storage, which the agent's state region
//! uses today, repairs a torn write by programming the torn unit again and so needs
//! `MultiwriteNorFlash` (pinned by mota-simflash's `sequential_storage` test). This crate
//! is the scheme for those parts: [`Journal::save`] appends the record, [`Journal::load`]
//! returns the newest complete one; a power cut at any instant leaves the previous record
//! or the new one as what `load` returns. It works on any `NorFlash` (multi-write parts
//! too), never allocates, has no `unsafe`, and keeps two small stack buffers (64 bytes for
//! reads, 32 for a padded unit); the record bytes come from the caller's buffers.
//!
//! # Why not an existing crate
//!
//! Looked at before writing this (the whole agent must fit 48 KiB of flash):
//! - **sequential-storage** (in the tree): needs `MultiwriteNorFlash`, see above.
//! - **ekv** (embassy): a key-value database built as an LSM tree with transactions,
//!   far more code than one record needs; its own `Flash` trait instead of
//!   embedded-storage, page geometry fixed at build time, and reads/writes aligned to
//!   1, 2 or 4 bytes only, so not the 8-, 16- or 32-byte units of the parts above.
//! - **tickv** (Tock): invalidates an object by writing its header a second time (a
//!   second program of a unit), takes a read buffer as large as a flash region (128 KiB
//!   on an H7), and documents itself as not robust to power loss for the key written.
//! - **littlefs2** (C littlefs bound to Rust): power-safe copy-on-write, but a whole file
//!   system in C, several times this crate's size, for one record.
//! - EEPROM-emulation crates after ST's application notes store 16-bit variables, not a
//!   kilobyte record.
//!
//! Nothing small did "latest value, write-once units, power-cut safe" over
//! embedded-storage, so it is written here; the CRC comes from the `crc` crate (no_std,
//! maintained, bitwise `NoTable` variant: no 1 KiB table in flash).
//!
//! # On-flash format
//!
//! The region is cut into *pages*, one erase page (`ERASE_SIZE`) each; there must be at
//! least two. `W` is `WRITE_SIZE` (a power of two, at most 32); `E` is the erased byte
//! value given to [`Journal::new`]; integers are little-endian. A page holds records back
//! to back from its first byte, each starting on a `W` boundary:
//!
//! | bytes (from the record's start)      | field    | content                                                        |
//! |--------------------------------------|----------|----------------------------------------------------------------|
//! | 0                                    | magic    | `0x4A`                                                         |
//! | 1                                    | format   | `1`                                                            |
//! | 2..4                                 | length   | `u16` `len`, the record's bytes (so `max_len` ≤ 65,535)        |
//! | 4..8                                 | sequence | `u32`, one more (wrapping) than the record saved before        |
//! | 8..8+len                             | data     | the record                                                     |
//! | 8+len..D, D = 8+len rounded up to W  | padding  | `E`                                                            |
//! | D..D+4                               | commit   | CRC-32C (Castagnoli) of bytes 0..D, as they must read          |
//! | D+4..D+T, T = max(4, W)              | padding  | `E`                                                            |
//!
//! The next record starts at `D + T`. A record is written as up to four program
//! operations, in order: the unit(s) holding the header (with the first data bytes when
//! `W` > 8), the whole data units straight from the caller's slice, the last partial data
//! unit padded with `E`, and last of all the commit unit, its own unit(s). Every write is
//! `W`-aligned and a multiple of `W`.
//!
//! A record is **valid** when magic and format match, it fits in its page, the commit
//! reads back equal to the CRC of everything before it, and the commit's padding reads
//! `E`. Since the commit is programmed only after every other write of the record
//! returned, a valid record was written whole; a torn write leaves bytes that fail the
//! CRC (or, by chance, exactly the intended bytes: then the record is the new one, which
//! is allowed). Erased trailing units cannot pass: the commit would be erased. Random
//! damage passes a 32-bit CRC with probability 2⁻³²; the Castagnoli polynomial is used
//! for its larger Hamming distance than the IEEE one on records of a few hundred bytes.
//!
//! # Rules
//!
//! - **No unit is programmed twice between erases.** Nothing is ever marked invalid or
//!   repaired; a torn or garbage record is simply not valid.
//! - **Every session starts on a freshly erased page.** A *session* is one [`Journal`]
//!   value (one boot). Its first [`save`](Journal::save) erases the page after the page
//!   of the newest valid record (page 0 on an empty region) and writes there; later saves
//!   of the same session append behind the record it last wrote, and when the next record
//!   does not fit, erase the following page (cyclically) and continue there. Why a fresh
//!   page: a write torn by a power cut may leave its units reading erased while the part
//!   counts them as programmed (an ECC flash word interrupted, or programmed to all-`E`, may
//!   not be programmed again). The next boot sees the same flash as before that write and
//!   cannot tell which erased-looking units were attempted, so only an erase makes units
//!   writable with certainty. Within a session the journal knows what it attempted: after
//!   any failed save it forgets its place, scans again and opens a fresh page at the next
//!   save. The cost is one page erase per session that saves, besides one per page filled.
//! - **Hence in a page**: valid records of one session, written in order, then at most one
//!   invalid attempt (the save that was cut or failed), then units never written. The
//!   scan of a page walks records from its start and stops at the first that is not
//!   valid; a length is followed only once the CRC vouches for it.
//! - **The newest record is never in the page being erased**: the page erased is always
//!   the one after the newest record's page, and there are at least two. A cut during
//!   that erase leaves random or old bytes there; old records left readable there carry
//!   older sequence numbers, anything else fails the CRC. The next session erases the same
//!   page again.
//! - **Sequence numbers** are compared wrapping (serial-number arithmetic: `a` is newer
//!   than `b` when `a - b`, wrapped, is below 2³¹), so the counter may wrap. A save numbers
//!   its record one past the newest valid record (plus the slack below). The valid records
//!   in the region are at most `R` = capacity / `S` (`S` = `max(8, W) + max(4, W)`, the
//!   smallest record), each numbered at most `P + 1` past the one before it (`P` = page /
//!   `S`), so they lie within `R × (P + 1)` numbers; [`Journal::new`] refuses a region
//!   where that reaches 2³¹ (for 1-byte units: more than 17 pages of 128 KiB, or about
//!   18,400 of 4 KiB), which keeps the comparison exact.
//! - **Reads** go through a 64-byte stack buffer in `READ_SIZE`-aligned pieces. A read the
//!   driver reports failed makes that record not valid and ends its page's scan, as for a
//!   torn one: ECC parts report a torn word as an uncorrectable error (given a driver
//!   that turns the ECC fault into an error), and that must not stop every later boot
//!   (the agent's slots take the same view). If the newest record itself cannot be read,
//!   `load` returns the one before it. Records behind an unreadable one in its page were
//!   not seen and could read again later, so the next save numbers its record past them:
//!   it adds a slack of the slots left in the page cut short (at most `P + 1`; the
//!   largest if several are).
//!
//! `load` reads each page's records once (the region once per boot, in small reads);
//! after that the journal keeps the newest record's place in RAM.
#![cfg_attr(not(test), no_std)]

use core::fmt;
use core::num::NonZeroU32;

use crc::{CRC_32_ISCSI, Crc, NoTable};
use embedded_storage::nor_flash::NorFlash;

/// First byte of every record.
const MAGIC: u8 = 0x4A;
/// Second byte of every record: this layout.
const FORMAT: u8 = 1;
/// Magic, format, length, sequence.
const HEADER: usize = 8;
/// The commit's CRC.
const CRC_LEN: usize = 4;
/// The largest write unit supported (STM32H7's flash word).
const MAX_UNIT: usize = 32;
/// Read piece size (and the largest `READ_SIZE` supported).
const CHUNK: usize = 64;

static CRC32C: Crc<u32, NoTable> = Crc::<u32, NoTable>::new(&CRC_32_ISCSI);

/// Why the journal failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JournalError {
    /// The region is not at least two whole erase pages, a page cannot hold an empty
    /// record, `WRITE_SIZE` is not a power of two ≤ 32, `READ_SIZE` is not a power of
    /// two ≤ 64 dividing the page, or the region is beyond 32-bit offsets or too large
    /// for sequence numbers to stay comparable (see the crate documentation).
    Layout,
    /// A flash operation failed (a power cut, in simulation).
    Flash,
    /// The record is longer than [`Journal::max_len`].
    TooLarge,
    /// The buffer given to [`Journal::load`] is shorter than the newest record.
    BufferTooSmall,
}

impl fmt::Display for JournalError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Layout => "region layout not supported by the journal",
            Self::Flash => "flash operation failed",
            Self::TooLarge => "record larger than the journal's pages can hold",
            Self::BufferTooSmall => "buffer shorter than the stored record",
        })
    }
}

impl core::error::Error for JournalError {}

/// A valid record's place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Found {
    at: u32,
    len: u16,
    seq: u32,
}

/// What a scan (and the saves since) know.
#[derive(Debug, Clone, Copy)]
struct Known {
    /// The newest valid record.
    newest: Option<Found>,
    /// Whether this session wrote `newest`, so the units behind it were never attempted
    /// and the next record may follow it in the same page.
    append: bool,
    /// How far past the newest record's sequence number the next save must go: records
    /// behind an unreadable one were not seen, and may surface again.
    slack: u32,
}

/// The flash reported a read failure.
#[derive(Debug)]
struct Unreadable;

/// A journal of records over a flash region; see the crate documentation for the format.
pub struct Journal<S: NorFlash> {
    flash: S,
    erased: u8,
    /// Page (erase page) size.
    page: NonZeroU32,
    /// Number of pages.
    pages: NonZeroU32,
    /// `None` until scanned, and again after a failed operation.
    known: Option<Known>,
}

impl<S: NorFlash> Journal<S> {
    /// The journal over the whole of `region`, whose erased byte value is `erased`.
    ///
    /// Errors: [`JournalError::Layout`] when the region is not at least two whole erase
    /// pages, `WRITE_SIZE` is not a power of two ≤ 32, `READ_SIZE` is not a power of two
    /// ≤ 64 dividing the erase page, a page cannot hold an empty record, or the region
    /// does not fit 32-bit offsets or the sequence window (see the crate documentation).
    /// `erased` pads partial units, so nothing is programmed there. Touches no flash.
    pub fn new(region: S, erased: u8) -> Result<Self, JournalError> {
        let (w, r, e) = (S::WRITE_SIZE, S::READ_SIZE, S::ERASE_SIZE);
        let capacity = region.capacity();
        let fits = w.is_power_of_two()
            && w <= MAX_UNIT
            && r.is_power_of_two()
            && r <= CHUNK
            && e > 0
            && e.is_multiple_of(w)
            && e.is_multiple_of(r)
            && e >= Self::extent(0)
            && capacity.is_multiple_of(e)
            && capacity / e >= 2;
        // Sequence numbers stay comparable (see the crate documentation): every record
        // the region can hold, each numbered at most one page's worth of records past the
        // one before, must span less than 2^31.
        let window = |slot: usize| {
            let span =
                capacity.checked_div(slot).zip(e.checked_div(slot)).and_then(|(all, per)| all.checked_mul(per + 1));
            span.is_some_and(|span| span < 1 << 31)
        };
        if !fits || !window(Self::extent(0)) {
            return Err(JournalError::Layout);
        }
        let nonzero = |n: usize| u32::try_from(n).ok().and_then(NonZeroU32::new).ok_or(JournalError::Layout);
        let page = nonzero(e)?;
        nonzero(capacity)?;
        let pages = nonzero(capacity.checked_div(e).unwrap_or(0))?;
        Ok(Self { flash: region, erased, page, pages, known: None })
    }

    /// Largest record this region can hold: a page less the header and commit, at most
    /// 65,535 (the length field).
    pub fn max_len(&self) -> usize {
        let room = (self.page.get() as usize).saturating_sub(Self::trailer() + HEADER);
        room.min(usize::from(u16::MAX))
    }

    /// The newest complete record, copied into `buf`; `Ok(None)` on a fresh (or
    /// all-torn) region.
    ///
    /// Errors: [`JournalError::BufferTooSmall`] when `buf` is shorter than the record;
    /// [`JournalError::Flash`] when the record found by the scan can no longer be read
    /// back whole (the journal scans again at the next call).
    pub fn load<'b>(&mut self, buf: &'b mut [u8]) -> Result<Option<&'b [u8]>, JournalError> {
        let known = self.known();
        let Some(found) = known.newest else { return Ok(None) };
        let out = buf.get_mut(..usize::from(found.len)).ok_or(JournalError::BufferTooSmall)?;
        let end = self.page_end(found.at);
        match self.record_at(found.at, end, Some(&mut *out)) {
            Ok(Some((again, _))) if again == found => Ok(Some(out)),
            _ => {
                self.known = None;
                Err(JournalError::Flash)
            }
        }
    }

    /// Appends `record` as the newest; atomic: a power cut at any instant leaves the
    /// previous record or this one as what [`load`](Self::load) returns.
    ///
    /// The first save of a journal value erases a page (see the crate documentation).
    /// Errors: [`JournalError::TooLarge`] past [`max_len`](Self::max_len) (nothing is
    /// written); [`JournalError::Flash`] when an erase or write fails: the record may or
    /// may not have become the newest, and the next call scans the region again.
    pub fn save(&mut self, record: &[u8]) -> Result<(), JournalError> {
        let len = u16::try_from(record.len())
            .ok()
            .filter(|&l| usize::from(l) <= self.max_len())
            .ok_or(JournalError::TooLarge)?;
        let known = self.known();
        // Whatever fails below, the next call starts from a fresh scan (and a fresh page).
        self.known = None;
        let seq = known.newest.map_or(1, |n| n.seq.wrapping_add(1)).wrapping_add(known.slack);
        let extent = u32::try_from(Self::extent(len.into())).map_err(|_| JournalError::TooLarge)?;
        let behind = known.newest.filter(|_| known.append).and_then(|n| {
            let next = n.at.checked_add(u32::try_from(Self::extent(n.len.into())).ok()?)?;
            next.checked_add(extent).filter(|&end| end <= self.page_end(n.at)).map(|_| next)
        });
        let at = match behind {
            Some(at) => at,
            None => {
                let start = known.newest.map_or(0, |n| self.next_page(n.at));
                let end = start.checked_add(self.page.get()).ok_or(JournalError::Layout)?;
                self.flash.erase(start, end).map_err(|_| JournalError::Flash)?;
                start
            }
        };
        self.write_record(at, seq, len, record).map_err(|_| JournalError::Flash)?;
        self.known = Some(Known { newest: Some(Found { at, len, seq }), append: true, slack: 0 });
        Ok(())
    }

    /// The trailer (commit) length: `max(4, W)`.
    fn trailer() -> usize {
        CRC_LEN.max(S::WRITE_SIZE)
    }

    /// Bytes from a record's start to its commit: header and data rounded up to `W`.
    fn body(len: usize) -> usize {
        (HEADER + len).next_multiple_of(S::WRITE_SIZE)
    }

    /// Bytes a record of `len` occupies.
    fn extent(len: usize) -> usize {
        Self::body(len) + Self::trailer()
    }

    /// The end of the page holding `at`.
    fn page_end(&self, at: u32) -> u32 {
        (at / self.page).saturating_add(1).saturating_mul(self.page.get())
    }

    /// The start of the page after the one holding `at`, cyclically.
    fn next_page(&self, at: u32) -> u32 {
        ((at / self.page).saturating_add(1) % self.pages).saturating_mul(self.page.get())
    }

    /// What is known, scanning the region first if needed.
    fn known(&mut self) -> Known {
        if let Some(known) = self.known {
            return known;
        }
        let (mut newest, mut slack) = (None::<Found>, 0u32);
        let slot = u32::try_from(Self::extent(0)).ok().and_then(NonZeroU32::new).unwrap_or(NonZeroU32::MAX);
        for page in 0..self.pages.get() {
            let mut at = page.saturating_mul(self.page.get());
            let end = at.saturating_add(self.page.get());
            loop {
                match self.record_at(at, end, None) {
                    Ok(Some((found, next))) => {
                        if newest.is_none_or(|n| newer(found.seq, n.seq)) {
                            newest = Some(found);
                        }
                        at = next;
                    }
                    Ok(None) => break,
                    Err(Unreadable) => {
                        // Records behind this one may be hidden: number the next save
                        // past any of them.
                        slack = slack.max((end.saturating_sub(at) / slot).saturating_add(1));
                        break;
                    }
                }
            }
        }
        let known = Known { newest, append: false, slack };
        self.known = Some(known);
        known
    }

    /// The valid record at `at` in a page ending at `end`, and where the record after it
    /// would start; `Ok(None)` when there is none (erased, torn or garbage), `Err` when
    /// the flash reports a read failure. Copies the data into `out` (exactly the record's
    /// length) when given.
    fn record_at(&mut self, at: u32, end: u32, mut out: Option<&mut [u8]>) -> Result<Option<(Found, u32)>, Unreadable> {
        if at.checked_add(HEADER as u32).is_none_or(|e| e > end) {
            return Ok(None);
        }
        let mut header = [0u8; HEADER];
        self.read_into(at, &mut header)?;
        let [magic, format, l0, l1, s0, s1, s2, s3] = header;
        let len = u16::from_le_bytes([l0, l1]);
        let seq = u32::from_le_bytes([s0, s1, s2, s3]);
        let Some((commit, next)) = Self::bounds(at, end, len) else { return Ok(None) };
        if magic != MAGIC || format != FORMAT || out.as_ref().is_some_and(|o| o.len() != usize::from(len)) {
            return Ok(None);
        }
        let mut digest = CRC32C.digest();
        let mut seen = 0usize;
        self.read_span(at, commit.saturating_sub(at) as usize, &mut |piece| {
            digest.update(piece);
            if let Some(out) = out.as_deref_mut() {
                for (i, &b) in piece.iter().enumerate() {
                    let slot = seen.checked_add(i).and_then(|k| k.checked_sub(HEADER)).and_then(|k| out.get_mut(k));
                    if let Some(slot) = slot {
                        *slot = b;
                    }
                }
            }
            seen = seen.saturating_add(piece.len());
        })?;
        let mut trailer = [0u8; MAX_UNIT];
        let trailer = trailer.get_mut(..Self::trailer()).ok_or(Unreadable)?;
        self.read_into(commit, trailer)?;
        let (crc, pad) = trailer.split_at_checked(CRC_LEN).ok_or(Unreadable)?;
        let crc_ok = crc == digest.finalize().to_le_bytes();
        Ok((crc_ok && pad.iter().all(|&b| b == self.erased)).then_some((Found { at, len, seq }, next)))
    }

    /// Where the commit of a record of `len` at `at` starts, and where the next record
    /// would; `None` if it crosses `end`.
    fn bounds(at: u32, end: u32, len: u16) -> Option<(u32, u32)> {
        let commit = at.checked_add(u32::try_from(Self::body(len.into())).ok()?)?;
        let next = commit.checked_add(u32::try_from(Self::trailer()).ok()?)?;
        (next <= end).then_some((commit, next))
    }

    /// Reads `out.len()` bytes at `at`.
    fn read_into(&mut self, at: u32, out: &mut [u8]) -> Result<(), Unreadable> {
        let mut filled = 0usize;
        self.read_span(at, out.len(), &mut |piece| {
            if let Some(dst) = filled.checked_add(piece.len()).and_then(|e| out.get_mut(filled..e)) {
                dst.copy_from_slice(piece);
            }
            filled = filled.saturating_add(piece.len());
        })?;
        if filled == out.len() { Ok(()) } else { Err(Unreadable) }
    }

    /// Feeds the bytes `at..at + len` to `sink` in order, reading `READ_SIZE`-aligned
    /// pieces of at most 64 bytes. Fails when a read fails (or the span leaves the region).
    fn read_span(&mut self, at: u32, len: usize, sink: &mut dyn FnMut(&[u8])) -> Result<(), Unreadable> {
        self.try_read_span(at, len, sink).ok_or(Unreadable)
    }

    fn try_read_span(&mut self, at: u32, len: usize, sink: &mut dyn FnMut(&[u8])) -> Option<()> {
        let read = u32::try_from(S::READ_SIZE).ok()?;
        let end = at.checked_add(u32::try_from(len).ok()?)?;
        let mut buf = [0u8; CHUNK];
        let mut pos = at.checked_sub(at.checked_rem(read)?)?;
        while pos < end {
            // Pages are multiples of READ_SIZE, so the aligned end stays in the region.
            let want = end.checked_sub(pos)?.min(CHUNK as u32).checked_next_multiple_of(read)?;
            let piece = buf.get_mut(..want as usize)?;
            self.flash.read(pos, piece).ok()?;
            let lo = at.saturating_sub(pos) as usize;
            let hi = (end.checked_sub(pos)?.min(want)) as usize;
            sink(piece.get(lo..hi)?);
            pos = pos.checked_add(want)?;
        }
        Some(())
    }

    /// Programs a record at `at` (a page offset with room for it, never written since
    /// the page's erase): header unit(s), whole data units, the padded last data unit,
    /// then the commit.
    fn write_record(&mut self, at: u32, seq: u32, len: u16, data: &[u8]) -> Result<(), S::Error> {
        let w = S::WRITE_SIZE;
        let mut unit = [self.erased; MAX_UNIT];
        let mut digest = CRC32C.digest();

        let head = HEADER.max(w);
        let (first, rest) = data.split_at(data.len().min(head - HEADER));
        let [l0, l1] = len.to_le_bytes();
        let [s0, s1, s2, s3] = seq.to_le_bytes();
        unit[..HEADER].copy_from_slice(&[MAGIC, FORMAT, l0, l1, s0, s1, s2, s3]);
        unit[HEADER..HEADER + first.len()].copy_from_slice(first);
        digest.update(&unit[..head]);
        self.flash.write(at, &unit[..head])?;
        let mut pos = at + head as u32;

        let (whole, tail) = rest.split_at(rest.len() - rest.len() % w);
        if !whole.is_empty() {
            digest.update(whole);
            self.flash.write(pos, whole)?;
            pos += whole.len() as u32;
        }
        if !tail.is_empty() {
            unit.fill(self.erased);
            unit[..tail.len()].copy_from_slice(tail);
            digest.update(&unit[..w]);
            self.flash.write(pos, &unit[..w])?;
            pos += w as u32;
        }

        unit.fill(self.erased);
        unit[..CRC_LEN].copy_from_slice(&digest.finalize().to_le_bytes());
        self.flash.write(pos, &unit[..Self::trailer()])
    }
}

/// Whether sequence number `a` is newer than `b` (wrapping, serial-number arithmetic).
fn newer(a: u32, b: u32) -> bool {
    a != b && a.wrapping_sub(b) < 1 << 31
}

#[cfg(test)]
mod tests {
    use super::newer;

    #[test]
    fn sequence_comparison_wraps() {
        assert!(newer(1, 0));
        assert!(!newer(0, 1));
        assert!(!newer(5, 5));
        assert!(newer(0, u32::MAX));
        assert!(newer(3, u32::MAX - 3));
        assert!(!newer(u32::MAX - 3, 3));
    }
}
