//! The in-memory device (`mota_sim::memdev`): the real agent driven by calls, with the
//! backend stand-in of the agent's own tests (`agent/core/tests/common`: offers signed
//! with the test root, chunks served from the artifacts it holds, statuses collected)
//! as the other end of the bus.

#[path = "../../core/tests/common/mod.rs"]
mod common;

use std::sync::Arc;

use common::{Backend, BoxError, CLASS, Net, Offer, OfferSpec, TestResult, cancel, model, offer, release_key};
use mota_proto::message::{Chunk, Event, Get, Hello, Status};
use mota_proto::topic::Kind;
use mota_proto::{CommandBody, Digest, Wire};
use mota_sim::memdev::Published;
use mota_sim::{MemDevice, MemOptions, Up};
use mota_simflash::CutMode;

const KINDS: [Kind; 7] = Kind::ALL;
const MODES: [CutMode; 3] = [CutMode::Before, CutMode::TearPrefix, CutMode::TearBits];

/// A device of the stand-in's class, trusting the test root, shipped with `factory`.
fn device(id: &str, factory: &[u8]) -> Result<MemDevice, BoxError> {
    let opts = MemOptions {
        id: id.into(),
        class: CLASS.into(),
        roots: vec![mota_proto::testkit::ROOT],
        factory: Arc::from(factory),
        factory_counter: 1,
    };
    Ok(MemDevice::new(opts)?)
}

/// digits_cnn v1 (the factory model) and v2, offered as a full image without a set.
fn v1_v2() -> Result<(Vec<u8>, Vec<u8>, Offer), BoxError> {
    let (old, new) = (model("digits_cnn_v1")?, model("digits_cnn_v2")?);
    let offer = offer(&new, OfferSpec::default())?;
    Ok((old, new, offer))
}

/// The bus: hands what the device published to the stand-in, returns its chunk answers.
fn answer(backend: &mut Backend, out: Published) -> Result<Vec<Vec<u8>>, BoxError> {
    backend.take(&mut Net { out, down: false })
}

/// Delivers answers and lets time pass (a second whenever nothing is in flight) until the
/// device is idle or down.
fn run(dev: &mut MemDevice, backend: &mut Backend, out: Published, now: &mut u64) -> TestResult {
    let mut pending = answer(backend, out)?;
    for _ in 0..10_000 {
        if dev.is_off() || (pending.is_empty() && dev.is_idle()) {
            return Ok(());
        }
        if pending.is_empty() {
            *now += 1000;
            pending = answer(backend, dev.poll(*now))?;
            continue;
        }
        let mut next = Vec::new();
        for chunk in pending {
            next.extend(answer(backend, dev.deliver(Kind::Chunk, &chunk, *now))?);
        }
        pending = next;
    }
    Err("the device never became idle".into())
}

/// As a broker does after every (re)connect: hello out, the retained offer in.
fn connect(dev: &mut MemDevice, backend: &mut Backend, now: &mut u64) -> TestResult {
    let mut out = dev.connect(*now);
    if let Some(offer) = backend.offer.clone() {
        out.extend(dev.deliver(Kind::Offer, &offer, *now));
    }
    run(dev, backend, out, now)
}

/// The device's terminal reports: exactly one, `Committed` for rollout 7.
fn assert_committed_once(backend: &Backend) -> TestResult {
    let terminal = backend.terminal()?;
    assert_eq!(terminal.len(), 1, "{terminal:?}");
    assert_eq!((terminal[0].rollout, terminal[0].event, terminal[0].error), (7, Event::Committed, None));
    Ok(())
}

#[test]
fn a_fresh_device_says_hello_naming_its_factory_model() -> TestResult {
    let (old, _, _) = v1_v2()?;
    let mut dev = device("fresh", &old)?;
    assert_eq!((dev.id(), dev.up(), dev.is_idle()), ("fresh", Up::Running, true));
    assert_eq!(dev.running(), Some(Digest::of(&old)));
    assert_eq!((dev.version().as_deref(), dev.counter()), (Some("factory"), 1));
    let out = dev.connect(0);
    assert_eq!(out.len(), 1, "only the hello: {out:?}");
    let (kind, payload) = &out[0];
    assert_eq!(*kind, Kind::Hello);
    let hello = Hello::parse(payload)?;
    let info = hello.info.ok_or("online hello without info")?;
    assert!(hello.online);
    assert_eq!((info.device_class, info.security_counter), (CLASS, 1));
    let running = info.running.ok_or("no running model")?;
    assert_eq!((running.model, running.version, running.sha256), ("factory", "factory", Digest::of(&old)));
    Ok(())
}

#[test]
fn a_full_image_offer_is_downloaded_chunk_by_chunk_and_committed() -> TestResult {
    let (old, new, offer) = v1_v2()?;
    let mut dev = device("update", &old)?;
    let mut backend = Backend::default();
    backend.publish_offer(&offer);
    let mut now = 0;
    dev.connect(now);
    // Each step by hand: the offer is accepted and the first chunk asked for ...
    let mut out = dev.deliver(Kind::Offer, &offer.envelope, now);
    let mut events = Vec::new();
    for _ in 0..100 {
        let mut next = Vec::new();
        for (kind, payload) in &out {
            match kind {
                // ... every request is answered with the bytes it names ...
                Kind::Get => {
                    let get = Get::parse(payload)?;
                    assert_eq!(get.artifact, Digest::of(&new));
                    let end = (get.offset + get.length) as usize;
                    let chunk = Chunk::data(get.artifact, get.offset, &new[get.offset as usize..end]).to_vec()?;
                    next.extend(dev.deliver(Kind::Chunk, &chunk, now));
                }
                Kind::Status => events.push(Status::parse(payload)?.event),
                _ => return Err(format!("unexpected {kind:?}").into()),
            }
        }
        if events.contains(&Event::Committed) {
            break;
        }
        // ... and validation runs when time passes.
        if next.is_empty() {
            now += 1000;
            next = dev.poll(now);
        }
        out = next;
    }
    assert_eq!(events.first(), Some(&Event::Accepted));
    assert!(events.contains(&Event::Verified), "{events:?}");
    assert_eq!(events.last(), Some(&Event::Committed), "{events:?}");
    assert_eq!((dev.running(), dev.version().as_deref(), dev.counter()), (Some(Digest::of(&new)), Some("2.0.0"), 2));
    assert!(dev.is_idle());
    // A reboot and a reconnect bring the terminal report again (the backend counts it once).
    dev.reboot()?;
    let again = dev.connect(now);
    assert_eq!(again.first().map(|(k, _)| *k), Some(Kind::Hello));
    let status = again.iter().find(|(k, _)| *k == Kind::Status).ok_or("no report after the reconnect")?;
    assert_eq!(Status::parse(&status.1)?.event, Event::Committed);
    assert_eq!(dev.running(), Some(Digest::of(&new)));
    Ok(())
}

/// Every mutating flash operation of the update, cut before it and inside it: the device
/// goes off, comes back with a model it knows, and the update still commits, reported once.
#[test]
fn a_power_cut_at_any_flash_operation_of_an_update_is_survived() -> TestResult {
    let (old, new, offer) = v1_v2()?;
    let known = [Some(Digest::of(&old)), Some(Digest::of(&new))];
    let mut uncut = device("sweep", &old)?;
    let before = uncut.flash_ops();
    let mut backend = Backend::default();
    backend.publish_offer(&offer);
    connect(&mut uncut, &mut backend, &mut 0)?;
    assert_committed_once(&backend)?;
    let ops = uncut.flash_ops() - before;
    assert!(ops > 3, "{ops} operations");
    let mut cuts = 0;
    for op in 1..=ops {
        for (m, mode) in MODES.into_iter().enumerate() {
            let mut dev = device("sweep", &old)?;
            let mut backend = Backend::default();
            backend.publish_offer(&offer);
            dev.arm_cut(op, mode, op * 3 + m as u64);
            let mut now = 0;
            connect(&mut dev, &mut backend, &mut now)?;
            let mut boots = 0;
            while dev.is_off() {
                assert_eq!(dev.up(), Up::PoweredOff, "op {op} {mode:?}");
                assert!(known.contains(&dev.running()), "op {op} {mode:?}: ran {:?}", dev.running());
                assert!(dev.deliver(Kind::Offer, &offer.envelope, now).is_empty(), "lost while off");
                dev.reboot()?;
                assert!(known.contains(&dev.running()), "op {op} {mode:?}: runs {:?}", dev.running());
                connect(&mut dev, &mut backend, &mut now)?;
                boots += 1;
                assert!(boots < 5, "op {op} {mode:?}: still off");
            }
            cuts += dev.status().cuts;
            assert_eq!(dev.running(), Some(Digest::of(&new)), "op {op} {mode:?}");
            assert_eq!(dev.counter(), 2);
            assert_committed_once(&backend).map_err(|e| format!("op {op} {mode:?}: {e}"))?;
        }
    }
    assert_eq!(u64::from(cuts), ops * 3, "every armed cut fired");
    println!("{ops} flash operations, {cuts} cuts");
    Ok(())
}

/// A cut armed before a plain reset fires in the boot (which stores the trial count of the
/// validation it resumes): the device is off, and the next boot goes on.
#[test]
fn a_power_cut_during_a_boot_leaves_the_device_off_until_the_next() -> TestResult {
    let (old, new, offer) = v1_v2()?;
    let mut dev = device("boot-cut", &old)?;
    let mut backend = Backend::default();
    backend.publish_offer(&offer);
    dev.connect(0);
    // Download the whole image; validation waits for the next poll.
    let mut pending = answer(&mut backend, dev.deliver(Kind::Offer, &offer.envelope, 0))?;
    while let Some(chunk) = pending.pop() {
        pending.extend(answer(&mut backend, dev.deliver(Kind::Chunk, &chunk, 0))?);
    }
    assert!(backend.statuses.iter().any(|s| s.event == Event::Verified));
    assert!(!dev.is_idle());
    dev.arm_cut(1, CutMode::TearBits, 9);
    dev.reboot()?;
    assert_eq!((dev.up(), dev.is_off(), dev.is_idle()), (Up::PoweredOff, true, false));
    assert!(dev.poll(1000).is_empty() && dev.connect(1000).is_empty());
    assert_eq!(dev.running(), Some(Digest::of(&old)));
    dev.reboot()?;
    assert_eq!(dev.up(), Up::Running);
    connect(&mut dev, &mut backend, &mut 1000)?;
    assert_eq!(dev.running(), Some(Digest::of(&new)));
    assert_committed_once(&backend)?;
    assert_eq!((dev.status().boots, dev.status().cuts), (2, 1));
    Ok(())
}

/// Garbage on every topic, to an idle device and to one with a download in flight: no
/// panic, nothing changes, and the genuine offer still goes through afterwards.
#[test]
fn garbage_on_every_topic_is_ignored() -> TestResult {
    let (old, new, offer) = v1_v2()?;
    // Broken copies of real messages (a chunk of another artifact and a cancel of another
    // rollout: a flip in the bytes of the right ones would be data, or a real cancel).
    let chunk = Chunk::data(Digest::of(&old), 0, &old[..100]).to_vec()?;
    let cmd = release_key()?.sign_command(&CommandBody { rollout_id: 99, ..cancel(&offer) })?;
    let mut garbage: Vec<Vec<u8>> = vec![vec![], vec![0], vec![0xFF; 5000], vec![0xA0], vec![0xBF; 64]];
    for valid in [&offer.envelope, &chunk, &cmd] {
        for cut in [1, valid.len() / 2, valid.len() - 1] {
            garbage.push(valid[..cut].to_vec());
        }
        for i in (0..valid.len()).step_by(valid.len() / 40 + 1) {
            let mut flipped = valid.clone();
            flipped[i] ^= 0x5A;
            garbage.push(flipped);
        }
    }
    let mut dice = 0x2545_F491_4F6C_DD1Du64;
    for len in [1, 2, 3, 7, 31, 100, 1000, 5000] {
        for _ in 0..8 {
            let bytes = (0..len)
                .map(|_| {
                    dice ^= dice << 13;
                    dice ^= dice >> 7;
                    dice ^= dice << 17;
                    dice as u8
                })
                .collect();
            garbage.push(bytes);
        }
    }
    for in_flight in [false, true] {
        let mut dev = device("garbage", &old)?;
        let mut backend = Backend::default();
        backend.publish_offer(&offer);
        dev.connect(0);
        if in_flight {
            // The offer is accepted; its first chunk request is left unanswered.
            dev.deliver(Kind::Offer, &offer.envelope, 0);
        }
        for kind in KINDS {
            for payload in &garbage {
                let out = dev.deliver(kind, payload, 0);
                // Only refusals (of broken offers) come out.
                for (k, p) in &out {
                    assert_eq!(*k, Kind::Status, "{kind:?}");
                    assert_eq!(Status::parse(p)?.event, Event::Rejected);
                }
                assert_eq!(dev.up(), Up::Running, "{kind:?} {payload:02x?}");
            }
        }
        assert_eq!(dev.running(), Some(Digest::of(&old)));
        assert_eq!(dev.state().and_then(|s| s.job).is_some(), in_flight);
        connect(&mut dev, &mut backend, &mut 0)?;
        assert_eq!(dev.running(), Some(Digest::of(&new)), "in flight: {in_flight}");
        assert_committed_once(&backend)?;
    }
    Ok(())
}
