//! sequential-storage (what the agent keeps its state in) on the flash model: a value
//! stored survives every power cut, before or inside any flash operation of the next
//! store, as either the old or the new value, never as corruption — on parts that allow a
//! program unit to be written again (AND semantics, `MULTI`). On single-write parts (ECC
//! flash such as STM32L4/H7), its recovery from a torn write programs the torn unit again,
//! which such parts refuse: the last test pins that finding for the agent's design.

use embassy_futures::block_on;
use mota_simflash::{CutMode, Geometry, SimFlash, SimFlashError};
use sequential_storage::cache::Cache;
use sequential_storage::map::{MapConfig, MapStorage};

type Flash = SimFlash<4, 4096, true>;

fn part() -> Flash {
    SimFlash::new(Geometry::uniform(4, 4096, 4, 0xFF).unwrap())
}

fn store(flash: &mut Flash, value: u64) -> Result<(), sequential_storage::Error<SimFlashError>> {
    let mut map = MapStorage::<u8, _, _>::new(flash, MapConfig::new(0..4 * 4096), Cache::new_uncached());
    let mut buf = [0u8; 64];
    block_on(map.store_item(&mut buf, &0u8, &value))
}

fn fetch(flash: &mut Flash) -> Result<Option<u64>, sequential_storage::Error<SimFlashError>> {
    let mut map = MapStorage::<u8, _, _>::new(flash, MapConfig::new(0..4 * 4096), Cache::new_uncached());
    let mut buf = [0u8; 64];
    block_on(map.fetch_item::<u64>(&mut buf, &0u8))
}

/// Cuts every mutating operation of one store (before it, or tearing it) after `history`
/// earlier stores; returns how many cut points were checked and whether the store erased.
fn sweep(history: u64, mode: CutMode) -> (u64, bool) {
    let mut base = part();
    for v in 0..history {
        store(&mut base, v).unwrap();
    }
    let next = history;
    let mut probe = SimFlash::new(base.geometry().clone());
    probe.restore(&base.snapshot()).unwrap();
    let (before, erases) = (probe.stats().mutating(), probe.stats().erases);
    store(&mut probe, next).unwrap();
    let ops = probe.stats().mutating() - before;
    let erased = probe.stats().erases > erases;
    for i in 1..=ops {
        let mut f = SimFlash::new(base.geometry().clone());
        f.restore(&base.snapshot()).unwrap();
        f.seed(i * 7919 + history);
        f.cut_at(f.stats().mutating() + i, mode);
        assert!(store(&mut f, next).is_err(), "the cut must interrupt the store");
        f.restore_power();
        let got = fetch(&mut f).unwrap_or_else(|e| panic!("history {history}, {mode:?} cut at op {i}: {e:?}"));
        let old = history.checked_sub(1);
        assert!(got == old || got == Some(next), "history {history}, {mode:?} cut at op {i}: {got:?}");
        // And the device keeps working after the reboot.
        store(&mut f, next + 1)
            .unwrap_or_else(|e| panic!("history {history}, {mode:?} cut at op {i}: next store: {e:?}"));
        assert_eq!(fetch(&mut f).unwrap(), Some(next + 1));
    }
    (ops, erased)
}

#[test]
fn a_stored_value_survives_every_cut_of_the_next_store() {
    // The stores that erase a page (found by running one part through 3,000 stores), plus
    // a spread of ordinary ones.
    let mut probe = part();
    let mut erasing_stores = Vec::new();
    for v in 0..3000u64 {
        let before = probe.stats().erases;
        store(&mut probe, v).unwrap();
        if probe.stats().erases > before && erasing_stores.len() < 3 {
            erasing_stores.push(v);
        }
    }
    assert!(!erasing_stores.is_empty(), "3,000 stores never erased a page");
    let (mut cuts, mut erasing) = (0, 0);
    for history in (0..600).step_by(97).chain(erasing_stores) {
        for mode in [CutMode::Before, CutMode::TearPrefix, CutMode::TearBits] {
            let (ops, erased) = sweep(history, mode);
            cuts += ops;
            erasing += u64::from(erased);
        }
    }
    eprintln!("{cuts} cut points checked, {erasing} sweeps over stores that erase a page");
    assert!(cuts > 50 && erasing > 0, "the sweep must reach page erases ({cuts} cuts, {erasing} erasing)");
}

#[test]
fn single_write_parts_refuse_the_rewrite_of_a_torn_unit() {
    let mut f: SimFlash<4, 4096> = SimFlash::new(Geometry::uniform(4, 4096, 4, 0xFF).unwrap());
    let config = || MapConfig::new(0..4 * 4096);
    f.seed(7919); // a tear that programs part of the first unit
    f.cut_at(1, CutMode::TearPrefix);
    let mut buf = [0u8; 64];
    {
        let mut map = MapStorage::<u8, _, _>::new(&mut f, config(), Cache::new_uncached());
        assert!(block_on(map.store_item(&mut buf, &0u8, &1u64)).is_err());
    }
    f.restore_power();
    let mut map = MapStorage::<u8, _, _>::new(&mut f, config(), Cache::new_uncached());
    let next = block_on(map.store_item(&mut buf, &0u8, &2u64));
    assert!(
        matches!(next, Err(sequential_storage::Error::Storage { value: SimFlashError::WriteTwice, .. })),
        "{next:?}"
    );
}
