//! Shared by the journal's tests: parts, records, and the power-cut sweep.
#![allow(dead_code)]

use std::cell::RefCell;
use std::rc::Rc;

use embedded_storage::nor_flash::{ErrorType, NorFlash, ReadNorFlash};
use mota_journal::{Journal, JournalError};
use mota_simflash::{CutMode, Geometry, SimFlash, SimFlashError, Snapshot};

/// Every way a cut can come: before an operation, or tearing it (a write programs a
/// prefix or random bits; an erase erases a prefix or random bytes).
pub const MODES: [CutMode; 3] = [CutMode::Before, CutMode::TearPrefix, CutMode::TearBits];

/// Whether the full sweep was asked for (`MOTA_FULL_SWEEP=1`).
pub fn full_sweep() -> bool {
    std::env::var("MOTA_FULL_SWEEP").is_ok_and(|v| v == "1")
}

/// A part of `pages` erase pages of `E` bytes with write unit `W`.
pub fn part<const W: usize, const E: usize, const M: bool>(pages: usize, erased: u8) -> SimFlash<W, E, M> {
    SimFlash::new(Geometry::uniform(pages, E as u32, W, erased).expect("geometry"))
}

/// A copy of `flash` (contents and programmed units), with fresh counters.
pub fn fork<const W: usize, const E: usize, const M: bool>(
    snapshot: &Snapshot,
    geometry: &Geometry,
) -> SimFlash<W, E, M> {
    let mut f = SimFlash::new(geometry.clone());
    f.restore(snapshot).expect("restore");
    f
}

/// Record number `n`: `len` bytes that differ from every other record's.
pub fn record(n: u64, len: usize) -> Vec<u8> {
    let mut x = n.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// A length for record `n`, from 0 to `max`, often small, sometimes the largest.
pub fn length(n: u64, max: usize) -> usize {
    match n % 7 {
        0 => max,
        1 => 0,
        2 => (n as usize * 31) % 40,
        6 => (n as usize).wrapping_mul(2_654_435_761) % (max + 1),
        _ => (n as usize).wrapping_mul(2_654_435_761) % (max / 8 + 1),
    }
}

/// Loads with a fresh journal (a reboot).
pub fn reboot_load<const W: usize, const E: usize, const M: bool>(
    flash: &mut SimFlash<W, E, M>,
    erased: u8,
) -> Result<Option<Vec<u8>>, JournalError> {
    let mut j = Journal::new(flash, erased)?;
    let mut buf = vec![0u8; j.max_len()];
    Ok(j.load(&mut buf)?.map(<[u8]>::to_vec))
}

/// A part shared between a journal and the test, so the test can program a cut while a
/// journal (and the place it keeps) is alive.
pub struct Shared<const W: usize, const E: usize, const M: bool>(pub Rc<RefCell<SimFlash<W, E, M>>>);

impl<const W: usize, const E: usize, const M: bool> ErrorType for Shared<W, E, M> {
    type Error = SimFlashError;
}

impl<const W: usize, const E: usize, const M: bool> ReadNorFlash for Shared<W, E, M> {
    const READ_SIZE: usize = 1;

    fn read(&mut self, offset: u32, bytes: &mut [u8]) -> Result<(), SimFlashError> {
        self.0.borrow_mut().read(offset, bytes)
    }

    fn capacity(&self) -> usize {
        self.0.borrow().capacity()
    }
}

impl<const W: usize, const E: usize, const M: bool> NorFlash for Shared<W, E, M> {
    const WRITE_SIZE: usize = W;
    const ERASE_SIZE: usize = E;

    fn erase(&mut self, from: u32, to: u32) -> Result<(), SimFlashError> {
        self.0.borrow_mut().erase(from, to)
    }

    fn write(&mut self, offset: u32, bytes: &[u8]) -> Result<(), SimFlashError> {
        self.0.borrow_mut().write(offset, bytes)
    }
}

/// A history: earlier sessions' save counts (each session a fresh `Journal`), then the
/// number of saves the last session makes before the save that is cut.
#[derive(Debug, Clone)]
pub struct History {
    pub sessions: Vec<u64>,
    pub before_cut: u64,
}

impl History {
    /// Total saves before the cut one.
    pub fn saves(&self) -> u64 {
        self.sessions.iter().sum::<u64>() + self.before_cut
    }
}

/// Runs `count` saves from record `*n` on `j`, returning the last record saved.
pub fn saves<S: NorFlash>(j: &mut Journal<S>, n: &mut u64, count: u64, last: &mut Option<Vec<u8>>) {
    let max = j.max_len();
    for _ in 0..count {
        let r = record(*n, length(*n, max));
        j.save(&r).unwrap_or_else(|e| panic!("save of record {n}: {e}"));
        *last = Some(r);
        *n += 1;
    }
}

/// The histories a sweep covers: the first save on a fresh region, a session's first save
/// (it opens a page), appends in the first page and later ones, and saves that rotate to
/// the next page inside a session (lengths vary, so some of the `before_cut` values land
/// on a page switch).
pub fn histories(full: bool) -> Vec<History> {
    let (depth, earlier): (u64, &[&[u64]]) =
        if full { (24, &[&[], &[1], &[3, 2], &[9, 1, 5], &[40]]) } else { (5, &[&[], &[2], &[5, 1]]) };
    let mut out = Vec::new();
    for sessions in earlier {
        for before_cut in 0..=depth {
            out.push(History { sessions: sessions.to_vec(), before_cut });
        }
    }
    out
}

/// Counts of a sweep.
#[derive(Debug, Default, Clone, Copy)]
pub struct Counts {
    /// Cut points checked (first cuts: operation × mode).
    pub cuts: u64,
    /// Second cuts checked (a cut during the save after a cut's reboot).
    pub double_cuts: u64,
    /// First cuts that landed on an erase (of a session's first page or a rotation).
    pub erase_cuts: u64,
    /// First cuts on a save that rotated to the next page inside a session.
    pub rotation_cuts: u64,
    /// First cuts after which `load` returned the new record.
    pub new_after_cut: u64,
}

impl std::ops::AddAssign for Counts {
    fn add_assign(&mut self, o: Self) {
        self.cuts += o.cuts;
        self.double_cuts += o.double_cuts;
        self.erase_cuts += o.erase_cuts;
        self.rotation_cuts += o.rotation_cuts;
        self.new_after_cut += o.new_after_cut;
    }
}

/// The power-cut sweep for one history: every mutating operation of the next save is cut
/// in every mode; after the reboot `load` must return exactly the old or the new record,
/// and a session after it must save (the single-write part refuses any second program of
/// a unit), load, save again and load. With `doubles`, every operation of that first
/// recovery save is cut too, in every mode, and the same holds after the second reboot.
pub fn sweep<const W: usize, const E: usize, const M: bool>(
    pages: usize,
    erased: u8,
    history: &History,
    doubles: bool,
) -> Counts {
    let label = format!("W={W} E={E} multi={M} erased={erased:#04x} {history:?}");
    let mut base: SimFlash<W, E, M> = part(pages, erased);
    let (mut n0, mut before_last) = (0, None);
    for &count in &history.sessions {
        let mut j = Journal::new(&mut base, erased).expect("journal");
        saves(&mut j, &mut n0, count, &mut before_last);
    }
    let snapshot = base.snapshot();
    let geometry = base.geometry().clone();

    // The last session up to the cut save, on a fresh copy; the journal stays alive.
    let session = || {
        let flash = Rc::new(RefCell::new(fork::<W, E, M>(&snapshot, &geometry)));
        let mut j = Journal::new(Shared(flash.clone()), erased).expect("journal");
        let (mut n, mut old) = (n0, before_last.clone());
        saves(&mut j, &mut n, history.before_cut, &mut old);
        let new = record(n, length(n, j.max_len()));
        (flash, j, old, new, n)
    };

    // Uncut: how many operations the save has, and whether it erases (then first).
    let (flash, mut j, _, new, _) = session();
    let before = flash.borrow().stats();
    j.save(&new).expect("uncut save");
    let after = flash.borrow().stats();
    let ops = after.mutating() - before.mutating();
    let erases = after.erases - before.erases;
    assert!(erases <= 1, "{label}: one save erased {erases} pages");
    let rotation = erases == 1 && history.before_cut > 0;

    let mut counts = Counts::default();
    for i in 1..=ops {
        for (m, mode) in MODES.into_iter().enumerate() {
            let at = format!("{label}: {mode:?} cut at op {i}/{ops}");
            let (flash, mut j, old, new, n) = session();
            {
                let mut f = flash.borrow_mut();
                f.seed(i * 7919 + m as u64 * 104_729 + history.saves() * 31);
                let op = f.stats().mutating() + i;
                f.cut_at(op, mode);
            }
            assert!(j.save(&new).is_err(), "{at}: the cut must interrupt the save");
            drop(j);
            let mut f = Rc::try_unwrap(flash).ok().expect("journal dropped").into_inner();
            f.restore_power();
            let got = reboot_load(&mut f, erased).unwrap_or_else(|e| panic!("{at}: load: {e}"));
            assert!(got == old || got.as_ref() == Some(&new), "{at}: load returned neither the old nor the new record");
            counts.cuts += 1;
            counts.erase_cuts += u64::from(erases == 1 && i == 1);
            counts.rotation_cuts += u64::from(rotation);
            counts.new_after_cut += u64::from(got.as_ref() == Some(&new));

            let cut_state = f.snapshot();
            recover(&mut f, erased, n + 1, &at);
            if doubles {
                let r1 = record(n + 1, length(n + 1, max_len::<W, E, M>(&cut_state, &geometry, erased)));
                let ops2 = {
                    let mut probe = fork::<W, E, M>(&cut_state, &geometry);
                    let before = probe.stats().mutating();
                    Journal::new(&mut probe, erased).expect("journal").save(&r1).expect("recovery save");
                    probe.stats().mutating() - before
                };
                for i2 in 1..=ops2 {
                    for (m2, mode2) in MODES.into_iter().enumerate() {
                        let at2 = format!("{at}, then {mode2:?} cut at op {i2}/{ops2} of the next save");
                        let mut g = fork::<W, E, M>(&cut_state, &geometry);
                        g.seed(i2 * 6151 + m2 as u64 * 3571 + i * 17);
                        let op = g.stats().mutating() + i2;
                        g.cut_at(op, mode2);
                        assert!(Journal::new(&mut g, erased).expect("journal").save(&r1).is_err(), "{at2}: not cut");
                        g.restore_power();
                        let got2 = reboot_load(&mut g, erased).unwrap_or_else(|e| panic!("{at2}: load: {e}"));
                        assert!(got2 == got || got2.as_ref() == Some(&r1), "{at2}: neither record");
                        recover(&mut g, erased, n + 2, &at2);
                        counts.double_cuts += 1;
                    }
                }
            }
        }
    }
    counts
}

/// Whether the save after `history` rotates to the next page inside its session.
pub fn rotates<const W: usize, const E: usize, const M: bool>(pages: usize, erased: u8, history: &History) -> bool {
    let flash = Rc::new(RefCell::new(part::<W, E, M>(pages, erased)));
    let (mut n, mut last) = (0, None);
    for &count in &history.sessions {
        saves(&mut Journal::new(Shared(flash.clone()), erased).expect("journal"), &mut n, count, &mut last);
    }
    let mut j = Journal::new(Shared(flash.clone()), erased).expect("journal");
    saves(&mut j, &mut n, history.before_cut, &mut last);
    let before = flash.borrow().stats().erases;
    j.save(&record(n, length(n, j.max_len()))).expect("save");
    history.before_cut > 0 && flash.borrow().stats().erases > before
}

/// The journal's `max_len` on a part like `snapshot`.
fn max_len<const W: usize, const E: usize, const M: bool>(
    snapshot: &Snapshot,
    geometry: &Geometry,
    erased: u8,
) -> usize {
    let mut f = fork::<W, E, M>(snapshot, geometry);
    Journal::new(&mut f, erased).expect("journal").max_len()
}

/// After a reboot: a session saves record `n` and loads it, saves `n + 1`, and the next
/// boot loads that.
pub fn recover<const W: usize, const E: usize, const M: bool>(f: &mut SimFlash<W, E, M>, erased: u8, n: u64, at: &str) {
    {
        let mut j = Journal::new(&mut *f, erased).expect("journal");
        let max = j.max_len();
        let mut buf = vec![0u8; max];
        let r1 = record(n, length(n, max));
        j.save(&r1).unwrap_or_else(|e| panic!("{at}: save after the reboot: {e}"));
        assert_eq!(j.load(&mut buf).unwrap_or_else(|e| panic!("{at}: load: {e}")), Some(&r1[..]), "{at}");
        let r2 = record(n + 1, length(n + 1, max));
        j.save(&r2).unwrap_or_else(|e| panic!("{at}: second save after the reboot: {e}"));
    }
    let r2 = record(n + 1, length(n + 1, Journal::new(&mut *f, erased).expect("journal").max_len()));
    assert_eq!(reboot_load(f, erased).unwrap_or_else(|e| panic!("{at}: load after recovery: {e}")), Some(r2), "{at}");
}
