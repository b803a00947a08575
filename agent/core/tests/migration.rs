//! A firmware update must never brick the agent: records written by every earlier
//! format boot (migrated, then rewritten in this build's format), and a record of a newer
//! format boots by its frozen prefix. The fixtures are state regions written by the
//! earlier agents themselves (see `tests/fixtures/*.hex`).

mod common;

use common::*;
use embassy_futures::block_on;
use embedded_storage::nor_flash::NorFlash;
use mota_agent::StateStore;
use mota_agent::state::{STATE_FORMAT, State};
use mota_proto::Digest;
use mota_proto::message::Event;
use sequential_storage::cache::Cache;
use sequential_storage::map::{MapConfig, MapStorage};

type D = Device<4, 4096>;

/// The two models the fixtures name: digits 1.0 in slot 0 and 2.0 (active) in slot 1.
fn device() -> Result<D, BoxError> {
    let device = D::new(Layout::uniform(4, 0xFF), &[1; 4096])?;
    let l = &device.layout;
    mota_simflash::Region::new(&device.part, l.slots[1], l.slot_len)
        .write(0, &[2; 4096])
        .map_err(|e| format!("{e:?}"))?;
    Ok(device)
}

/// Writes a fixture's state region into the device's.
fn restore(device: &D, fixture: &str) -> TestResult {
    let path = format!("{}/tests/fixtures/{fixture}", env!("CARGO_MANIFEST_DIR"));
    let hex: String = std::fs::read_to_string(path)?.lines().filter(|l| !l.starts_with('#')).collect();
    let mut bytes = hex::decode(hex.trim())?;
    bytes.resize(bytes.len().next_multiple_of(4), 0xFF);
    device.state_region().write(0, &bytes).map_err(|e| format!("{e:?}"))?;
    Ok(())
}

fn check_booted(device: &D, report: bool) -> TestResult {
    let config = mota_agent::Config { factory: None, ..config(&model("digits_cnn_v1")?)? };
    for boot in 0..2 {
        let mut arena = vec![0u8; ARENA];
        let agent = device.boot(&config, &mut arena)?;
        let m = agent.active_model().ok_or("no model")?;
        assert_eq!((m.image.slot, m.installed.sha256), (1, Digest::of(&[2; 4096])), "boot {boot}");
        assert_eq!((m.installed.version.as_str(), m.installed.counter), ("2.0", 5));
        let state = agent.state();
        assert_eq!((state.format, state.counter, state.seq), (STATE_FORMAT, 5, 7));
        assert_eq!(state.previous.map(|p| p.sha256), Some(Digest::of(&[1; 4096])), "the rollback target stays");
        assert_eq!(state.report.map(|r| (r.rollout, r.seq, r.event)), report.then_some((42, 6, Event::Committed)));
    }
    // Rewritten in this build's format at the first boot.
    let mut store = mota_agent::MapStore::new(device.state_region(), 0xFF)?;
    assert_eq!(store.load()?.map(|s| s.format), Some(STATE_FORMAT));
    Ok(())
}

#[test]
fn a_format_1_record_boots_the_model_it_names() -> TestResult {
    let device = device()?;
    restore(&device, "state_v1.hex")?;
    check_booted(&device, false) // format 1's report is not carried over
}

#[test]
fn a_format_2_record_is_migrated() -> TestResult {
    let device = device()?;
    restore(&device, "state_v2.hex")?;
    check_booted(&device, true)
}

#[test]
fn a_format_3_record_is_migrated() -> TestResult {
    let device = device()?;
    restore(&device, "state_v3.hex")?;
    check_booted(&device, true)
}

/// A firmware downgrade: the newer build's record keeps its frozen prefix, so this one
/// runs the verified model and keeps the counter; what was in flight is dropped.
#[test]
fn a_newer_format_record_boots_by_its_prefix() -> TestResult {
    let device = device()?;
    restore(&device, "state_v3.hex")?;
    check_booted(&device, true)?;
    let state = mota_agent::MapStore::new(device.state_region(), 0xFF)?.load()?.ok_or("no record")?;
    let mut buf = [0u8; 2048];
    let len = mota_agent::record::encode(&State { report: None, ..state }, &mut buf).ok_or("encode")?;
    buf[0] = STATE_FORMAT + 1;
    let newer = [&buf[..len], &[0xEE; 40][..]].concat(); // and fields this build does not know
    let mut map = MapStorage::<u8, _, _>::new(
        mota_agent::store::Blocking(device.state_region()),
        MapConfig::new(0..device.layout.state_len),
        Cache::new_uncached(),
    );
    block_on(map.store_item(&mut buf, &0u8, &&newer[..])).map_err(|e| format!("{e:?}"))?;
    check_booted(&device, false)
}

/// The migration is one store: a cut at any flash operation of the first boot, before it
/// or tearing it, leaves a record the next boot migrates or has migrated, never a lost
/// model or counter.
#[test]
fn a_cut_during_the_migration_loses_nothing() -> TestResult {
    use mota_simflash::CutMode;
    let config = mota_agent::Config { factory: None, ..config(&model("digits_cnn_v1")?)? };
    let mut runs = 0;
    for fixture in ["state_v1.hex", "state_v2.hex", "state_v3.hex"] {
        // The operations of an uncut first boot.
        let probe = device()?;
        restore(&probe, fixture)?;
        let before = probe.ops();
        drop(probe.boot(&config, &mut vec![0u8; ARENA])?);
        let ops = probe.ops() - before;
        assert!(ops > 0, "{fixture}: the migration stores the record");
        for op in 1..=ops {
            for mode in [CutMode::Before, CutMode::TearPrefix, CutMode::TearBits] {
                let device = device()?;
                restore(&device, fixture)?;
                let at = device.ops() + op;
                device.part.borrow_mut().cut_at(at, mode);
                let cut = device.boot(&config, &mut vec![0u8; ARENA]).map(drop);
                assert!(cut.is_err() && device.part.borrow().is_cut(), "{fixture}: the cut at op {op} did not happen");
                device.part.borrow_mut().restore_power();
                check_booted(&device, fixture != "state_v1.hex")
                    .map_err(|e| format!("{fixture} cut {mode:?} at {op}: {e}"))?;
                runs += 1;
            }
        }
    }
    assert!(runs >= 9, "{runs} cut runs");
    Ok(())
}
