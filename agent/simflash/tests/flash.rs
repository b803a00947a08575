//! The rules of NOR flash, the faults, the counters, snapshots and file backing.

use embedded_storage::nor_flash::{NorFlash, ReadNorFlash};
use mota_simflash::{CutMode, Geometry, SimFlash, SimFlashError};

type Flash4 = SimFlash<4, 4096>;

fn uniform() -> Flash4 {
    SimFlash::new(Geometry::uniform(4, 4096, 4, 0xFF).unwrap())
}

fn read(f: &mut impl ReadNorFlash, offset: u32, len: usize) -> Vec<u8> {
    let mut buf = vec![0; len];
    f.read(offset, &mut buf).unwrap();
    buf
}

#[test]
fn erase_then_program_then_read() {
    let mut f = uniform();
    assert_eq!(f.capacity(), 16384);
    assert_eq!(read(&mut f, 0, 8), [0xFF; 8]);
    f.write(8, &[1, 2, 3, 4]).unwrap();
    assert_eq!(read(&mut f, 8, 4), [1, 2, 3, 4]);
    assert_eq!(f.write(8, &[0, 0, 0, 0]), Err(SimFlashError::WriteTwice), "single-write part");
    f.erase(0, 4096).unwrap();
    assert_eq!(read(&mut f, 8, 4), [0xFF; 4]);
    f.write(8, &[9, 9, 9, 9]).unwrap();
    assert_eq!(read(&mut f, 8, 4), [9; 4]);
}

#[test]
fn alignment_and_bounds_are_strict() {
    let mut f = uniform();
    assert_eq!(f.write(2, &[0; 4]), Err(SimFlashError::NotAligned));
    assert_eq!(f.write(0, &[0; 3]), Err(SimFlashError::NotAligned));
    assert_eq!(f.write(16384, &[0; 4]), Err(SimFlashError::OutOfBounds));
    assert_eq!(f.erase(0, 100), Err(SimFlashError::NotAligned));
    assert_eq!(f.erase(4096, 0), Err(SimFlashError::OutOfBounds));
    assert_eq!(f.erase(0, 20000), Err(SimFlashError::OutOfBounds));
    let mut buf = [0u8; 4];
    assert_eq!(f.read(16382, &mut buf), Err(SimFlashError::OutOfBounds));
    assert_eq!(f.stats().mutating(), 0, "refused operations change nothing and count nothing");
}

#[test]
fn multiwrite_parts_program_with_and_semantics_and_zero_erased_parts_with_or() {
    let mut f: SimFlash<1, 4096, true> = SimFlash::new(Geometry::uniform(1, 4096, 1, 0xFF).unwrap());
    f.write(0, &[0b1111_0000]).unwrap();
    f.write(0, &[0b1010_1010]).unwrap();
    assert_eq!(read(&mut f, 0, 1), [0b1010_0000]);
    let mut z: SimFlash<1, 4096, true> = SimFlash::new(Geometry::uniform(1, 4096, 1, 0x00).unwrap());
    assert_eq!(read(&mut z, 0, 1), [0]);
    z.write(0, &[0b0000_1111]).unwrap();
    z.write(0, &[0b0101_0000]).unwrap();
    assert_eq!(read(&mut z, 0, 1), [0b0101_1111]);
    z.erase(0, 4096).unwrap();
    assert_eq!(read(&mut z, 0, 1), [0]);
}

#[test]
fn mixed_sector_maps_erase_only_whole_sectors() {
    let g = Geometry::stm32f4(2, 4, 0xFF).unwrap();
    assert_eq!(g.capacity(), 4 * 16384 + 65536 + 2 * 131072);
    let mut f: SimFlash<4, 16384> = SimFlash::new(g);
    f.erase(0, 16384).unwrap();
    f.erase(65536, 131072).unwrap(); // the 64 KiB sector
    assert_eq!(f.erase(65536, 65536 + 16384), Err(SimFlashError::NotAligned), "part of the 64 KiB sector");
    assert_eq!(f.erase(131072, 131072 + 65536), Err(SimFlashError::NotAligned), "part of a 128 KiB sector");
    f.erase(131072, 262144).unwrap();
}

#[test]
fn a_cut_before_an_operation_leaves_it_undone_and_power_off() {
    let mut f = uniform();
    f.write(0, &[1; 4]).unwrap(); // op 1
    f.cut_at(2, CutMode::Before);
    assert_eq!(f.write(4, &[2; 4]), Err(SimFlashError::PowerLoss)); // op 2
    assert!(f.is_cut());
    let mut buf = [0u8; 4];
    assert_eq!(f.read(0, &mut buf), Err(SimFlashError::PowerLoss));
    f.restore_power();
    assert_eq!(read(&mut f, 0, 8), [1, 1, 1, 1, 0xFF, 0xFF, 0xFF, 0xFF]);
    f.write(4, &[2; 4]).unwrap();
}

#[test]
fn torn_writes_program_a_prefix_or_some_bits() {
    for seed in 1..200u64 {
        let mut f = uniform();
        f.seed(seed);
        f.cut_at(1, CutMode::TearPrefix);
        let new = [0x12u8; 64];
        assert_eq!(f.write(0, &new), Err(SimFlashError::PowerLoss));
        f.restore_power();
        let got = read(&mut f, 0, 64);
        let programmed = got.iter().take_while(|&&b| b == 0x12).count();
        assert!(got[programmed..].iter().all(|&b| b == 0xFF), "seed {seed}: not a prefix: {got:?}");

        let mut f = uniform();
        f.seed(seed);
        f.cut_at(1, CutMode::TearBits);
        assert_eq!(f.write(0, &new), Err(SimFlashError::PowerLoss));
        f.restore_power();
        for b in read(&mut f, 0, 64) {
            // Only bits that programming clears can be cleared; 0x12's bits stay set.
            assert_eq!(b & 0x12, 0x12, "seed {seed}: a bit moved the wrong way: {b:#x}");
        }
        // A torn unit needs an erase before it is written again, like on real parts.
        assert_eq!(f.write(0, &new), Err(SimFlashError::WriteTwice));
    }
}

#[test]
fn torn_erases_leave_sectors_partly_erased() {
    let mut saw_partial = false;
    for seed in 1..50u64 {
        let mut f = uniform();
        f.write(0, &[0; 4096]).unwrap();
        f.seed(seed);
        f.cut_at(2, CutMode::TearPrefix);
        assert_eq!(f.erase(0, 4096), Err(SimFlashError::PowerLoss));
        f.restore_power();
        let got = read(&mut f, 0, 4096);
        let erased = got.iter().take_while(|&&b| b == 0xFF).count();
        assert!(got[erased..].iter().all(|&b| b == 0), "seed {seed}: not a prefix");
        saw_partial |= erased > 0 && erased < 4096;
    }
    assert!(saw_partial);
}

#[test]
fn counters_snapshots_and_file_backing() {
    let mut f = uniform();
    f.erase(0, 8192).unwrap();
    f.write(0, &[5; 8]).unwrap();
    read(&mut f, 0, 16);
    let s = f.stats();
    assert_eq!((s.erases, s.writes, s.reads), (1, 1, 1));
    assert_eq!((s.bytes_erased, s.bytes_written, s.bytes_read), (8192, 8, 16));
    let snap = f.snapshot();
    f.erase(0, 4096).unwrap();
    f.restore(&snap).unwrap();
    assert_eq!(read(&mut f, 0, 8), [5; 8]);

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("flash.bin");
    {
        let mut f: Flash4 = SimFlash::with_file(Geometry::uniform(4, 4096, 4, 0xFF).unwrap(), &path).unwrap();
        f.write(4096, &[7; 4]).unwrap();
    }
    let mut again: Flash4 = SimFlash::with_file(Geometry::uniform(4, 4096, 4, 0xFF).unwrap(), &path).unwrap();
    assert_eq!(read(&mut again, 4096, 4), [7; 4], "contents survive a restart");
    assert_eq!(again.write(4096, &[1; 4]), Err(SimFlashError::WriteTwice), "programmed units are known again");
}

#[test]
fn impossible_geometries_are_refused() {
    assert!(Geometry::uniform(4, 4096, 3, 0xFF).is_err());
    assert!(Geometry::uniform(4, 4096, 64, 0xFF).is_err());
    assert!(Geometry::uniform(0, 4096, 4, 0xFF).is_err());
    assert!(Geometry::uniform(4, 4098, 4, 0xFF).is_err());
}

#[test]
fn paged_parts_program_one_page_per_operation() {
    let geometry = Geometry::uniform(2, 4096, 1, 0xFF).unwrap().with_page(256).unwrap();
    let mut f: SimFlash<1, 4096> = SimFlash::new(geometry.clone());
    f.write(200, &[0x11; 600]).unwrap();
    // 200..256, 256..512, 512..768, 768..800: four program operations.
    assert_eq!(f.stats().writes, 4);
    assert_eq!(read(&mut f, 200, 600), vec![0x11; 600]);
    // A cut between pages leaves the earlier pages programmed and the rest erased.
    let mut g: SimFlash<1, 4096> = SimFlash::new(geometry);
    g.cut_at(3, CutMode::Before);
    assert_eq!(g.write(200, &[0x22; 600]), Err(SimFlashError::PowerLoss));
    g.restore_power();
    assert_eq!(read(&mut g, 200, 312), vec![0x22; 312]);
    assert_eq!(read(&mut g, 512, 288), vec![0xFF; 288]);
    assert_eq!(Geometry::uniform(1, 4096, 4, 0xFF).unwrap().with_page(2), Err(mota_simflash::GeometryError::Page));
}

#[test]
fn regions_share_the_part_and_its_counters() {
    use std::cell::RefCell;
    use std::rc::Rc;

    use mota_simflash::{Region, RegionError};
    let part = Rc::new(RefCell::new(uniform()));
    let mut a = Region::new(&part, 0, 8192);
    let mut b = Region::new(&part, 8192, 8192);
    assert_eq!(a.capacity(), 8192);
    b.write(4, &[7, 7, 7, 7]).unwrap();
    assert_eq!(read(&mut b, 4, 4), [7; 4]);
    assert_eq!(read(&mut a, 4, 4), [0xFF; 4], "a region sees only its window");
    assert_eq!(part.borrow().contents()[8196..8200], [7; 4]);
    assert_eq!(a.write(8192, &[0; 4]), Err(RegionError::OutOfBounds));
    assert_eq!(b.erase(4096, 12288), Err(RegionError::OutOfBounds));
    a.erase(0, 4096).unwrap();
    assert_eq!(part.borrow().stats().mutating(), 2, "both regions count on the part");
    part.borrow_mut().cut_at(3, CutMode::Before);
    assert_eq!(b.write(0, &[1; 4]), Err(RegionError::Part(SimFlashError::PowerLoss)));
}
