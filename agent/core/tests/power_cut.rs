//! Power cuts at every flash operation of an update, before the operation and inside it,
//! as MCUboot's simulator does between operations and beyond it within them.
//!
//! Each scenario runs once uncut to count its mutating flash operations N; then for every
//! i in 1..=N (and each cut mode) a fresh device is cut at operation i, rebooted and run
//! to idle. After every boot the active model must hash to what the record says and be
//! the old or the new model; at the end the state decodes with no job and the attempt's
//! own report as the last one, the outcome is the uncut one, and the backend holds exactly one terminal
//! report for the attempt (every copy under one key identical).
//!
//! `cargo test` runs a sampled sweep (every configuration and scenario, a spread of
//! operations and modes). The full sweep: `MOTA_FULL_SWEEP=1 cargo test --release -p
//! mota-agent --test power_cut -- --nocapture` (prints the run count and the time).

mod common;

use std::time::Instant;

use common::*;
use mota_agent::Work;
use mota_proto::Digest;
use mota_proto::message::{ErrorCode, Event};
use mota_simflash::{CutMode, SimFlash, Snapshot};

const MODES: [CutMode; 3] = [CutMode::Before, CutMode::TearPrefix, CutMode::TearBits];

/// What the attempt must end in.
#[derive(Clone)]
struct Expect {
    model: Vec<u8>,
    rollout: u64,
    event: Event,
    error: Option<ErrorCode>,
}

/// One scenario: what is done uncut first, then what is published for the cut part.
struct Scenario {
    name: &'static str,
    setup: Vec<Step>,
    step: Step,
    expect: Expect,
    /// What the product does with a committed model (and the agent's config for it).
    product: Product,
    /// Work per poll.
    work: Work,
}

#[derive(Clone)]
enum Step {
    Offer(Offer),
    Rollback(mota_proto::CommandBody<'static>),
    /// Nothing arrives: the device boots until its trial ends.
    Boots,
}

/// The product's side of the trial after a commit.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Product {
    /// No trial (`trial_boots` 0): the validation set was the trial.
    NoTrial,
    /// Confirms the model once the agent is idle.
    Confirms,
    /// Crashes on the model before it confirms, at every boot.
    Crashes,
}

struct Models {
    v1: Vec<u8>,
    v2: Vec<u8>,
    bad: Vec<u8>,
    set1: Vec<u8>,
    set2: Vec<u8>,
}

fn models() -> Result<Models, BoxError> {
    Ok(Models {
        v1: model("digits_cnn_v1")?,
        v2: model("digits_cnn_v2")?,
        bad: model("digits_cnn_v3_bad")?,
        set1: set("digits_cnn_v1", 40)?,
        set2: set("digits_cnn_v2", 40)?,
    })
}

fn scenarios(m: &Models) -> Result<Vec<Scenario>, BoxError> {
    let committed =
        |model: &[u8], rollout| Expect { model: model.to_vec(), rollout, event: Event::Committed, error: None };
    // Keeps the factory model's counter, so the factory model stays a rollback target.
    let first = offer(&m.v2, OfferSpec { counter: 1, set: Some(&m.set2), ..Default::default() })?;
    let base = |name, setup, step, expect| Scenario {
        name,
        setup,
        step,
        expect,
        product: Product::NoTrial,
        work: Work::default(),
    };
    Ok(vec![
        base("full image", vec![], Step::Offer(first.clone()), committed(&m.v2, 7)),
        Scenario {
            work: Work { flash_bytes: 4096, records: 7 },
            ..base("erase and validation in pieces", vec![], Step::Offer(first.clone()), committed(&m.v2, 7))
        },
        Scenario {
            product: Product::Confirms,
            ..base("trial confirmed", vec![], Step::Offer(first.clone()), committed(&m.v2, 7))
        },
        Scenario {
            product: Product::Crashes,
            ..base(
                "trial reverted",
                vec![Step::Offer(first.clone())],
                Step::Boots,
                Expect {
                    model: m.v1.clone(),
                    rollout: 7,
                    event: Event::Reverted,
                    error: Some(ErrorCode::NOT_CONFIRMED),
                },
            )
        },
        Scenario {
            product: Product::NoTrial,
            work: Work::default(),
            name: "delta",
            setup: vec![],
            step: Step::Offer(offer(&m.v2, OfferSpec { base: Some(&m.v1), set: Some(&m.set2), ..Default::default() })?),
            expect: committed(&m.v2, 7),
        },
        Scenario {
            product: Product::NoTrial,
            work: Work::default(),
            name: "validation failure",
            setup: vec![],
            step: Step::Offer(offer(
                &m.bad,
                OfferSpec { base: Some(&m.v1), set: Some(&m.set1), ..Default::default() },
            )?),
            expect: Expect {
                model: m.v1.clone(),
                rollout: 7,
                event: Event::Rejected,
                error: Some(ErrorCode::ACCURACY_BELOW_MINIMUM),
            },
        },
        Scenario {
            product: Product::NoTrial,
            work: Work::default(),
            name: "rollback command",
            setup: vec![Step::Offer(first.clone())],
            step: Step::Rollback(rollback(&first, factory_target(&m.v1))),
            expect: Expect { model: m.v1.clone(), rollout: 7, event: Event::RolledBack, error: None },
        },
        Scenario {
            product: Product::NoTrial,
            // The set the device has is copied, 4 KiB per poll.
            work: Work { flash_bytes: 4096, records: 0 },
            name: "second update",
            setup: vec![Step::Offer(first)],
            step: Step::Offer(offer(
                &m.v1,
                OfferSpec {
                    rollout: 8,
                    counter: 3,
                    base: Some(&m.v2),
                    set: Some(&m.set2),
                    max_drop: 100,
                    ..Default::default()
                },
            )?),
            expect: committed(&m.v1, 8),
        },
    ])
}

fn device_config(layout: &Layout, m: &Models, s: &Scenario) -> Result<mota_agent::Config<'static>, BoxError> {
    let trial_boots = if s.product == Product::NoTrial { 0 } else { 2 };
    Ok(mota_agent::Config { erased: layout.geometry.erased, trial_boots, work: s.work, ..config(&m.v1)? })
}

fn publish(backend: &mut Backend, step: &Step) -> Result<(), BoxError> {
    match step {
        Step::Offer(o) => backend.publish_offer(o),
        Step::Rollback(command) => backend.command(command)?,
        Step::Boots => {}
    }
    Ok(())
}

/// Boots, checks the running model, and drives to idle.
fn boot_and_drive<const W: usize, const E: usize, const M: bool>(
    device: &Device<W, E, M>,
    config: &mota_agent::Config<'_>,
    backend: &mut Backend,
    allowed: &[Digest],
    product: Product,
) -> Result<Result<(), mota_agent::AgentError>, BoxError>
where
    SimFlash<W, E, M>: Part,
{
    let mut arena = vec![0u8; ARENA];
    let mut agent = match device.boot(config, &mut arena) {
        Ok(a) => a,
        Err(e) => return Ok(Err(e)),
    };
    let m = agent.active_model().ok_or("no model to run")?;
    let bytes = device.slot(m.image.slot);
    let digest = Digest::of(&bytes[..m.installed.size as usize]);
    if digest != m.installed.sha256 || !allowed.contains(&digest) {
        return Err(format!("boot would run slot {} with digest {digest:?}", m.image.slot).into());
    }
    let driven = drive(&mut agent, backend, &TestClock::default());
    if driven.is_ok() && product == Product::Confirms {
        return Ok(agent.confirm());
    }
    Ok(driven)
}

/// [`boot_and_drive`], again after every boot that leaves the model on trial (the
/// product crashed before confirming it), until the trial ends.
fn run<const W: usize, const E: usize, const M: bool>(
    device: &Device<W, E, M>,
    config: &mota_agent::Config<'_>,
    backend: &mut Backend,
    allowed: &[Digest],
    product: Product,
) -> Result<Result<(), mota_agent::AgentError>, BoxError>
where
    SimFlash<W, E, M>: Part,
{
    for _ in 0..=config.trial_boots {
        if let Err(e) = boot_and_drive(device, config, backend, allowed, product)? {
            return Ok(Err(e));
        }
        if product != Product::Crashes || !on_trial(device, config)? {
            break;
        }
    }
    Ok(Ok(()))
}

/// Whether the record holds a model on trial (read without booting the agent).
fn on_trial<const W: usize, const E: usize, const M: bool>(
    device: &Device<W, E, M>,
    config: &mota_agent::Config<'_>,
) -> Result<bool, BoxError>
where
    SimFlash<W, E, M>: Part,
{
    use mota_agent::StateStore;
    let mut store = SimFlash::<W, E, M>::store(device.state_region(), config.erased)?;
    Ok(store.load()?.is_some_and(|s| s.trial.is_some()))
}

struct Prepared<const W: usize, const E: usize, const M: bool> {
    layout: Layout,
    snapshot: Snapshot,
    backend_offer: Option<Vec<u8>>,
    artifacts: std::collections::HashMap<Digest, Vec<u8>>,
    ops: u64,
}

/// Runs the setup uncut, then the step uncut to count its operations.
fn prepare<const W: usize, const E: usize, const M: bool>(
    layout: &Layout,
    s: &Scenario,
    m: &Models,
    allowed: &[Digest],
) -> Result<Prepared<W, E, M>, BoxError>
where
    SimFlash<W, E, M>: Part,
{
    let device = Device::<W, E, M>::new(layout.clone(), &m.v1)?;
    let config = device_config(layout, m, s)?;
    let mut backend = Backend::default();
    for step in &s.setup {
        publish(&mut backend, step)?;
        // The product crashes on a model only from the step on.
        boot_and_drive(&device, &config, &mut backend, allowed, Product::NoTrial)??;
    }
    let snapshot = device.part.borrow().snapshot();
    let (backend_offer, artifacts) = (backend.offer.clone(), backend.artifacts.clone());
    publish(&mut backend, &s.step)?;
    let before = device.ops();
    run(&device, &config, &mut backend, allowed, s.product)??;
    let ops = device.ops() - before;
    check_end(&device, &config, &backend, &s.expect, allowed).map_err(|e| format!("{}: uncut: {e}", s.name))?;
    Ok(Prepared { layout: layout.clone(), snapshot, backend_offer, artifacts, ops })
}

fn check_end<const W: usize, const E: usize, const M: bool>(
    device: &Device<W, E, M>,
    config: &mota_agent::Config<'_>,
    backend: &Backend,
    expect: &Expect,
    allowed: &[Digest],
) -> Result<(), BoxError>
where
    SimFlash<W, E, M>: Part,
{
    let mut arena = vec![0u8; ARENA];
    let agent = device.boot(config, &mut arena)?;
    let state = agent.state();
    if state.trial.is_some() && expect.event == Event::Committed && config.trial_boots > 0 {
        // Confirmed by the product, or still on trial only if the product crashes.
        return Err(format!("still on trial: {state:?}").into());
    }
    if state.job.is_some() || state.report.is_some_and(|r| r.rollout != expect.rollout || r.event != expect.event) {
        return Err(format!("not idle: {state:?}").into());
    }
    let m = agent.active_model().ok_or("no model")?;
    let bytes = device.slot(m.image.slot);
    let digest = Digest::of(&bytes[..m.installed.size as usize]);
    if digest != Digest::of(&expect.model) || digest != m.installed.sha256 || !allowed.contains(&digest) {
        return Err(format!("ended on the wrong model (slot {})", m.image.slot).into());
    }
    let terminal = backend.terminal()?;
    // The step's outcome is the rollout's last terminal report, reported once (a
    // rollback's rollout also holds the commit it undid).
    let mine: Vec<_> = terminal.iter().filter(|t| t.rollout == expect.rollout).collect();
    let once = mine.iter().filter(|t| t.event == expect.event).count() == 1;
    if !once || mine.last().is_none_or(|t| t.event != expect.event || t.error != expect.error) {
        return Err(format!("terminal reports {mine:?}").into());
    }
    if terminal.iter().any(|t| t.rollout == 0) {
        return Err(format!("an offer was refused: {terminal:?}").into());
    }
    Ok(())
}

/// Cuts operation `op` in `mode`, reboots, finishes, checks.
fn cut_run<const W: usize, const E: usize, const M: bool>(
    p: &Prepared<W, E, M>,
    s: &Scenario,
    m: &Models,
    allowed: &[Digest],
    op: u64,
    mode: CutMode,
) -> Result<(), BoxError>
where
    SimFlash<W, E, M>: Part,
{
    let mut part = SimFlash::<W, E, M>::new(p.layout.geometry.clone());
    part.restore(&p.snapshot)?;
    part.seed(op.wrapping_mul(0x9E37_79B9) ^ mode as u64);
    let device = Device { part: std::rc::Rc::new(std::cell::RefCell::new(part)), layout: p.layout.clone() };
    let config = device_config(&p.layout, m, s)?;
    let mut backend = Backend { offer: p.backend_offer.clone(), artifacts: p.artifacts.clone(), ..Default::default() };
    publish(&mut backend, &s.step)?;
    device.part.borrow_mut().cut_at(op, mode);
    let first = run(&device, &config, &mut backend, allowed, s.product)?;
    if first.is_ok() || !device.part.borrow().is_cut() {
        return Err(format!("the cut at op {op} did not happen ({first:?})").into());
    }
    device.part.borrow_mut().restore_power();
    run(&device, &config, &mut backend, allowed, s.product)??;
    check_end(&device, &config, &backend, &s.expect, allowed)
}

/// Sweeps one layout; returns the number of cut runs.
fn sweep_layout<const W: usize, const E: usize, const M: bool>(
    layout: Layout,
    full: bool,
    m: &Models,
    all: &[Scenario],
) -> Result<u64, BoxError>
where
    SimFlash<W, E, M>: Part,
{
    let allowed: Vec<Digest> = [&m.v1, &m.v2].iter().map(|b| Digest::of(b)).collect();
    let mut runs = 0;
    for s in all {
        let p = prepare::<W, E, M>(&layout, s, m, &allowed).map_err(|e| {
            format!(
                "{} / {} sectors W={W} M={M} erased={:#x}: uncut: {e}",
                s.name,
                layout.geometry.sectors().len(),
                layout.geometry.erased
            )
        })?;
        // Sampled: about a dozen cut points spread over the operations, modes rotating.
        let stride = if full { 1 } else { (p.ops / 12).max(1) };
        for op in (1..=p.ops).step_by(stride as usize) {
            let modes: &[CutMode] =
                if full { &MODES } else { std::slice::from_ref(&MODES[(op / stride) as usize % 3]) };
            for &mode in modes {
                cut_run(&p, s, m, &allowed, op, mode).map_err(|e| {
                    format!(
                        "{} / {:?} W={W} M={M} erased={:#x}: cut {mode:?} at op {op} of {}: {e}",
                        s.name,
                        layout.geometry.sectors().len(),
                        layout.geometry.erased,
                        p.ops
                    )
                })?;
                runs += 1;
            }
        }
    }
    Ok(runs)
}

fn sweep_write_size<const W: usize>(full: bool, m: &Models, all: &[Scenario]) -> Result<u64, BoxError> {
    let mut runs = 0;
    for erased in [0xFF, 0x00] {
        runs += sweep_layout::<W, 4096, true>(Layout::uniform(W, erased), full, m, all)?;
        runs += sweep_layout::<W, 16384, true>(Layout::stm32f4(W, erased), full, m, all)?;
        runs += sweep_layout::<W, 4096, true>(Layout::paged(W, erased), full, m, all)?;
        // Single-write (ECC) parts: the state in the journal.
        runs += sweep_layout::<W, 4096, false>(Layout::uniform(W, erased), full, m, all)?;
    }
    Ok(runs)
}

#[test]
fn every_cut_of_every_scenario_recovers() -> TestResult {
    let full = std::env::var_os("MOTA_FULL_SWEEP").is_some();
    let m = models()?;
    let all = scenarios(&m)?;
    let start = Instant::now();
    let runs = sweep_write_size::<1>(full, &m, &all)?
        + sweep_write_size::<4>(full, &m, &all)?
        + sweep_write_size::<8>(full, &m, &all)?
        + sweep_write_size::<16>(full, &m, &all)?
        + sweep_layout::<32, 131072, false>(Layout::stm32h7(), full, &m, &all)?;
    println!(
        "power-cut sweep ({}): {runs} cut runs passed, {} scenarios x 4 geometries (3 multiwrite, 1 single-write) x 4 write sizes x 2 erased values, and the STM32H7 (single-write, 32-byte units), {:.1} s",
        if full { "full" } else { "sampled" },
        all.len(),
        start.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Up to five cuts in one attempt (also inside the recovery boots and the cut-short
/// recoveries), at random operations and modes. The outcome must be the uncut one, or,
/// when more cuts than `max_trials` allows landed while the new model was being
/// validated, the documented rejection (`validation_interrupted`) with the old model
/// running, or, when more than `trial_boots` landed before the product confirmed, the
/// documented revert: a reboot then is indistinguishable from a model that crashed the
/// device (MCUboot reverts a trial after a single reset). Returns (cuts, whether it ended
/// in one of those).
fn multi_cut_run<const W: usize, const E: usize, const M: bool>(
    p: &Prepared<W, E, M>,
    s: &Scenario,
    m: &Models,
    allowed: &[Digest],
    seed: u64,
) -> Result<(u32, bool), BoxError>
where
    SimFlash<W, E, M>: Part,
{
    let mut dice = seed.wrapping_mul(0x2545_F491_4F6C_DD1D) | 1;
    let mut next = move || {
        dice ^= dice << 13;
        dice ^= dice >> 7;
        dice ^= dice << 17;
        dice
    };
    let mut part = SimFlash::<W, E, M>::new(p.layout.geometry.clone());
    part.restore(&p.snapshot)?;
    part.seed(next());
    let device = Device { part: std::rc::Rc::new(std::cell::RefCell::new(part)), layout: p.layout.clone() };
    let config = device_config(&p.layout, m, s)?;
    let mut backend = Backend { offer: p.backend_offer.clone(), artifacts: p.artifacts.clone(), ..Default::default() };
    publish(&mut backend, &s.step)?;
    let mut cuts = 0;
    for _ in 0..1 + next() % 5 {
        {
            let mut part = device.part.borrow_mut();
            let at = part.stats().mutating() + 1 + next() % p.ops.max(1);
            part.cut_at(at, MODES[(next() % 3) as usize]);
        }
        let result = run(&device, &config, &mut backend, allowed, s.product)?;
        let was_cut = device.part.borrow().is_cut();
        device.part.borrow_mut().restore_power();
        if !was_cut {
            result?;
            break; // finished before the cut came
        }
        cuts += 1;
    }
    run(&device, &config, &mut backend, allowed, s.product)??;
    let Err(uncut) = check_end(&device, &config, &backend, &s.expect, allowed) else { return Ok((cuts, false)) };
    let before = if s.setup.is_empty() { &m.v1 } else { &m.v2 };
    let interrupted = Expect {
        model: before.clone(),
        rollout: s.expect.rollout,
        event: Event::Rejected,
        error: Some(ErrorCode::VALIDATION_INTERRUPTED),
    };
    // Likewise more cuts than `trial_boots` between the commit and the product's
    // confirmation: the model is reverted (MCUboot reverts after a single reset).
    let reverted = Expect { event: Event::Reverted, error: Some(ErrorCode::NOT_CONFIRMED), ..interrupted.clone() };
    let allowed_ends: &[&Expect] =
        if s.product == Product::Confirms { &[&interrupted, &reverted] } else { &[&interrupted] };
    if allowed_ends.iter().any(|e| check_end(&device, &config, &backend, e, allowed).is_ok()) {
        return Ok((cuts, true));
    }
    Err(uncut)
}

fn multi_cut_layout<const W: usize, const E: usize, const M: bool>(
    layout: Layout,
    seeds: u64,
    m: &Models,
    all: &[Scenario],
) -> Result<(u64, u64, u64), BoxError>
where
    SimFlash<W, E, M>: Part,
{
    let allowed: Vec<Digest> = [&m.v1, &m.v2].iter().map(|b| Digest::of(b)).collect();
    let (mut runs, mut cuts, mut interrupted) = (0, 0, 0);
    for s in all {
        let p = prepare::<W, E, M>(&layout, s, m, &allowed)?;
        for seed in 0..seeds {
            let (c, i) = multi_cut_run(&p, s, m, &allowed, seed).map_err(|e| {
                format!("{} W={W} erased={:#x}: multi-cut seed {seed}: {e}", s.name, layout.geometry.erased)
            })?;
            cuts += u64::from(c);
            interrupted += u64::from(i);
            runs += 1;
        }
    }
    Ok((runs, cuts, interrupted))
}

#[test]
fn several_cuts_in_one_update_still_recover() -> TestResult {
    let seeds = if std::env::var_os("MOTA_FULL_SWEEP").is_some() { 1000 } else { 25 };
    let m = models()?;
    let all = scenarios(&m)?;
    let start = Instant::now();
    let a = multi_cut_layout::<4, 4096, true>(Layout::uniform(4, 0xFF), seeds, &m, &all)?;
    let b = multi_cut_layout::<16, 16384, true>(Layout::stm32f4(16, 0x00), seeds, &m, &all)?;
    let c = multi_cut_layout::<32, 131072, false>(Layout::stm32h7(), seeds, &m, &all)?;
    println!(
        "multi-cut: {} runs with {} cuts (1 to 5 per run, seeds 0..{seeds}), all recovered; {} ended as validation_interrupted or not_confirmed; {:.1} s",
        a.0 + b.0 + c.0,
        a.1 + b.1 + c.1,
        a.2 + b.2 + c.2,
        start.elapsed().as_secs_f64()
    );
    Ok(())
}
