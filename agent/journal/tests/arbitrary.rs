//! Whatever the region holds (random bytes, or a real journal's image with bytes flipped
//! and ranges erased, with its units programmed or not), `load` neither panics nor returns
//! bytes that were never saved, and a save after it succeeds on the single-write part and
//! is what the next boot loads.

mod common;

use common::*;
use embedded_storage::nor_flash::NorFlash;
use mota_journal::Journal;
use mota_simflash::SimFlash;
use proptest::prelude::*;

const PAGE: usize = 4096;
const PAGES: usize = 2;

/// A single-write part holding `image`: units that read erased are left unprogrammed.
fn holding<const W: usize>(image: &[u8], erased: u8) -> SimFlash<W, PAGE> {
    let mut f: SimFlash<W, PAGE> = part(PAGES, erased);
    for (i, unit) in image.chunks(W).enumerate() {
        if unit.iter().any(|&b| b != erased) {
            f.write((i * W) as u32, unit).expect("program the image");
        }
    }
    f
}

/// The image of a real journal after `sessions` (record counts), and every record saved.
fn journal_image<const W: usize>(sessions: &[u64], erased: u8) -> (Vec<u8>, Vec<Vec<u8>>) {
    let mut f: SimFlash<W, PAGE> = part(PAGES, erased);
    let (mut n, mut saved) = (0u64, Vec::new());
    for &count in sessions {
        let mut j = Journal::new(&mut f, erased).unwrap();
        let max = j.max_len();
        for _ in 0..count {
            let r = record(n, length(n, max) / 4);
            j.save(&r).unwrap();
            saved.push(r);
            n += 1;
        }
    }
    (f.contents().to_vec(), saved)
}

/// Load, then save and load back, on a part holding `image`; `load` may only return one
/// of `saved` (or nothing).
fn check<const W: usize>(image: &[u8], erased: u8, saved: &[Vec<u8>]) -> Result<(), TestCaseError> {
    let mut f = holding::<W>(image, erased);
    let mut j = Journal::new(&mut f, erased).unwrap();
    let mut buf = vec![0u8; j.max_len()];
    let got = j.load(&mut buf).map(|r| r.map(<[u8]>::to_vec));
    match &got {
        Ok(Some(r)) => prop_assert!(saved.contains(r), "load returned {} bytes never saved", r.len()),
        Ok(None) => {}
        Err(e) => prop_assert!(false, "load failed on a readable part: {e}"),
    }
    let new = record(0xdead_beef, 77);
    prop_assert!(j.save(&new).is_ok(), "save after load");
    prop_assert_eq!(j.load(&mut buf).unwrap(), Some(&new[..]));
    let another = record(0xfeed, 1000);
    prop_assert!(j.save(&another).is_ok(), "second save");
    prop_assert_eq!(reboot_load(&mut f, erased).unwrap(), Some(another));
    Ok(())
}

/// A mutation of an image: flip bits of a byte, or erase a range.
#[derive(Debug, Clone)]
enum Mutation {
    Flip(usize, u8),
    Erase(usize, usize),
}

fn mutations() -> impl Strategy<Value = Vec<Mutation>> {
    prop::collection::vec(
        prop_oneof![
            (0..PAGE * PAGES, 1..=255u8).prop_map(|(at, bits)| Mutation::Flip(at, bits)),
            (0..PAGE * PAGES, 1..600usize).prop_map(|(at, len)| Mutation::Erase(at, len)),
        ],
        0..6,
    )
}

fn mutate(image: &mut [u8], erased: u8, mutations: &[Mutation]) {
    for m in mutations {
        match *m {
            Mutation::Flip(at, bits) => image[at] ^= bits,
            Mutation::Erase(at, len) => {
                let end = (at + len).min(image.len());
                image[at..end].fill(erased);
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes(image in prop::collection::vec(any::<u8>(), PAGE * PAGES), erased_ff: bool, unit in 0..3usize) {
        let erased = if erased_ff { 0xFF } else { 0x00 };
        match unit {
            0 => check::<1>(&image, erased, &[])?,
            1 => check::<8>(&image, erased, &[])?,
            _ => check::<32>(&image, erased, &[])?,
        }
    }

    #[test]
    fn damaged_journals(
        sessions in prop::collection::vec(0..12u64, 1..5),
        damage in mutations(),
        erased_ff: bool,
        unit in 0..3usize,
    ) {
        let erased = if erased_ff { 0xFF } else { 0x00 };
        macro_rules! run {
            ($w:literal) => {{
                let (mut image, saved) = journal_image::<$w>(&sessions, erased);
                mutate(&mut image, erased, &damage);
                check::<$w>(&image, erased, &saved)?;
            }};
        }
        match unit {
            0 => run!(1),
            1 => run!(8),
            _ => run!(32),
        }
    }

    #[test]
    fn headers_with_any_length(len in any::<u16>(), seq in any::<u32>(), at in 0..PAGE * PAGES / 8, erased_ff: bool) {
        // A header (right magic and format) claiming any length, anywhere on a unit
        // boundary, over an otherwise erased region.
        let erased = if erased_ff { 0xFF } else { 0x00 };
        let mut image = vec![erased; PAGE * PAGES];
        let at = at * 8;
        let header = [0x4A, 1, len.to_le_bytes()[0], len.to_le_bytes()[1], seq as u8, (seq >> 8) as u8, (seq >> 16) as u8, (seq >> 24) as u8];
        for (i, b) in header.into_iter().enumerate() {
            if let Some(slot) = image.get_mut(at + i) {
                *slot = b;
            }
        }
        check::<8>(&image, erased, &[])?;
    }
}
