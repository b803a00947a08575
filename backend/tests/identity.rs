//! Device identity: provisioning fixes a device's class and issues its MQTT login, a
//! hello no longer changes a provisioned class, and the embedded broker, listening beyond
//! loopback, lets a device in only with its credentials and only under its own id (real
//! rumqttd behind the backend's authorizing front).

mod common;

use std::time::Duration;

use common::{Api, Backend, BoxError, TestResult, wait_for_device};
use mota_backend::mqtt::registry::{self, Registration, Seen};
use mota_proto::Wire;
use mota_proto::message::{DeviceInfo, Hello};
use rumqttc::{AsyncClient, ConnectReturnCode, ConnectionError, Event, EventLoop, MqttOptions, Packet, QoS};
use serde_json::json;

fn hello(class: &str) -> Hello<'_> {
    Hello::online(DeviceInfo {
        device_class: class,
        agent_version: "1.0.0",
        running: None,
        security_counter: 0,
        slot_bytes: 128 * 1024,
        arena_bytes: 32 * 1024,
        codecs: 1,
        max_chunk: 4096,
        next_seq: None,
    })
}

/// Provisions `id` (class `mcu`); its password.
async fn provision(api: &Api, id: &str) -> Result<String, BoxError> {
    let r = api.json("POST", "/v1/devices", &api.operator, json!({ "id": id, "device_class": "mcu" })).await?;
    assert_eq!(r.status, 201, "{}", r.json());
    Ok(r.json()["mqtt"]["password"].as_str().ok_or("no password")?.to_owned())
}

#[tokio::test]
async fn provisioning_fixes_the_class_and_issues_a_login_shown_once() -> TestResult {
    let api = Api::new().await?;
    let r = api
        .json("POST", "/v1/devices", &api.operator, json!({ "id": "dev-1", "device_class": "mcu", "tags": ["lab"] }))
        .await?;
    assert_eq!(r.status, 201);
    let body = r.json();
    let password = body["mqtt"]["password"].as_str().ok_or("no password")?.to_owned();
    assert_eq!(password.len(), 64);
    assert_eq!(body["mqtt"]["username"], "dev-1");
    assert_eq!((&body["device"]["device_class"], &body["device"]["tags"]), (&json!("mcu"), &json!(["lab"])));
    assert!(body["device"]["provisioned_at"].is_i64());
    let command = &body["mqtt"]["mosquitto_dynsec"]["commands"][0];
    assert_eq!(
        (&command["command"], &command["clientid"], &command["password"], &command["roles"][0]["rolename"]),
        (&json!("createClient"), &json!("dev-1"), &json!(password), &json!("mota-device"))
    );
    // Only the hash is stored.
    let stored: String = sqlx::query_scalar("SELECT mqtt_password_hash FROM devices WHERE id = 'dev-1'")
        .fetch_one(&api.state.db.pool)
        .await?;
    assert_eq!(stored, mota_backend::mqtt::auth::hash(&password));
    assert!(!api.get("/v1/devices/dev-1", &api.viewer).await?.body.windows(64).any(|w| w == password.as_bytes()));

    let dup = api.json("POST", "/v1/devices", &api.operator, json!({ "id": "dev-1", "device_class": "mcu" })).await?;
    assert_eq!((dup.status.as_u16(), dup.code()), (409, "exists".to_owned()));
    let viewer = api.json("POST", "/v1/devices", &api.viewer, json!({ "id": "dev-2", "device_class": "mcu" })).await?;
    assert_eq!(viewer.status, 403);

    // New credentials replace the old.
    let again = api.json("POST", "/v1/devices/dev-1/credentials", &api.operator, json!(null)).await?;
    assert_eq!(again.status, 200);
    let new = again.json()["mqtt"]["password"].as_str().ok_or("no password")?.to_owned();
    assert_ne!(new, password);
    assert_eq!(again.json()["mqtt"]["mosquitto_dynsec"]["commands"][0]["command"], "setClientPassword");
    let missing = api.json("POST", "/v1/devices/nope/credentials", &api.operator, json!(null)).await?;
    assert_eq!(missing.status, 404);

    // A hello declaring another class is recorded, not applied; the rest of it is.
    let db = &api.state.db;
    assert_eq!(registry::hello(db, "dev-1", &hello("mcu"), Registration::Auto).await?, Seen::Registered);
    assert_eq!(registry::hello(db, "dev-1", &hello("other"), Registration::Auto).await?, Seen::ClassMismatch);
    let device = api.get("/v1/devices/dev-1", &api.viewer).await?.json();
    assert_eq!((&device["device_class"], &device["reported_class"]), (&json!("mcu"), &json!("other")));
    assert_eq!((&device["agent_version"], &device["online"]), (&json!("1.0.0"), &json!(true)));
    assert_eq!(registry::hello(db, "dev-1", &hello("mcu"), Registration::Auto).await?, Seen::Updated);
    assert_eq!(api.get("/v1/devices/dev-1", &api.viewer).await?.json()["reported_class"], json!(null));

    // A device never provisioned: registered by its hello only with auto-registration.
    assert_eq!(registry::hello(db, "stray", &hello("x"), Registration::ProvisionedOnly).await?, Seen::Unknown);
    assert_eq!(api.get("/v1/devices/stray", &api.viewer).await?.status, 404);
    assert_eq!(registry::hello(db, "auto", &hello("x"), Registration::Auto).await?, Seen::Registered);
    assert_eq!(registry::hello(db, "auto", &hello("y"), Registration::Auto).await?, Seen::Updated);
    let auto = api.get("/v1/devices/auto", &api.viewer).await?.json();
    assert_eq!((&auto["device_class"], &auto["provisioned_at"]), (&json!("y"), &json!(null)), "its hello decides");
    Ok(())
}

/// How a connection attempt ended: its CONNACK, or the error that came first.
async fn connect(options: MqttOptions) -> Result<(AsyncClient, EventLoop), ConnectionError> {
    let (client, mut events) = AsyncClient::new(options, 16);
    loop {
        if let Event::Incoming(Packet::ConnAck(_)) = events.poll().await? {
            return Ok((client, events));
        }
    }
}

fn options(client_id: &str, port: u16, login: Option<(&str, &str)>) -> MqttOptions {
    let mut options = MqttOptions::new(client_id, "127.0.0.1", port);
    options.set_keep_alive(Duration::from_secs(30));
    if let Some((user, password)) = login {
        options.set_credentials(user, password);
    }
    options
}

fn refused_with(result: Result<(AsyncClient, EventLoop), ConnectionError>) -> Option<ConnectReturnCode> {
    match result {
        Err(ConnectionError::ConnectionRefused(code)) => Some(code),
        _ => None,
    }
}

/// Polls until the broker (the front) drops the connection; fails if a SUBACK or a
/// PUBLISH arrives first, or nothing happens in 10 s.
async fn dropped(events: &mut EventLoop) -> TestResult {
    let end = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match events.poll().await {
                Err(_) => return Ok(()),
                Ok(Event::Incoming(Packet::SubAck(ack))) => return Err(format!("granted: {ack:?}")),
                Ok(Event::Incoming(Packet::Publish(p))) => return Err(format!("delivered {}", p.topic)),
                Ok(_) => {}
            }
        }
    })
    .await;
    Ok(end.map_err(|_| "the connection stayed up")??)
}

#[tokio::test]
async fn beyond_loopback_the_embedded_broker_admits_devices_only_under_their_own_id() -> TestResult {
    let api = Api::new().await?;
    let mut config = common::config(api.dir.path().join("unused")).await?;
    config.no_mqtt = false;
    config.mqtt_url = None;
    let port = std::net::TcpListener::bind("0.0.0.0:0")?.local_addr()?.port();
    config.mqtt_listen = format!("0.0.0.0:{port}").parse()?;
    let backend = Backend::start(&config, &api).await?;
    let a = provision(&api, "dev-a").await?;
    let b = provision(&api, "dev-b").await?;

    // Logins: anonymous, a wrong password, another device's password, a client id that
    // is not the username (a session takeover), all refused.
    let refused = |r| refused_with(r);
    assert_eq!(refused(connect(options("dev-a", port, None)).await), Some(ConnectReturnCode::NotAuthorized));
    assert_eq!(
        refused(connect(options("dev-a", port, Some(("dev-a", "wrong")))).await),
        Some(ConnectReturnCode::BadUserNamePassword)
    );
    assert_eq!(
        refused(connect(options("dev-a", port, Some(("dev-a", &b)))).await),
        Some(ConnectReturnCode::BadUserNamePassword)
    );
    assert_eq!(
        refused(connect(options("dev-b", port, Some(("dev-a", &a)))).await),
        Some(ConnectReturnCode::BadUserNamePassword)
    );
    assert!(refused(connect(options("x", port, Some(("mota:backend", "guess")))).await).is_some());

    // Publishing under another id: the connection is dropped and the backend never sees
    // it (a forged hello would have registered dev-c; auto-registration is on).
    let (forger, mut events) = connect(options("dev-a", port, Some(("dev-a", &a)))).await?;
    forger.publish("mota/v1/dev/dev-c/hello", QoS::AtLeastOnce, false, hello("mcu").to_vec()?).await?;
    dropped(&mut events).await?;
    // dev-a's own hello arrives (so the forged one, sent earlier, would have too).
    let (own, mut events) = connect(options("dev-a", port, Some(("dev-a", &a)))).await?;
    own.publish("mota/v1/dev/dev-a/hello", QoS::AtLeastOnce, false, hello("other").to_vec()?).await?;
    let poller = tokio::spawn(async move { while events.poll().await.is_ok() {} });
    let seen = wait_for_device(&api, "dev-a", 20, |d| d["online"] == true).await?;
    assert_eq!((&seen["device_class"], &seen["reported_class"]), (&json!("mcu"), &json!("other")));
    assert_eq!(api.get("/v1/devices/dev-c", &api.viewer).await?.status, 404, "the forged hello went nowhere");
    poller.abort();

    // Subscribing to another device's chunks, a wildcard, the backend's share group:
    // dropped without a SUBACK.
    for filter in ["mota/v1/dev/dev-b/chunk", "mota/v1/dev/+/chunk", "$share/mota-hello/mota/v1/dev/+/hello", "#"] {
        let (client, mut events) = connect(options("dev-a", port, Some(("dev-a", &a)))).await?;
        client.subscribe(filter, QoS::AtLeastOnce).await?;
        dropped(&mut events).await.map_err(|e| format!("{filter}: {e}"))?;
    }
    // A will under another id is refused at CONNECT.
    let mut will = options("dev-a", port, Some(("dev-a", &a)));
    will.set_last_will(rumqttc::LastWill::new(
        "mota/v1/dev/dev-b/hello",
        Hello::OFFLINE.to_vec()?,
        QoS::AtLeastOnce,
        false,
    ));
    assert!(connect(will).await.is_err(), "a will under another id");

    // Its own offer, chunk and cmd: granted.
    let (client, mut events) = connect(options("dev-a", port, Some(("dev-a", &a)))).await?;
    client.subscribe("mota/v1/dev/dev-a/chunk", QoS::AtLeastOnce).await?;
    let granted = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if let Event::Incoming(Packet::SubAck(ack)) = events.poll().await? {
                return Ok::<_, ConnectionError>(ack);
            }
        }
    })
    .await??;
    assert_eq!(granted.return_codes, [rumqttc::SubscribeReasonCode::Success(QoS::AtLeastOnce)]);
    backend.stop().await;
    Ok(())
}
