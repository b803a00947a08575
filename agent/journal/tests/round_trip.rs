//! Saves and loads without cuts: many saves cycling through the pages, records of every
//! length up to `max_len`, write units 1 to 32, erased 0xFF and 0x00, 4 KiB and 128 KiB
//! pages; sessions (reboots) between saves; the layout checks and errors.

mod common;

use common::*;
use mota_journal::{Journal, JournalError};
use mota_simflash::SimFlash;

/// `saves` saves with a reboot every `session` saves; after each, the journal and a
/// rebooted one load exactly the record. Returns the part's erase count.
fn cycle<const W: usize, const E: usize, const M: bool>(pages: usize, erased: u8, saves: u64, session: u64) -> u64 {
    let mut f: SimFlash<W, E, M> = part(pages, erased);
    let mut n = 0;
    while n < saves {
        let mut j = Journal::new(&mut f, erased).expect("journal");
        let max = j.max_len();
        let mut buf = vec![0u8; max];
        for _ in 0..session.min(saves - n) {
            let r = record(n, length(n, max));
            j.save(&r).unwrap_or_else(|e| panic!("W={W} E={E} save {n}: {e}"));
            assert_eq!(j.load(&mut buf).expect("load"), Some(&r[..]), "W={W} E={E} save {n}");
            n += 1;
        }
        let last = record(n - 1, length(n - 1, max));
        assert_eq!(reboot_load(&mut f, erased).expect("load"), Some(last), "W={W} E={E} after save {n}");
    }
    f.stats().erases
}

fn geometries_cycle(erased: u8) {
    // Thousands of saves, in long sessions and in short ones: every page is erased many
    // times over.
    let pages = 3;
    for (saves, session) in [(2000, 700), (400, 3)] {
        let erases = [
            cycle::<1, 4096, false>(pages, erased, saves, session),
            cycle::<4, 4096, false>(pages, erased, saves, session),
            cycle::<8, 4096, false>(pages, erased, saves, session),
            cycle::<16, 4096, false>(pages, erased, saves, session),
            cycle::<32, 4096, false>(pages, erased, saves, session),
            cycle::<8, 4096, true>(2, erased, saves, session),
        ];
        for e in erases {
            assert!(e > 10 * pages as u64, "{saves} saves erased only {e} pages");
        }
    }
}

#[test]
fn many_saves_cycle_through_the_pages_erased_ff() {
    geometries_cycle(0xFF);
}

#[test]
fn many_saves_cycle_through_the_pages_erased_00() {
    geometries_cycle(0x00);
}

#[test]
fn large_pages_hold_records_up_to_max_len() {
    // STM32H7-like: 128 KiB sectors, 32-byte flash words. The length field caps records.
    let mut f: SimFlash<32, 131072> = part(2, 0xFF);
    let mut j = Journal::new(&mut f, 0xFF).unwrap();
    assert_eq!(j.max_len(), 65535);
    let mut buf = vec![0u8; 65535];
    for (n, len) in [65535usize, 1280, 0, 65535, 65535, 17, 65535].into_iter().enumerate() {
        let r = record(n as u64, len);
        j.save(&r).unwrap();
        assert_eq!(j.load(&mut buf).unwrap(), Some(&r[..]));
    }
    assert_eq!(reboot_load(&mut f, 0xFF).unwrap(), Some(record(6, 65535)));
    assert!(f.stats().erases >= 3);
}

#[test]
fn every_length_round_trips_on_every_unit() {
    fn lengths<const W: usize>(erased: u8) {
        let mut f: SimFlash<W, 4096> = part(2, erased);
        let mut j = Journal::new(&mut f, erased).unwrap();
        let max = j.max_len();
        assert_eq!(max, 4096 - 8 - W.max(4), "W={W}");
        let mut buf = vec![0u8; max];
        for len in (0..=80).chain(max - 40..=max) {
            let r = record(len as u64 * 3 + 1, len);
            j.save(&r).unwrap();
            assert_eq!(j.load(&mut buf).unwrap(), Some(&r[..]), "W={W} len {len}");
        }
        assert_eq!(j.save(&vec![0; max + 1]), Err(JournalError::TooLarge));
        assert_eq!(reboot_load(&mut f, erased).unwrap(), Some(record(max as u64 * 3 + 1, max)));
    }
    for erased in [0xFF, 0x00] {
        lengths::<1>(erased);
        lengths::<2>(erased);
        lengths::<4>(erased);
        lengths::<8>(erased);
        lengths::<16>(erased);
        lengths::<32>(erased);
    }
}

#[test]
fn a_fresh_region_is_empty() {
    let mut f: SimFlash<8, 4096> = part(2, 0xFF);
    let mut j = Journal::new(&mut f, 0xFF).unwrap();
    assert_eq!(j.load(&mut [0u8; 16]).unwrap(), None);
    assert_eq!(f.stats().mutating(), 0, "load wrote to the region");
}

#[test]
fn records_that_look_erased_round_trip() {
    for erased in [0xFF, 0x00] {
        let mut f: SimFlash<16, 4096> = part(2, erased);
        let mut j = Journal::new(&mut f, erased).unwrap();
        let mut buf = [0u8; 64];
        for len in [0, 1, 7, 8, 9, 16, 40] {
            let r = vec![erased; len];
            j.save(&r).unwrap();
            assert_eq!(j.load(&mut buf).unwrap(), Some(&r[..]));
        }
        assert_eq!(reboot_load(&mut f, erased).unwrap(), Some(vec![erased; 40]));
    }
}

/// A part that is never touched: `new` checks only the geometry.
struct Fake<const W: usize, const R: usize, const E: usize>(usize);

impl<const W: usize, const R: usize, const E: usize> embedded_storage::nor_flash::ErrorType for Fake<W, R, E> {
    type Error = core::convert::Infallible;
}

impl<const W: usize, const R: usize, const E: usize> embedded_storage::nor_flash::ReadNorFlash for Fake<W, R, E> {
    const READ_SIZE: usize = R;
    fn read(&mut self, _: u32, _: &mut [u8]) -> Result<(), Self::Error> {
        unreachable!("new must not read")
    }
    fn capacity(&self) -> usize {
        self.0
    }
}

impl<const W: usize, const R: usize, const E: usize> embedded_storage::nor_flash::NorFlash for Fake<W, R, E> {
    const WRITE_SIZE: usize = W;
    const ERASE_SIZE: usize = E;
    fn erase(&mut self, _: u32, _: u32) -> Result<(), Self::Error> {
        unreachable!("new must not erase")
    }
    fn write(&mut self, _: u32, _: &[u8]) -> Result<(), Self::Error> {
        unreachable!("new must not write")
    }
}

fn layout<const W: usize, const R: usize, const E: usize>(capacity: usize) -> Result<usize, JournalError> {
    Journal::new(Fake::<W, R, E>(capacity), 0xFF).map(|j| j.max_len())
}

#[test]
fn the_layout_is_checked() {
    assert_eq!(layout::<8, 1, 4096>(8192), Ok(4096 - 16));
    assert_eq!(layout::<32, 32, 131072>(2 * 131072), Ok(65535));
    assert_eq!(layout::<1, 1, 256>(512), Ok(256 - 12));
    assert_eq!(layout::<32, 1, 64>(128), Ok(64 - 32 - 8), "the smallest page for 32-byte units");
    assert_eq!(layout::<8, 1, 4096>(4096), Err(JournalError::Layout), "one page");
    assert_eq!(layout::<8, 1, 4096>(3 * 4096 + 2048), Err(JournalError::Layout), "not whole pages");
    assert_eq!(layout::<64, 1, 4096>(8192), Err(JournalError::Layout), "unit above 32");
    assert_eq!(layout::<12, 1, 4092>(8184), Err(JournalError::Layout), "unit not a power of two");
    assert_eq!(layout::<8, 128, 4096>(8192), Err(JournalError::Layout), "read size above 64");
    assert_eq!(layout::<8, 3, 4096>(8192), Err(JournalError::Layout), "read size not a power of two");
    assert_eq!(layout::<32, 1, 32>(64), Err(JournalError::Layout), "page too small for a record");
    assert_eq!(layout::<8, 1, 0>(0), Err(JournalError::Layout), "no erase size");
    assert_eq!(layout::<1, 1, 131072>(17 * 131072), Ok(65535), "the sequence window's largest");
    assert_eq!(layout::<1, 1, 131072>(18 * 131072), Err(JournalError::Layout), "past the sequence window");
    assert_eq!(layout::<8, 1, { 1 << 31 }>(1 << 32), Err(JournalError::Layout), "beyond 32-bit offsets");
}

#[test]
fn buffer_and_size_errors() {
    let mut f: SimFlash<8, 4096> = part(2, 0xFF);
    let mut j = Journal::new(&mut f, 0xFF).unwrap();
    j.save(&[1; 100]).unwrap();
    assert_eq!(j.load(&mut [0u8; 99]), Err(JournalError::BufferTooSmall));
    assert_eq!(j.load(&mut [0u8; 100]).unwrap(), Some(&[1u8; 100][..]));
    let before = j.max_len();
    assert_eq!(j.save(&vec![0; before + 1]), Err(JournalError::TooLarge));
    assert_eq!(j.load(&mut [0u8; 100]).unwrap(), Some(&[1u8; 100][..]));
    assert_eq!(JournalError::Layout.to_string(), "region layout not supported by the journal");
    let _: &dyn std::error::Error = &JournalError::Flash;
}

#[test]
fn an_unreadable_record_is_skipped_not_fatal() {
    // An ECC part reports a torn (or decayed) word as an uncorrectable read error.
    let mut f: SimFlash<8, 4096> = part(2, 0xFF);
    {
        let mut j = Journal::new(&mut f, 0xFF).unwrap();
        j.save(&[1; 40]).unwrap();
        j.save(&[2; 40]).unwrap();
    }
    // The second record starts at 8 + 40 + 8 = 56 in the first page.
    f.set_unreadable(Some(70..71));
    assert_eq!(reboot_load(&mut f, 0xFF).unwrap(), Some(vec![1; 40]));
    let mut j = Journal::new(&mut f, 0xFF).unwrap();
    j.save(&[3; 40]).unwrap();
    let mut buf = [0u8; 40];
    assert_eq!(j.load(&mut buf).unwrap(), Some(&[3u8; 40][..]));
    f.set_unreadable(None);
    assert_eq!(reboot_load(&mut f, 0xFF).unwrap(), Some(vec![3; 40]));
    // The record found by the scan turning unreadable before the copy is an error; the
    // next load scans again.
    let flash = std::rc::Rc::new(std::cell::RefCell::new(f));
    let mut j = Journal::new(Shared(flash.clone()), 0xFF).unwrap();
    assert_eq!(j.load(&mut buf).unwrap(), Some(&[3u8; 40][..]));
    flash.borrow_mut().set_unreadable(Some(4096 + 20..4096 + 21));
    assert_eq!(j.load(&mut buf), Err(JournalError::Flash));
    flash.borrow_mut().set_unreadable(None);
    assert_eq!(j.load(&mut buf).unwrap(), Some(&[3u8; 40][..]));
}

/// A part whose driver reads only `R`-aligned whole `R`-byte pieces.
struct Aligned<const R: usize>(SimFlash<8, 4096>);

impl<const R: usize> embedded_storage::nor_flash::ErrorType for Aligned<R> {
    type Error = mota_simflash::SimFlashError;
}

impl<const R: usize> embedded_storage::nor_flash::ReadNorFlash for Aligned<R> {
    const READ_SIZE: usize = R;
    fn read(&mut self, offset: u32, bytes: &mut [u8]) -> Result<(), Self::Error> {
        assert!(
            (offset as usize).is_multiple_of(R) && bytes.len().is_multiple_of(R),
            "unaligned read {offset}+{}",
            bytes.len()
        );
        self.0.read(offset, bytes)
    }
    fn capacity(&self) -> usize {
        self.0.capacity()
    }
}

impl<const R: usize> embedded_storage::nor_flash::NorFlash for Aligned<R> {
    const WRITE_SIZE: usize = 8;
    const ERASE_SIZE: usize = 4096;
    fn erase(&mut self, from: u32, to: u32) -> Result<(), Self::Error> {
        self.0.erase(from, to)
    }
    fn write(&mut self, offset: u32, bytes: &[u8]) -> Result<(), Self::Error> {
        self.0.write(offset, bytes)
    }
}

#[test]
fn reads_respect_read_size() {
    fn with<const R: usize>() {
        let mut f = Aligned::<R>(part(2, 0xFF));
        for session in 0..20u64 {
            let mut j = Journal::new(&mut f, 0xFF).unwrap();
            let mut buf = vec![0u8; j.max_len()];
            for k in 0..7 {
                let n = session * 7 + k;
                let r = record(n, length(n, 700));
                j.save(&r).unwrap();
                assert_eq!(j.load(&mut buf).unwrap(), Some(&r[..]), "R={R} record {n}");
            }
        }
        let last = record(139, length(139, 700));
        let mut j = Journal::new(&mut f, 0xFF).unwrap();
        assert_eq!(j.load(&mut vec![0u8; 4096]).unwrap(), Some(&last[..]), "R={R}");
    }
    with::<2>();
    with::<16>();
    with::<64>();
}
