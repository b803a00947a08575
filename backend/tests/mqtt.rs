//! The MQTT side against a real broker: simulated devices (mota-sim: the real agent on
//! simulated flash) say hello and are registered; dropping one fires its last will and
//! marks it offline; garbage on the wire is dropped without stopping the loop. The
//! broker is the backend's embedded one on a free port, or the one at `MOTA_TEST_BROKER`
//! (HOST:PORT; CI points it at Mosquitto).

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{Api, BoxError, TestResult, wait_for_device};
use mota_proto::Wire;
use mota_proto::message::{DeviceInfo, Hello, RunningModel};
use mota_proto::{Digest, topic::Kind, topic::Topic};
use mota_sim::{DeviceOptions, DeviceStatus, Faults, run_device};
use rumqttc::{AsyncClient, LastWill, MqttOptions, QoS};

const CLASS: &str = "sim-mcu";

/// A plain MQTT client for the test's own publishes, its event loop polled in the background.
fn publisher(id: &str, host: &str, port: u16) -> AsyncClient {
    let (client, mut events) = AsyncClient::new(MqttOptions::new(id, host, port), 64);
    tokio::task::spawn_local(async move {
        loop {
            if events.poll().await.is_err() {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    });
    client
}

fn hello(class: &str) -> Result<Vec<u8>, BoxError> {
    let info = DeviceInfo {
        device_class: class,
        agent_version: "9.9.9",
        running: Some(RunningModel { model: "digits", version: "1.0.0", sha256: Digest([7; 32]) }),
        security_counter: 3,
        slot_bytes: 256 * 1024,
        arena_bytes: 32 * 1024,
        codecs: 1,
        max_chunk: 4096,
        next_seq: None,
        revocation_seq: None,
    };
    Ok(Hello::online(info).to_vec()?)
}

fn device(id: &str, host: &str, port: u16, factory: &Arc<[u8]>) -> DeviceOptions {
    DeviceOptions {
        id: id.to_owned(),
        host: host.to_owned(),
        port,
        password: None,
        class: CLASS.into(),
        roots: vec![[9; 32]],
        factory: Arc::clone(factory),
        factory_counter: 1,
        flash_file: None,
        faults: Faults::default(),
        seed: 7,
        keep_alive: DeviceOptions::KEEP_ALIVE,
    }
}

/// A device of the test's own: connects with the offline will, says hello, and drops the
/// connection without DISCONNECT when its task is aborted.
fn will_device(id: &str, host: &str, port: u16) -> Result<tokio::task::JoinHandle<()>, BoxError> {
    let topic = Topic::new(id, Kind::Hello)?.to_string();
    let mut options = MqttOptions::new(id, host, port);
    options.set_last_will(LastWill::new(topic.as_str(), Hello::OFFLINE.to_vec()?, QoS::AtLeastOnce, false));
    let (client, mut events) = AsyncClient::new(options, 8);
    let payload = hello("mcu")?;
    Ok(tokio::task::spawn_local(async move {
        loop {
            match events.poll().await {
                Ok(rumqttc::Event::Incoming(rumqttc::Packet::ConnAck(_))) => {
                    let _ = client.try_publish(topic.as_str(), QoS::AtLeastOnce, false, payload.clone());
                }
                Ok(_) => {}
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }))
}

fn spawn_device(opts: DeviceOptions) -> tokio::task::JoinHandle<()> {
    tokio::task::spawn_local(async move {
        let status = std::rc::Rc::new(std::cell::RefCell::new(DeviceStatus::default()));
        if let Err(e) = run_device(opts, status).await {
            eprintln!("device stopped: {e}");
        }
    })
}

#[tokio::test]
async fn devices_register_over_mqtt_go_offline_by_their_will_and_garbage_is_dropped() -> TestResult {
    tokio::task::LocalSet::new().run_until(scenario()).await
}

async fn scenario() -> TestResult {
    let mut chosen = None;
    let api = Api::with(|c| chosen = Some((common::broker(c, "test"), c.clone()))).await?;
    let (address, config) = chosen.ok_or("no configuration")?;
    let (host, port) = address?;
    let mqtt = mota_backend::mqtt::start(&config, &api.state).await?;
    // Own device ids: tests may share one broker (CI's Mosquitto).
    let prefix = format!("t{}-", std::process::id());
    let client = publisher(&format!("{prefix}tester"), &host, port);

    // The backend subscribes after connecting: say hello until it is heard.
    let probe = format!("{prefix}probe");
    let probe_topic = Topic::new(&probe, Kind::Hello)?.to_string();
    for _ in 0..100 {
        client.publish(probe_topic.as_str(), QoS::AtLeastOnce, false, hello("probe")?).await?;
        tokio::time::sleep(Duration::from_millis(100)).await;
        if api.get(&format!("/v1/devices/{probe}"), &api.viewer).await?.status == 200 {
            break;
        }
    }
    let probed = wait_for_device(&api, &probe, 10, |d| d["online"] == true).await?;
    assert_eq!((probed["device_class"].as_str(), probed["agent_version"].as_str()), (Some("probe"), Some("9.9.9")));
    assert_eq!(probed["running_sha256"].as_str(), Some("07".repeat(32).as_str()));

    // Three simulated devices on the factory model.
    let factory: Arc<[u8]> = Arc::from(common::model("digits_cnn_v1")?);
    let ids: Vec<String> = (0..3).map(|i| format!("{prefix}dev-{i}")).collect();
    let devices: Vec<_> = ids.iter().map(|id| spawn_device(device(id, &host, port, &factory))).collect();
    let sha = Digest::of(&factory).to_string();
    for id in &ids {
        let d = wait_for_device(&api, id, 10, |d| d["online"] == true).await?;
        assert_eq!(d["device_class"].as_str(), Some(CLASS));
        assert_eq!((d["running_model"].as_str(), d["running_version"].as_str()), (Some("factory"), Some("factory")));
        assert_eq!(d["running_sha256"].as_str(), Some(sha.as_str()));
        assert_eq!(d["security_counter"].as_i64(), Some(1));
    }
    let listed = api.get(&format!("/v1/devices?class={CLASS}&limit=500"), &api.viewer).await?.json();
    let listed: Vec<&str> =
        listed["items"].as_array().ok_or("no items")?.iter().filter_map(|d| d["id"].as_str()).collect();
    assert!(ids.iter().all(|id| listed.contains(&id.as_str())), "{listed:?}");

    // A device drops off without DISCONNECT: the broker publishes its will. (A device of
    // our own, not a simulated one: these reconnect once right after their first connect,
    // and rumqttd fires the first connection's will late, taking the second one's with it.)
    let lone = format!("{prefix}lone");
    let connection = will_device(&lone, &host, port)?;
    wait_for_device(&api, &lone, 10, |d| d["online"] == true).await?;
    connection.abort();
    let gone = wait_for_device(&api, &lone, 10, |d| d["online"] == false).await?;
    assert!(gone["last_seen"].as_i64() >= gone["first_seen"].as_i64());
    assert_eq!(gone["device_class"].as_str(), Some("mcu"), "the will keeps what the device said");
    for id in &ids {
        assert_eq!(wait_for_device(&api, id, 10, |_| true).await?["online"], true);
    }
    // It comes back: online again, registered still once.
    let connection = will_device(&lone, &host, port)?;
    wait_for_device(&api, &lone, 10, |d| d["online"] == true).await?;
    connection.abort();

    // Garbage: a payload that is not a hello, hellos on topics with invalid device ids,
    // a will for a device never seen; then a valid hello, which must still be handled.
    let garbage = format!("{prefix}garbage");
    let on = |device: &str| format!("mota/v1/dev/{device}/hello");
    client.publish(on(&garbage), QoS::AtLeastOnce, false, b"\xff\x00not cbor".to_vec()).await?;
    client.publish(on("bad id!"), QoS::AtLeastOnce, false, hello("mcu")?).await?;
    client.publish(on(&"d".repeat(65)), QoS::AtLeastOnce, false, hello("mcu")?).await?;
    client.publish(on(&format!("{prefix}ghost")), QoS::AtLeastOnce, false, Hello::OFFLINE.to_vec()?).await?;
    let after = format!("{prefix}after");
    client.publish(on(&after), QoS::AtLeastOnce, false, hello("mcu")?).await?;
    wait_for_device(&api, &after, 10, |d| d["online"] == true).await?;
    for id in [garbage, format!("{prefix}ghost"), "d".repeat(65)] {
        assert_eq!(api.get(&format!("/v1/devices/{id}"), &api.viewer).await?.status, 404, "{id}");
    }

    // One `device.registered` per device, by the backend, however often it said hello.
    for id in ids.iter().chain([&probe, &after, &lone]) {
        let events = api.get(&format!("/v1/events?kind=device.registered&subject=device:{id}"), &api.viewer).await?;
        let events = events.json();
        let items = events["items"].as_array().ok_or("no events")?;
        assert_eq!(items.len(), 1, "{id}: {events}");
        assert_eq!(items[0]["actor"].as_str(), Some("backend"));
    }

    for d in devices {
        d.abort();
    }
    mqtt.stop().await;
    common::clear_session(&config, &host, port).await;
    Ok(())
}

#[tokio::test]
async fn a_replica_that_stops_leaves_the_share_groups_so_the_others_get_every_message() -> TestResult {
    tokio::task::LocalSet::new().run_until(leaving()).await
}

/// Two replicas on one database; one stops on purpose (a rolling restart, a
/// scale-down). Brokers keep feeding a disconnected persistent session its share of a
/// shared subscription, so without leaving the groups first, about half of what devices
/// send next would wait in the stopped replica's session. Only an external broker keeps
/// sessions (CI runs this on Mosquitto); the embedded one drops them on disconnect.
async fn leaving() -> TestResult {
    let _turn = common::broker_turn().await;
    let mut chosen = None;
    let api = Api::with(|c| chosen = Some((common::broker(c, "leave"), c.clone()))).await?;
    let (address, config) = chosen.ok_or("no configuration")?;
    let (host, port) = address?;
    let staying = mota_backend::mqtt::start(&config, &api.state).await?;
    let mut other = config.clone();
    other.mqtt_client_id = format!("{}-b", config.mqtt_client_id);
    other.mqtt_listen = "127.0.0.1:0".parse()?; // the embedded broker runs once, with the first
    let leaving = match &config.mqtt_url {
        Some(_) => Some(mota_backend::mqtt::start(&other, &api.state).await?),
        None => None,
    };
    // Both subscribe right after connecting on loopback; give them that moment.
    tokio::time::sleep(Duration::from_secs(1)).await;
    if let Some(replica) = leaving {
        replica.stop().await;
    }

    let prefix = format!("l{}-", std::process::id());
    let client = publisher(&format!("{prefix}tester"), &host, port);
    let ids: Vec<String> = (0..20).map(|i| format!("{prefix}dev-{i}")).collect();
    for id in &ids {
        client.publish(Topic::new(id, Kind::Hello)?.to_string(), QoS::AtLeastOnce, false, hello(CLASS)?).await?;
    }
    for id in &ids {
        wait_for_device(&api, id, 20, |d| d["online"] == true).await?;
    }
    staying.stop().await;
    common::clear_session(&config, &host, port).await;
    common::clear_session(&other, &host, port).await;
    Ok(())
}
