//! Whole updates on a simulated device: full images and deltas to commit, a model that
//! fails its validation set, a rollback command, a second update, cancel, and the device
//! rebooting in the middle.

mod common;

use common::*;
use mota_agent::AgentError;
use mota_proto::Digest;
use mota_proto::message::{ErrorCode, Event};
use mota_proto::topic::Kind;

type D = Device<4, 4096>;

fn v1() -> Result<Vec<u8>, BoxError> {
    model("digits_cnn_v1")
}

fn v2() -> Result<Vec<u8>, BoxError> {
    model("digits_cnn_v2")
}

#[test]
fn a_full_image_with_a_validation_set_is_committed() -> TestResult {
    let (old, new, set) = (v1()?, v2()?, set("digits_cnn_v2", 100)?);
    let device = D::new(Layout::uniform(4, 0xFF), &old)?;
    let config = config(&old)?;
    let mut arena = vec![0u8; ARENA];
    let mut agent = device.boot(&config, &mut arena)?;
    assert_eq!(agent.active_model().map(|m| m.installed.sha256), Some(Digest::of(&old)));
    let mut backend = Backend::default();
    backend.publish_offer(&offer(&new, OfferSpec { set: Some(&set), ..Default::default() })?);
    drive(&mut agent, &mut backend, &TestClock::default())?;

    let m = agent.active_model().ok_or("no model")?;
    assert_eq!((m.image.slot, m.installed.sha256, m.installed.counter), (1, Digest::of(&new), 2));
    assert_eq!(&device.slot(1)[..new.len()], &new[..]);
    assert_eq!(&device.slot(0)[..old.len()], &old[..], "the old model stays for a rollback");
    assert_eq!(agent.state().counter, 2);
    let terminal = backend.terminal()?;
    assert_eq!(terminal.len(), 1);
    assert_eq!((terminal[0].rollout, terminal[0].event), (7, Event::Committed));
    assert!(terminal[0].accuracy.is_some_and(|a| a >= 900), "{terminal:?}");
    let events: Vec<Event> = backend.statuses.iter().map(|s| s.event).collect();
    assert_eq!(events.first(), Some(&Event::Accepted));
    assert!(events.contains(&Event::Verified));
    Ok(())
}

#[test]
fn a_delta_rebuilds_the_model_from_the_active_slot() -> TestResult {
    let (old, new, set) = (v1()?, v2()?, set("digits_cnn_v2", 100)?);
    let device = D::new(Layout::uniform(4, 0xFF), &old)?;
    let config = config(&old)?;
    let mut arena = vec![0u8; ARENA];
    let mut agent = device.boot(&config, &mut arena)?;
    let mut backend = Backend::default();
    let o = offer(&new, OfferSpec { base: Some(&old), set: Some(&set), ..Default::default() })?;
    let patch_len = o.artifacts[1].len();
    backend.publish_offer(&o);
    drive(&mut agent, &mut backend, &TestClock::default())?;
    assert_eq!(agent.active_model().map(|m| m.installed.sha256), Some(Digest::of(&new)));
    assert_eq!(backend.terminal()?.iter().map(|s| s.event).collect::<Vec<_>>(), [Event::Committed]);
    // Chunks asked: the patch and the set, not the image.
    let expected = patch_len.div_ceil(1024) + set.len().div_ceil(1024);
    assert_eq!(backend.gets as usize, expected);
    Ok(())
}

#[test]
fn a_model_below_the_rule_is_rejected_and_the_running_one_stays() -> TestResult {
    let (old, bad, set) = (v1()?, model("digits_cnn_v3_bad")?, set("digits_cnn_v1", 100)?);
    let device = D::new(Layout::uniform(4, 0xFF), &old)?;
    let config = config(&old)?;
    let mut arena = vec![0u8; ARENA];
    let mut agent = device.boot(&config, &mut arena)?;
    let mut backend = Backend::default();
    backend.publish_offer(&offer(&bad, OfferSpec { base: Some(&old), set: Some(&set), ..Default::default() })?);
    drive(&mut agent, &mut backend, &TestClock::default())?;
    let m = agent.active_model().ok_or("no model")?;
    assert_eq!((m.image.slot, m.installed.sha256), (0, Digest::of(&old)));
    assert_eq!(agent.state().counter, 1, "the counter moves only at commit");
    let t = backend.terminal()?;
    assert_eq!(t.len(), 1);
    assert_eq!((t[0].event, t[0].error), (Event::Rejected, Some(ErrorCode::ACCURACY_BELOW_MINIMUM)));
    Ok(())
}

#[test]
fn a_drop_against_the_running_model_is_rejected_even_above_the_minimum() -> TestResult {
    let (old, new, set) = (v1()?, v2()?, set("digits_cnn_v1", 300)?);
    let device = D::new(Layout::uniform(4, 0xFF), &old)?;
    let config = config(&old)?;
    let mut arena = vec![0u8; ARENA];
    let mut agent = device.boot(&config, &mut arena)?;
    let mut backend = Backend::default();
    // v2 scores a little below v1 on v1's set; allow no drop at all.
    backend.publish_offer(&offer(
        &new,
        OfferSpec { set: Some(&set), min_accuracy: 500, max_drop: 0, ..Default::default() },
    )?);
    drive(&mut agent, &mut backend, &TestClock::default())?;
    let t = backend.terminal()?;
    assert_eq!((t[0].event, t[0].error), (Event::Rejected, Some(ErrorCode::ACCURACY_DROP)), "{t:?}");
    assert_eq!(agent.active_model().map(|m| m.image.slot), Some(0));
    Ok(())
}

#[test]
fn rollback_returns_to_the_previous_model_and_keeps_the_counter() -> TestResult {
    let (old, new) = (v1()?, v2()?);
    let device = D::new(Layout::uniform(4, 0xFF), &old)?;
    let config = config(&old)?;
    let mut arena = vec![0u8; ARENA];
    let mut agent = device.boot(&config, &mut arena)?;
    let mut backend = Backend::default();
    let update = offer(&new, OfferSpec { counter: 1, ..OfferSpec::default() })?;
    backend.publish_offer(&update);
    let clock = TestClock::default();
    drive(&mut agent, &mut backend, &clock)?;
    assert_eq!(agent.active_model().map(|m| m.image.slot), Some(1));
    // The commit names what a rollback must return to: the factory model.
    let committed = agent.state().report.ok_or("no report")?;
    assert_eq!(committed.rollback_target, Some(factory_target(&old)));
    backend.command(&rollback(&update, factory_target(&old)))?;
    drive(&mut agent, &mut backend, &clock)?;
    let m = agent.active_model().ok_or("no model")?;
    assert_eq!((m.image.slot, m.installed.sha256), (0, Digest::of(&old)));
    assert_eq!(agent.state().counter, 1, "a rollback never lowers the counter");
    let t = backend.terminal()?;
    assert_eq!(t.iter().map(|s| s.event).collect::<Vec<_>>(), [Event::Committed, Event::RolledBack]);
    // The same command again (retained, after a reconnect) changes nothing and answers
    // with the same report.
    let ops = device.ops();
    drive(&mut agent, &mut backend, &clock)?;
    assert_eq!(device.ops(), ops);
    assert_eq!(backend.terminal()?.len(), 2);
    Ok(())
}

/// Commands carry no number a backend must continue (ids from database rows once let a
/// restored backup's lower ids be ignored, and one `u64::MAX` id end commands for good):
/// a backend restored from a backup, or a new one with the same release key, commands a
/// device at once, whatever it carried out before.
#[test]
fn a_restored_or_new_backend_commands_devices_without_their_history() -> TestResult {
    let (old, new) = (v1()?, v2()?);
    let device = D::new(Layout::uniform(4, 0xFF), &old)?;
    let config = config(&old)?;
    let mut arena = vec![0u8; ARENA];
    let mut agent = device.boot(&config, &mut arena)?;
    let clock = TestClock::default();
    let mut backend = Backend::default();
    let first = offer(&new, OfferSpec { counter: 1, ..OfferSpec::default() })?;
    backend.publish_offer(&first);
    drive(&mut agent, &mut backend, &clock)?;
    backend.command(&rollback(&first, factory_target(&old)))?;
    drive(&mut agent, &mut backend, &clock)?;
    assert!(agent.state().last_cmd.is_some());
    // The backend is replaced; the new one knows nothing of the commands sent before.
    let mut restored = Backend::default();
    let second = offer(&new, OfferSpec { rollout: 9, counter: 1, ..OfferSpec::default() })?;
    restored.publish_offer(&second);
    drive(&mut agent, &mut restored, &clock)?;
    assert_eq!(agent.active_model().map(|m| m.installed.sha256), Some(Digest::of(&new)));
    restored.command(&rollback(&second, factory_target(&old)))?;
    drive(&mut agent, &mut restored, &clock)?;
    assert_eq!(agent.active_model().map(|m| m.installed.sha256), Some(Digest::of(&old)));
    // (The first rollback's report, held until the next offer, reaches it too.)
    let t = restored.terminal()?;
    assert_eq!(
        t.iter().map(|s| (s.rollout, s.event)).collect::<Vec<_>>(),
        [(7, Event::RolledBack), (9, Event::Committed), (9, Event::RolledBack)]
    );
    Ok(())
}

#[test]
fn a_rollback_below_the_counter_is_refused() -> TestResult {
    let (old, new) = (v1()?, v2()?);
    let device = D::new(Layout::uniform(4, 0xFF), &old)?;
    let config = config(&old)?;
    let mut arena = vec![0u8; ARENA];
    let mut agent = device.boot(&config, &mut arena)?;
    let mut backend = Backend::default();
    // The update raised the counter from 1 to 2: the factory model (counter 1) is unusable.
    let update = offer(&new, OfferSpec::default())?;
    backend.publish_offer(&update);
    let clock = TestClock::default();
    drive(&mut agent, &mut backend, &clock)?;
    backend.command(&rollback(&update, factory_target(&old)))?;
    let ops = device.ops();
    drive(&mut agent, &mut backend, &clock)?;
    assert_eq!(device.ops(), ops, "a refused rollback touched flash");
    assert_eq!(agent.active_model().map(|m| m.image.slot), Some(1));
    let refusal = backend.statuses.iter().rfind(|s| s.event == Event::Rejected).ok_or("no refusal")?;
    let named = (refusal.rollout, refusal.seq, refusal.error, refusal.manifest);
    assert_eq!(named, (0, 0, Some(ErrorCode::ROLLBACK_BELOW_COUNTER), Some(update.manifest)));
    Ok(())
}

#[test]
fn rollback_is_refused_when_the_previous_model_is_gone() -> TestResult {
    let old = v1()?;
    let device = D::new(Layout::uniform(4, 0xFF), &old)?;
    let config = config(&old)?;
    let mut arena = vec![0u8; ARENA];
    let mut agent = device.boot(&config, &mut arena)?;
    let mut backend = Backend::default();
    let clock = TestClock::default();
    let update = offer(&v2()?, OfferSpec { counter: 1, ..OfferSpec::default() })?;
    backend.publish_offer(&update);
    drive(&mut agent, &mut backend, &clock)?;
    // The factory model's slot decays (or is tampered with) after the commit.
    device.corrupt(0, 100)?;
    backend.command(&rollback(&update, factory_target(&old)))?;
    let ops = device.ops();
    drive(&mut agent, &mut backend, &clock)?;
    assert_eq!(device.ops(), ops, "a refused rollback writes nothing");
    let refusal = backend.statuses.iter().rfind(|s| s.event == Event::Rejected).ok_or("no refusal")?;
    assert_eq!((refusal.seq, refusal.error), (0, Some(ErrorCode::ROLLBACK_UNAVAILABLE)));
    assert_eq!(agent.active_model().map(|m| m.image.slot), Some(1));
    Ok(())
}

#[test]
fn a_boot_that_cannot_read_or_verify_the_active_model_falls_back_to_the_previous() -> TestResult {
    let old = v1()?;
    for unreadable in [true, false] {
        let device = D::new(Layout::uniform(4, 0xFF), &old)?;
        let config = config(&old)?;
        let mut arena = vec![0u8; ARENA];
        let mut agent = device.boot(&config, &mut arena)?;
        let mut backend = Backend::default();
        backend.publish_offer(&offer(&v2()?, OfferSpec { counter: 1, ..OfferSpec::default() })?);
        drive(&mut agent, &mut backend, &TestClock::default())?;
        assert_eq!(agent.active_model().map(|m| m.image.slot), Some(1));
        drop(agent);
        // Slot 1 fails its reads (an ECC part) or its hash (decay): the same fallback.
        if unreadable {
            device.unreadable(1);
        } else {
            device.corrupt(1, 100)?;
        }
        let agent = device.boot(&config, &mut arena)?;
        let m = agent.active_model().ok_or("no model after the fallback")?;
        assert_eq!((m.image.slot, m.installed.sha256), (0, Digest::of(&old)), "unreadable: {unreadable}");
    }
    Ok(())
}

#[test]
fn a_boot_that_cannot_read_its_only_model_runs_none_instead_of_failing() -> TestResult {
    let old = v1()?;
    let device = D::new(Layout::uniform(4, 0xFF), &old)?;
    let config = config(&old)?;
    let mut arena = vec![0u8; ARENA];
    drop(device.boot(&config, &mut arena)?);
    device.unreadable(0);
    let agent = device.boot(&config, &mut arena)?;
    assert_eq!(agent.active_model(), None, "nothing verified to run");
    Ok(())
}

#[test]
fn a_second_update_reuses_the_set_already_on_the_device() -> TestResult {
    let (old, new, set) = (v1()?, v2()?, set("digits_cnn_v2", 100)?);
    let device = D::new(Layout::uniform(4, 0xFF), &old)?;
    let config = config(&old)?;
    let mut arena = vec![0u8; ARENA];
    let mut agent = device.boot(&config, &mut arena)?;
    let mut backend = Backend::default();
    backend.publish_offer(&offer(&new, OfferSpec { set: Some(&set), ..Default::default() })?);
    let clock = TestClock::default();
    drive(&mut agent, &mut backend, &clock)?;
    // v1 re-released with a higher counter, as a delta from v2, with the same set.
    let second = offer(
        &old,
        OfferSpec { rollout: 8, counter: 3, base: Some(&new), set: Some(&set), max_drop: 100, ..Default::default() },
    )?;
    backend.artifacts.clear();
    backend.publish_offer(&second);
    backend.artifacts.remove(&Digest::of(&set));
    drive(&mut agent, &mut backend, &clock)?;
    let m = agent.active_model().ok_or("no model")?;
    assert_eq!((m.image.slot, m.installed.sha256, agent.state().counter), (0, Digest::of(&old), 3));
    assert_eq!(
        backend.terminal()?.iter().map(|s| (s.rollout, s.event)).collect::<Vec<_>>(),
        [(7, Event::Committed), (8, Event::Committed)]
    );
    Ok(())
}

#[test]
fn cancel_abandons_the_download_and_an_offer_meanwhile_is_busy() -> TestResult {
    let (old, new) = (v1()?, v2()?);
    let device = D::new(Layout::uniform(4, 0xFF), &old)?;
    let config = config(&old)?;
    let mut arena = vec![0u8; ARENA];
    let mut agent = device.boot(&config, &mut arena)?;
    let clock = TestClock::default();
    let mut net = Net::default();
    let first = offer(&new, OfferSpec::default())?;
    agent.handle(Kind::Offer, &first.envelope, &mut net, &clock)?;
    assert!(agent.state().job.is_some());
    let other = offer(&new, OfferSpec { rollout: 9, counter: 5, ..Default::default() })?;
    agent.handle(Kind::Offer, &other.envelope, &mut net, &clock)?;
    let mut backend = Backend::default();
    backend.publish_offer(&first);
    backend.take(&mut net)?;
    let busy = backend.statuses.iter().find(|s| s.event == Event::Rejected).ok_or("no refusal")?;
    assert_eq!((busy.rollout, busy.seq, busy.error), (0, 0, Some(ErrorCode::BUSY)));
    backend.command(&cancel(&first))?;
    drive(&mut agent, &mut backend, &clock)?;
    assert!(agent.state().job.is_none());
    assert!(backend.terminal()?.iter().any(|s| s.event == Event::Cancelled && s.rollout == 7));
    assert_eq!(agent.active_model().map(|m| m.image.slot), Some(0));
    Ok(())
}

#[test]
fn a_reboot_mid_download_resumes_where_it_was() -> TestResult {
    let (old, new, set) = (v1()?, v2()?, set("digits_cnn_v2", 100)?);
    let device = D::new(Layout::uniform(4, 0xFF), &old)?;
    let config = config(&old)?;
    let clock = TestClock::default();
    let mut backend = Backend::default();
    backend.publish_offer(&offer(&new, OfferSpec { set: Some(&set), ..Default::default() })?);
    {
        let mut arena = vec![0u8; ARENA];
        let mut agent = device.boot(&config, &mut arena)?;
        let mut net = Net::default();
        agent.handle(Kind::Offer, backend.offer.as_deref().ok_or("offer")?, &mut net, &clock)?;
        // Six chunks arrive, then the device resets (no flash operation is interrupted).
        for _ in 0..6 {
            for r in backend.take(&mut net)? {
                agent.handle(Kind::Chunk, &r, &mut net, &clock)?;
            }
        }
        assert!(agent.state().job.is_some_and(|j| j.progress >= 4096));
    }
    let gets_before = backend.gets;
    let mut arena = vec![0u8; ARENA];
    let mut agent = device.boot(&config, &mut arena)?;
    drive(&mut agent, &mut backend, &clock)?;
    assert_eq!(agent.active_model().map(|m| m.installed.sha256), Some(Digest::of(&new)));
    let asked_after = backend.gets - gets_before;
    assert!(asked_after < (new.len() + set.len()).div_ceil(1024) as u64, "resumed, not restarted: {asked_after}");
    Ok(())
}

#[test]
fn one_arena_serves_every_boot_of_an_agent_restarted_without_a_reset() -> TestResult {
    let (old, new) = (v1()?, v2()?);
    let device = D::new(Layout::uniform(4, 0xFF), &old)?;
    let config = config(&old)?;
    let clock = TestClock::default();
    let mut backend = Backend::default();
    backend.publish_offer(&offer(&new, OfferSpec::default())?);
    let mut memory = vec![0u8; ARENA];
    let whole = memory.as_ptr_range();
    let mut arena: &mut [u8] = &mut memory;
    // A boot cut short (the first boot stores the record) gives the arena back ...
    let next = device.ops() + 1;
    device.part.borrow_mut().cut_at(next, mota_simflash::CutMode::Before);
    let Err((AgentError::Store(_), back)) = device.boot_or_return_arena(&config, arena) else {
        return Err("the cut boot did not fail in the store".into());
    };
    assert_eq!(back.as_ptr_range(), whole);
    device.part.borrow_mut().restore_power();
    // ... and so does a shutdown mid-download; the next boot resumes with it.
    let mut agent = device.boot_or_return_arena(&config, back).map_err(|(e, _)| e)?;
    let mut net = Net::default();
    agent.handle(Kind::Offer, backend.offer.as_deref().ok_or("offer")?, &mut net, &clock)?;
    for r in backend.take(&mut net)? {
        agent.handle(Kind::Chunk, &r, &mut net, &clock)?;
    }
    assert!(agent.state().job.is_some());
    arena = agent.shutdown();
    assert_eq!(arena.as_ptr_range(), whole);
    let mut agent = device.boot(&config, arena)?;
    drive(&mut agent, &mut backend, &clock)?;
    assert_eq!(agent.active_model().map(|m| m.installed.sha256), Some(Digest::of(&new)));
    // A configuration error gives it back too.
    let small =
        mota_agent::Config { limits: mota_proto::Limits { max_arena_bytes: u32::MAX, ..config.limits }, ..config };
    let Err((AgentError::Config(_), back)) = device.boot_or_return_arena(&small, agent.shutdown()) else {
        return Err("an arena below max_arena_bytes was taken".into());
    };
    assert_eq!(back.as_ptr_range(), whole);
    Ok(())
}

#[test]
fn an_arena_too_small_for_the_patch_block_buffer_is_a_configuration_error() -> TestResult {
    let old = v1()?;
    let device = D::new(Layout::uniform(4, 0xFF), &old)?;
    let config = mota_agent::Config {
        limits: mota_proto::Limits { max_arena_bytes: 1024, ..config(&old)?.limits },
        ..config(&old)?
    };
    let mut small = vec![0u8; mota_delta::BLOCK_BUFFER - 1];
    assert!(matches!(device.boot(&config, &mut small), Err(AgentError::Config(_))));
    let mut enough = vec![0u8; mota_delta::BLOCK_BUFFER];
    assert!(device.boot(&config, &mut enough).is_ok());
    Ok(())
}

#[test]
fn an_offer_delivered_again_after_the_end_brings_the_outcome_again() -> TestResult {
    let (old, new, set) = (v1()?, v2()?, set("digits_cnn_v2", 100)?);
    let device = D::new(Layout::uniform(4, 0xFF), &old)?;
    let config = config(&old)?;
    let mut arena = vec![0u8; ARENA];
    let mut agent = device.boot(&config, &mut arena)?;
    let mut backend = Backend::default();
    let clock = TestClock::default();
    backend.publish_offer(&offer(&new, OfferSpec { set: Some(&set), ..Default::default() })?);
    drive(&mut agent, &mut backend, &clock)?;
    let committed = backend.terminal()?;
    assert_eq!(committed.len(), 1);

    // The report was lost on the way; the backend publishes the retained offer again.
    backend.statuses.clear();
    let mut net = Net::default();
    let again = backend.offer.clone().ok_or("no offer")?;
    agent.handle(Kind::Offer, &again, &mut net, &clock)?;
    backend.take(&mut net)?;
    assert_eq!(backend.terminal()?, committed, "the same report, under the same key");
    assert!(agent.is_idle(), "and nothing is started again");
    assert_eq!(agent.active_model().map(|m| m.installed.sha256), Some(Digest::of(&new)));
    Ok(())
}
