//! The product's own lifecycle around an update: the trial after a commit (confirm, or
//! revert after too many unconfirmed boots), the lease on the slot its inference reads,
//! and an update whose erase and validation run a bounded piece per poll.

mod common;

use common::*;
use mota_agent::{Config, Leases, Work};
use mota_proto::Digest;
use mota_proto::message::{ErrorCode, Event};
use mota_proto::topic::Kind;

type D = Device<4, 4096>;

/// The running model, the new one and its validation set.
type Models = (Vec<u8>, Vec<u8>, Vec<u8>);

fn models() -> Result<Models, BoxError> {
    Ok((model("digits_cnn_v1")?, model("digits_cnn_v2")?, set("digits_cnn_v2", 100)?))
}

fn with_trial(factory: &[u8]) -> Result<Config<'static>, BoxError> {
    Ok(Config { trial_boots: 2, ..config(factory)? })
}

/// A device that committed the new model (offered with security counter `counter`) and
/// runs it on trial (`trial_boots` 2); the agent that did it is shut down.
struct OnTrial {
    old: Vec<u8>,
    new: Vec<u8>,
    device: D,
    config: Config<'static>,
    backend: Backend,
    offer: Offer,
}

fn committed_on_trial(counter: u32) -> Result<OnTrial, BoxError> {
    let (old, new, set) = models()?;
    let device = D::new(Layout::uniform(4, 0xFF), &old)?;
    let config = with_trial(&old)?;
    let mut arena = vec![0u8; ARENA];
    let mut agent = device.boot(&config, &mut arena)?;
    let mut backend = Backend::default();
    let offer = offer(&new, OfferSpec { counter, set: Some(&set), ..Default::default() })?;
    backend.publish_offer(&offer);
    drive(&mut agent, &mut backend, &TestClock::default())?;
    assert_eq!(agent.active_model().map(|m| m.installed.sha256), Some(Digest::of(&new)));
    assert!(agent.on_trial());
    assert_eq!(agent.state().counter, 1, "the counter waits for the confirmation");
    drop(agent);
    Ok(OnTrial { old, new, device, config, backend, offer })
}

#[test]
fn a_model_on_trial_is_confirmed_and_only_then_raises_the_counter() -> TestResult {
    let OnTrial { old, new, device, config, mut backend, .. } = committed_on_trial(2)?;
    let mut arena = vec![0u8; ARENA];
    let mut agent = device.boot(&config, &mut arena)?;
    assert!(agent.on_trial(), "a boot keeps it on trial");

    // Another offer waits for the trial to end.
    let next = offer(&old, OfferSpec { rollout: 8, counter: 3, ..Default::default() })?;
    let mut net = Net::default();
    agent.handle(Kind::Offer, &next.envelope, &mut net, &TestClock::default())?;
    backend.take(&mut net)?;
    assert!(backend.statuses.iter().any(|s| s.rollout == 0 && s.error == Some(ErrorCode::BUSY)));
    assert!(agent.state().job.is_none());

    agent.confirm()?;
    assert!(!agent.on_trial());
    assert_eq!(agent.state().counter, 2);
    let mut arena = agent.shutdown();
    for _ in 0..4 {
        let agent = device.boot(&config, arena)?;
        assert!(!agent.on_trial(), "a confirmed model is not on trial after a reboot");
        assert_eq!(agent.active_model().map(|m| m.installed.sha256), Some(Digest::of(&new)));
        arena = agent.shutdown();
    }
    Ok(())
}

#[test]
fn a_product_that_never_confirms_gets_the_previous_model_back() -> TestResult {
    let OnTrial { old, device, config, mut backend, offer: o, .. } = committed_on_trial(2)?;
    let mut arena = &mut vec![0u8; ARENA][..];
    // The product crashes on the new model at every boot: boots 1 and 2 keep it on trial,
    // boot 3 goes back.
    for boot in 1..=2 {
        let agent = device.boot(&config, arena)?;
        assert!(agent.on_trial(), "boot {boot}");
        assert_eq!(agent.state().trial.map(|t| t.boots), Some(boot));
        arena = agent.shutdown();
    }
    let mut agent = device.boot(&config, arena)?;
    assert!(!agent.on_trial());
    let m = agent.active_model().ok_or("no model")?;
    assert_eq!((m.image.slot, m.installed.sha256), (0, Digest::of(&old)));
    assert_eq!(agent.state().counter, 1, "a revert never raised the counter");
    assert!(agent.state().previous.is_none(), "the reverted model is no rollback target");

    // Reported once, and the retained offer is not tried again.
    drive(&mut agent, &mut backend, &TestClock::default())?;
    let terminal = backend.terminal()?;
    let events: Vec<_> = terminal.iter().map(|t| (t.rollout, t.event, t.error)).collect();
    assert_eq!(
        events,
        [(7, Event::Committed, None), (7, Event::Reverted, Some(ErrorCode::NOT_CONFIRMED))],
        "{terminal:?}"
    );
    assert_eq!(terminal[1].manifest, Some(o.manifest));
    assert_eq!(backend.statuses.iter().filter(|s| s.event == Event::Accepted).count(), 1);
    Ok(())
}

#[test]
fn a_rollback_command_ends_the_trial() -> TestResult {
    // Counter 1, the factory model's: it stays a rollback target.
    let OnTrial { old, device, config, mut backend, offer: o, .. } = committed_on_trial(1)?;
    let mut arena = vec![0u8; ARENA];
    let mut agent = device.boot(&config, &mut arena)?;
    backend.command(&rollback(&o, factory_target(&old)))?;
    drive(&mut agent, &mut backend, &TestClock::default())?;
    assert!(!agent.on_trial());
    assert_eq!(agent.active_model().map(|m| m.installed.sha256), Some(Digest::of(&old)));
    assert_eq!(backend.terminal()?.last().map(|t| t.event), Some(Event::RolledBack));
    Ok(())
}

#[test]
fn the_erase_waits_for_a_lease_on_the_slot() -> TestResult {
    let (old, new, set) = models()?;
    let device = D::new(Layout::uniform(4, 0xFF), &old)?;
    let leases: &'static Leases = Box::leak(Box::new(Leases::new()));
    let config = Config { leases: Some(leases), ..config(&old)? };
    let mut arena = vec![0u8; ARENA];
    let mut agent = device.boot(&config, &mut arena)?;
    // The product runs the factory model from slot 0 while v2 is installed.
    let inference = leases.acquire().ok_or("no model published")?;
    assert_eq!(inference.slot(), 0);
    let mut backend = Backend::default();
    backend.publish_offer(&offer(&new, OfferSpec { set: Some(&set), ..Default::default() })?);
    drive(&mut agent, &mut backend, &TestClock::default())?;
    assert_eq!(agent.active_model().map(|m| m.image.slot), Some(1));
    let next = leases.acquire().ok_or("no model published")?;
    assert_eq!((next.slot(), next.generation()), (1, inference.generation() + 1));
    drop(next);

    // The next update must erase slot 0, which the first inference still reads.
    backend.publish_offer(&offer(&old, OfferSpec { rollout: 8, counter: 3, ..Default::default() })?);
    let clock = TestClock::default();
    let mut net = Net::default();
    agent.handle(Kind::Offer, backend.offer.as_deref().unwrap_or_default(), &mut net, &clock)?;
    for _ in 0..20 {
        agent.poll(&mut net, &clock)?;
    }
    assert_eq!(agent.state().job.map(|j| j.phase), Some(mota_agent::state::Phase::Erase));
    assert_eq!(&device.slot(0)[..old.len()], &old[..], "slot 0 erased under a lease");
    drop(inference);
    drive(&mut agent, &mut backend, &clock)?;
    assert_eq!(agent.active_model().map(|m| (m.image.slot, m.installed.sha256)), Some((0, Digest::of(&old))));
    Ok(())
}

/// Polls (answering chunk requests) until idle; how many polls found the job in each
/// phase (indexed as `Phase as usize`).
fn polls_per_phase(
    agent: &mut TestAgent<'_, 4, 4096>,
    backend: &mut Backend,
    net: &mut Net,
    clock: &TestClock,
) -> Result<[u32; 4], BoxError> {
    let mut polls = [0; 4];
    for _ in 0..10_000 {
        match agent.state().job.map(|j| j.phase) {
            Some(phase) => polls[phase as usize] += 1,
            None if agent.is_idle() => break,
            None => {}
        }
        agent.poll(net, clock)?;
        for reply in backend.take(net)? {
            agent.handle(Kind::Chunk, &reply, net, clock)?;
        }
    }
    backend.take(net)?;
    Ok(polls)
}

/// An update with `work` per poll: polls spent erasing and validating, and the accuracy.
fn pieces(work: Work) -> Result<(u32, u32, Option<u16>), BoxError> {
    use mota_agent::state::Phase;
    let (old, new, set) = models()?;
    let device = D::new(Layout::uniform(4, 0xFF), &old)?;
    let config = Config { work, ..config(&old)? };
    let mut arena = vec![0u8; ARENA];
    let mut agent = device.boot(&config, &mut arena)?;
    let mut backend = Backend::default();
    backend.publish_offer(&offer(&new, OfferSpec { set: Some(&set), ..Default::default() })?);
    let clock = TestClock::default();
    let mut net = Net::default();
    agent.handle(Kind::Offer, backend.offer.as_deref().unwrap_or_default(), &mut net, &clock)?;
    let polls = polls_per_phase(&mut agent, &mut backend, &mut net, &clock)?;
    let (erasing, validating) = (polls[Phase::Erase as usize], polls[Phase::Validate as usize]);
    let terminal = backend.terminal()?;
    assert_eq!(terminal.iter().map(|t| t.event).collect::<Vec<_>>(), [Event::Committed]);
    Ok((erasing, validating, terminal[0].accuracy))
}

#[test]
fn erase_and_validation_run_a_bounded_piece_per_poll() -> TestResult {
    let (erasing, validating, accuracy) = pieces(Work { flash_bytes: 4096, records: 10 })?;
    // A 32 KiB slot in 4 KiB pieces (the first erased when the offer is accepted);
    // 100 records on the new model, then 100 on the running one, 10 per poll.
    assert!(erasing >= 7, "{erasing} polls erasing");
    assert!(validating >= 20, "{validating} polls validating");
    let (_, whole, unbounded) = pieces(Work::default())?;
    assert!(whole <= 1, "{whole} polls validating in one go");
    assert_eq!(accuracy, unbounded, "the pieces add up to the same measurement");
    Ok(())
}

#[test]
fn a_set_the_device_has_is_copied_a_piece_per_poll() -> TestResult {
    use mota_agent::state::Phase;
    let (old, new, set) = models()?;
    let device = D::new(Layout::uniform(4, 0xFF), &old)?;
    let config = config(&old)?;
    let mut arena = vec![0u8; ARENA];
    let mut agent = device.boot(&config, &mut arena)?;
    let mut backend = Backend::default();
    backend.publish_offer(&offer(&new, OfferSpec { counter: 1, set: Some(&set), ..Default::default() })?);
    drive(&mut agent, &mut backend, &TestClock::default())?;
    drop(agent);

    // The next update names the same set: the device copies it from the running slot,
    // 1 KiB per poll.
    let config = Config { work: Work { flash_bytes: 1024, records: 0 }, ..config };
    let mut agent = device.boot(&config, &mut arena)?;
    let back = offer(
        &old,
        OfferSpec { rollout: 8, counter: 1, base: Some(&new), set: Some(&set), max_drop: 1000, ..Default::default() },
    )?;
    backend.publish_offer(&back);
    let clock = TestClock::default();
    let mut net = Net::default();
    let gets = backend.gets;
    agent.hello(&mut net, &clock)?; // delivers the held report: the device is free
    agent.handle(Kind::Offer, &back.envelope, &mut net, &clock)?;
    let copying = polls_per_phase(&mut agent, &mut backend, &mut net, &clock)?[Phase::Set as usize];
    assert!(copying as usize >= set.len() / 1024, "{copying} polls copying {} bytes", set.len());
    assert_eq!(backend.terminal()?.last().map(|t| (t.rollout, t.event)), Some((8, Event::Committed)));
    let patch_chunks = back.artifacts[1].len().div_ceil(1024) as u64;
    assert_eq!(backend.gets - gets, patch_chunks, "the patch was downloaded, the set copied");
    assert_eq!(agent.active_model().map(|m| m.installed.sha256), Some(Digest::of(&old)));
    Ok(())
}
