//! The device's MQTT session against a real broker: it connects, says hello, hears its
//! own topics and only those, leaves a will, and comes back after the line drops or
//! carries garbage, over a socket and over a serial line the host reconnects (QEMU's).

mod common;

use common::{Carrier, Device, Observer, Setup, TestResult, broker, device_id, forged_offer, publish_packet, topic};
use mota_proto::message::Hello;
use mota_proto::topic::Kind;
use mota_proto::{Digest, Wire};

#[test]
fn connects_says_hello_once_and_hears_its_own_topics() -> TestResult {
    let broker = broker()?;
    let id = device_id("hello");
    let observer = Observer::new(&broker, &id)?;
    // Waiting for the device when it subscribes: a retained offer (a broken one).
    let (retained, retained_digest) = forged_offer("retained before the device came")?;
    observer.publish(&topic(&id, Kind::Offer), &retained, true)?;

    let mut device = Device::start(&broker, &id, Setup::default())?;
    device.run_until("the online hello", |_| Ok(!observer.hellos()?.is_empty()))?;
    assert_eq!(device.tally.connected, 1, "one connection, one `connected`");
    assert!(device.session.is_online());
    let hellos = observer.heard(Kind::Hello);
    let hello = Hello::parse(&hellos[0])?;
    let info = hello.info.ok_or("an online hello carries the device's info")?;
    assert!(hello.online);
    assert_eq!(info.device_class, common::CLASS);
    assert_eq!(info.max_chunk, common::CHUNK);
    let running = info.running.ok_or("the factory model runs")?;
    assert_eq!(running.sha256, Digest::of(&common::factory_model()?));

    // The retained offer came with the subscription; it is refused, naming it.
    device.run_until("the retained offer's refusal", |_| {
        Ok(observer.statuses()?.iter().any(|s| s.manifest == Some(retained_digest)))
    })?;
    let before = device.tally.messages;

    // Each of the device's four topics, and another device's offer topic, which the
    // broker must not route to it.
    let other = device_id("other");
    let (foreign, foreign_digest) = forged_offer("for another device")?;
    observer.publish(&topic(&other, Kind::Offer), &foreign, false)?;
    observer.publish(&device.topic(Kind::Chunk), b"not a chunk", false)?;
    observer.publish(&device.topic(Kind::Trust), b"not a revocation list", false)?;
    let (command, _) = forged_offer("a command nobody signed")?;
    observer.publish(&device.topic(Kind::Cmd), &command, false)?;
    let (offer, digest) = forged_offer("an offer nobody signed")?;
    observer.publish(&device.topic(Kind::Offer), &offer, false)?;
    device.run_until("four messages handed to the agent, two refused", |d| {
        let statuses = observer.statuses()?;
        let offer_refused = statuses.iter().any(|s| s.manifest == Some(digest));
        // A refused command names no manifest (its subject is not known unverified).
        let command_refused = statuses.iter().any(|s| s.manifest.is_none());
        Ok(offer_refused && command_refused && d.tally.messages >= before + 4)
    })?;

    let statuses = observer.statuses()?;
    assert_eq!(statuses.len(), 3, "one report per refusal: {statuses:?}");
    for s in &statuses {
        // Refusals change nothing, so they go under the reserved key with a reason.
        assert_eq!((s.rollout, s.seq), (0, 0), "{s:?}");
        assert!(s.error.is_some(), "{s:?}");
        assert_ne!(s.manifest, Some(foreign_digest), "another device's offer reached this one");
    }
    assert_eq!(device.tally.messages, before + 4);
    assert_eq!(device.tally.connected, 1);
    assert_eq!(observer.hellos()?, [true], "one hello, no will");
    assert!(device.session.is_online());

    observer.publish(&topic(&id, Kind::Offer), b"", true)?; // leave a shared broker clean
    Ok(())
}

#[test]
fn a_device_that_drops_off_is_announced_offline_by_its_will() -> TestResult {
    let broker = broker()?;
    let id = device_id("will");
    let observer = Observer::new(&broker, &id)?;
    let mut device = Device::start(&broker, &id, Setup::default())?;
    device.run_until("the online hello", |_| Ok(!observer.hellos()?.is_empty()))?;
    assert_eq!(observer.hellos()?, [true]);

    // The TCP connection ends without DISCONNECT (the session is dropped with it).
    drop(device);
    let deadline = std::time::Instant::now() + common::PATIENCE;
    while observer.hellos()?.len() < 2 {
        if std::time::Instant::now() > deadline {
            return Err("the broker never published the device's will".into());
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let hellos = observer.heard(Kind::Hello);
    assert_eq!(hellos.len(), 2);
    assert_eq!(Hello::parse(&hellos[1])?, Hello::OFFLINE);
    Ok(())
}

/// A short keep-alive, so a dead connection is noticed within seconds. It is also what
/// ends the old connection on rumqttd 0.20, which ignores a second `CONNECT` (MQTT 5
/// says a broker closes the connection, as Mosquitto does): the broker drops a client
/// silent for 1.5 keep-alives, before the session's next `CONNECT` would keep it alive.
fn recovering(carrier: Carrier) -> Setup {
    let setup = Setup { carrier, keep_alive_s: 2, password: None };
    assert!(u64::from(setup.keep_alive_s) * 1500 < mota_agent_mqtt::CONNECT_TIMEOUT_MS);
    setup
}

/// Publications no broker routes to the device, then bytes that are not MQTT at all: the
/// session ignores the first, drops the connection on the second, connects again and says
/// hello again.
fn comes_back_after_garbage(carrier: Carrier) -> TestResult {
    let broker = broker()?;
    let id = device_id("garbage");
    let observer = Observer::new(&broker, &id)?;
    let mut device = Device::start(&broker, &id, recovering(carrier))?;
    device.run_until("the online hello", |_| Ok(!observer.hellos()?.is_empty()))?;

    let (foreign, foreign_digest) = forged_offer("for another device")?;
    device.link.inject(&publish_packet(&topic(&device_id("other"), Kind::Offer), &foreign));
    device.link.inject(&publish_packet("mota/v1/dev/no such id/offer", &foreign));
    device.link.inject(&publish_packet("elsewhere/entirely", b"hello?"));
    device.run_until("the foreign publications read", |d| Ok(!d.link.injecting()))?;
    assert!(device.session.is_online(), "a foreign publication is not a reason to reconnect");
    assert_eq!(device.tally.connected, 1);

    // A fixed header whose remaining length never ends: a protocol error.
    device.link.inject(&[0x30, 0xff, 0xff, 0xff, 0xff, 0xff]);
    device.run_until("a second hello", |d| {
        Ok(d.tally.connected >= 2 && d.session.is_online() && observer.hellos()?.iter().filter(|&&h| h).count() >= 2)
    })?;
    assert!(device.link.connects() >= 2, "the broker closed the first connection: the session is on a new one");

    // The new connection carries the device's topics again.
    let (offer, digest) = forged_offer("after the reconnect")?;
    observer.publish(&device.topic(Kind::Offer), &offer, false)?;
    device.run_until("the refusal of an offer sent after the reconnect", |_| {
        Ok(observer.statuses()?.iter().any(|s| s.manifest == Some(digest)))
    })?;
    assert!(
        observer.statuses()?.iter().all(|s| s.manifest != Some(foreign_digest)),
        "another device's offer reached the agent"
    );
    Ok(())
}

#[test]
fn over_a_socket_comes_back_after_garbage() -> TestResult {
    comes_back_after_garbage(Carrier::Socket)
}

#[test]
fn over_a_serial_line_comes_back_after_garbage() -> TestResult {
    comes_back_after_garbage(Carrier::Serial)
}

/// The line drops without a word to either side: the broker announces the device
/// offline; the device's next ping goes unanswered (or into a connection the broker
/// refuses), and the session connects again and says hello again.
fn comes_back_after_the_line_drops(carrier: Carrier) -> TestResult {
    let broker = broker()?;
    let id = device_id("drop");
    let observer = Observer::new(&broker, &id)?;
    let mut device = Device::start(&broker, &id, recovering(carrier))?;
    device.run_until("the online hello", |_| Ok(!observer.hellos()?.is_empty()))?;

    device.link.cut();
    device.run_until("offline, then online again", |d| {
        let hellos = observer.hellos()?;
        let back = hellos.iter().skip_while(|&&online| online).any(|&online| online);
        Ok(back && d.tally.connected >= 2 && d.session.is_online())
    })?;
    assert!(device.link.connects() >= 2);

    let (offer, digest) = forged_offer("after the line came back")?;
    observer.publish(&device.topic(Kind::Offer), &offer, false)?;
    device.run_until("the refusal of an offer sent after the reconnect", |_| {
        Ok(observer.statuses()?.iter().any(|s| s.manifest == Some(digest)))
    })
}

#[test]
fn over_a_socket_comes_back_after_the_line_drops() -> TestResult {
    comes_back_after_the_line_drops(Carrier::Socket)
}

#[test]
fn over_a_serial_line_comes_back_after_the_line_drops() -> TestResult {
    comes_back_after_the_line_drops(Carrier::Serial)
}
