//! Power cuts at every mutating flash operation of a save, in every mode (before the
//! operation, a torn prefix, torn bits; on an erase: a partial erase), for histories that
//! put the cut on a fresh region's first save, on a session's first save (which erases a
//! page), in the middle of a page and on a rotation to the next page; then a second cut
//! during the save after the reboot. After every reboot `load` returns exactly the old or
//! the new record, and the single-write part (which refuses a second program of a unit)
//! takes the next saves.
//!
//! `cargo test` runs every cut of a shorter set of histories and double cuts for a quarter
//! of them. The full sweep (more histories, double cuts everywhere):
//! `MOTA_FULL_SWEEP=1 cargo test --release -p mota-journal --test power_cut -- --nocapture`
//! (prints the run counts and the time).

mod common;

use std::time::Instant;

use common::*;

/// Every history of the sweep on one part.
fn run<const W: usize, const E: usize, const M: bool>(pages: usize, erased: u8, full: bool) -> Counts {
    let mut counts = Counts::default();
    for (k, history) in histories(full).iter().enumerate() {
        counts += sweep::<W, E, M>(pages, erased, history, full || k % 4 == 0);
    }
    counts
}

fn report(name: &str, counts: Counts, start: Instant) {
    eprintln!(
        "{name}: {} cuts ({} on erases, {} on in-session rotations, {} left the new record), {} double cuts, {:.1} s",
        counts.cuts,
        counts.erase_cuts,
        counts.rotation_cuts,
        counts.new_after_cut,
        counts.double_cuts,
        start.elapsed().as_secs_f64()
    );
    assert!(counts.erase_cuts > 0 && counts.rotation_cuts > 0 && counts.double_cuts > 0, "{name}: {counts:?}");
}

fn single_write<const W: usize>() {
    let start = Instant::now();
    let full = full_sweep();
    let mut counts = run::<W, 4096, false>(2, 0xFF, full);
    counts += run::<W, 4096, false>(3, 0x00, full);
    report(&format!("single-write W={W}"), counts, start);
}

#[test]
fn single_write_unit_1() {
    single_write::<1>();
}

#[test]
fn single_write_unit_4() {
    single_write::<4>();
}

#[test]
fn single_write_unit_8() {
    single_write::<8>();
}

#[test]
fn single_write_unit_16() {
    single_write::<16>();
}

#[test]
fn single_write_unit_32() {
    single_write::<32>();
}

#[test]
fn single_write_128k_sectors() {
    // STM32H7-like: two 128 KiB sectors, 32-byte flash words; records up to 64 KiB.
    let start = Instant::now();
    let full = full_sweep();
    let mut counts = Counts::default();
    // The first history whose cut save rotates to the next page inside its session.
    let rotating = (1..40)
        .map(|before_cut| History { sessions: vec![1], before_cut })
        .find(|h| rotates::<32, 131072, false>(2, 0xFF, h))
        .expect("no rotation in 40 saves");
    let mut histories = vec![History { sessions: vec![], before_cut: 0 }, rotating];
    if full {
        histories.extend([
            History { sessions: vec![3], before_cut: 0 },
            History { sessions: vec![2], before_cut: 3 },
            History { sessions: vec![1], before_cut: 6 },
        ]);
    }
    for history in &histories {
        counts += sweep::<32, 131072, false>(2, 0xFF, history, full);
    }
    if !full {
        // Double cuts on the smallest history only: the debug build's CRC is slow on 64 KiB.
        counts += sweep::<32, 131072, false>(2, 0xFF, &histories[0], true);
    }
    report("single-write 128 KiB", counts, start);
}

#[test]
fn multiwrite_parts_too() {
    let start = Instant::now();
    let full = full_sweep();
    let mut counts = run::<4, 4096, true>(2, 0xFF, full);
    counts += run::<8, 4096, true>(2, 0x00, full);
    report("multi-write", counts, start);
}
