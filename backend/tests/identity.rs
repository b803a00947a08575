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
        revocation_seq: None,
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
    let commands = &body["mqtt"]["mosquitto_dynsec"]["commands"];
    assert_eq!(
        (&commands[0]["command"], &commands[0]["rolename"]),
        (&json!("createRole"), &json!("mota-device-dev-1"))
    );
    assert_eq!(
        commands[0]["acls"][0],
        json!({ "acltype": "publishClientSend", "topic": "mota/v1/dev/dev-1/hello",
        "priority": 0, "allow": true })
    );
    assert_eq!(
        (
            &commands[1]["command"],
            &commands[1]["clientid"],
            &commands[1]["password"],
            &commands[1]["roles"][0]["rolename"]
        ),
        (&json!("createClient"), &json!("dev-1"), &json!(password), &json!("mota-device-dev-1"))
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

/// Polls until the broker refuses what the client just asked: drops the connection (the
/// embedded broker's front) or answers its SUBSCRIBE with a failure (Mosquitto); fails if
/// the subscription is granted, a message arrives, or nothing happens in 10 s.
async fn refused_after(events: &mut EventLoop) -> TestResult {
    let end = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match events.poll().await {
                Err(_) => return Ok(()),
                Ok(Event::Incoming(Packet::SubAck(ack)))
                    if ack.return_codes == [rumqttc::SubscribeReasonCode::Failure] =>
                {
                    return Ok(());
                }
                Ok(Event::Incoming(Packet::SubAck(ack))) => return Err(format!("granted: {ack:?}")),
                Ok(Event::Incoming(Packet::Publish(p))) => return Err(format!("delivered {}", p.topic)),
                Ok(_) => {}
            }
        }
    })
    .await;
    Ok(end.map_err(|_| "the connection stayed up")??)
}

/// Which broker a scenario runs on.
#[derive(PartialEq)]
enum Broker {
    /// The backend's own, behind its front.
    Embedded,
    /// Mosquitto with the dynamic-security plugin (deploy/mosquitto).
    Mosquitto,
}

/// Provisioned devices `dev-a` and `dev-b` on the broker at `port`, which the backend
/// (auto-registration on) uses: every way out of a device's own topics is refused.
async fn confinement(api: &Api, port: u16, broker: Broker, passwords: [&str; 2]) -> TestResult {
    let [a, b] = passwords;
    // Logins: anonymous, a wrong password, another device's password, a client id that
    // is not the username (a session takeover), all refused.
    let refused = |r| refused_with(r).is_some();
    assert!(refused(connect(options("dev-a", port, None)).await), "anonymous");
    assert!(refused(connect(options("dev-a", port, Some(("dev-a", "wrong")))).await), "wrong password");
    assert!(refused(connect(options("dev-a", port, Some(("dev-a", b)))).await), "another device's password");
    assert!(refused(connect(options("dev-b", port, Some(("dev-a", a)))).await), "another client id");
    assert!(refused(connect(options("x", port, Some(("mota:backend", "guess")))).await), "the backend's user");

    // Publishing under another id: the backend never sees it (a forged hello would have
    // registered dev-c; auto-registration is on). The front also drops the connection.
    let (forger, mut events) = connect(options("dev-a", port, Some(("dev-a", a)))).await?;
    forger.publish("mota/v1/dev/dev-c/hello", QoS::AtLeastOnce, false, hello("mcu").to_vec()?).await?;
    forger.publish("mota/v1/dev/dev-b/hello", QoS::AtLeastOnce, false, hello("forged").to_vec()?).await?;
    if broker == Broker::Embedded {
        refused_after(&mut events).await?;
    } else {
        let _ = tokio::time::timeout(Duration::from_secs(1), async { while events.poll().await.is_ok() {} }).await;
    }
    // dev-a's own hello arrives (so the forged ones, sent earlier, would have too).
    let (own, mut events) = connect(options("dev-a", port, Some(("dev-a", a)))).await?;
    own.publish("mota/v1/dev/dev-a/hello", QoS::AtLeastOnce, false, hello("other").to_vec()?).await?;
    let poller = tokio::spawn(async move { while events.poll().await.is_ok() {} });
    let seen = wait_for_device(api, "dev-a", 20, |d| d["online"] == true).await?;
    assert_eq!((&seen["device_class"], &seen["reported_class"]), (&json!("mcu"), &json!("other")));
    assert_eq!(api.get("/v1/devices/dev-c", &api.viewer).await?.status, 404, "the forged hello went nowhere");
    assert_eq!(api.get("/v1/devices/dev-b", &api.viewer).await?.json()["online"], false, "nor did this one");
    poller.abort();

    // Subscribing to another device's chunks, a wildcard, the backend's share group.
    for filter in ["mota/v1/dev/dev-b/chunk", "mota/v1/dev/+/chunk", "$share/mota-hello/mota/v1/dev/+/hello", "#"] {
        let (client, mut events) = connect(options("dev-a", port, Some(("dev-a", a)))).await?;
        client.subscribe(filter, QoS::AtLeastOnce).await?;
        refused_after(&mut events).await.map_err(|e| format!("{filter}: {e}"))?;
    }
    if broker == Broker::Embedded {
        // A will under another id is refused at CONNECT (Mosquitto accepts the CONNECT
        // and drops such a will when it would publish it).
        let mut will = options("dev-a", port, Some(("dev-a", a)));
        let offline = Hello::OFFLINE.to_vec()?;
        will.set_last_will(rumqttc::LastWill::new("mota/v1/dev/dev-b/hello", offline, QoS::AtLeastOnce, false));
        assert!(connect(will).await.is_err(), "a will under another id");
    }

    // Its own offer, chunk, cmd and trust: granted.
    let (client, mut events) = connect(options("dev-a", port, Some(("dev-a", a)))).await?;
    let own: Vec<_> = ["offer", "chunk", "cmd", "trust"]
        .map(|k| rumqttc::SubscribeFilter::new(format!("mota/v1/dev/dev-a/{k}"), QoS::AtLeastOnce))
        .into();
    client.subscribe_many(own).await?;
    let granted = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if let Event::Incoming(Packet::SubAck(ack)) = events.poll().await? {
                return Ok::<_, ConnectionError>(ack);
            }
        }
    })
    .await??;
    assert_eq!(granted.return_codes, [rumqttc::SubscribeReasonCode::Success(QoS::AtLeastOnce); 4]);
    Ok(())
}

/// The backend with its embedded broker listening beyond loopback (so closed), on a free
/// port.
async fn closed_embedded_broker(api: &Api) -> Result<(Backend, u16), BoxError> {
    let mut config = common::config(api.dir.path().join("unused")).await?;
    config.no_mqtt = false;
    config.mqtt_url = None;
    let port = std::net::TcpListener::bind("0.0.0.0:0")?.local_addr()?.port();
    config.mqtt_listen = format!("0.0.0.0:{port}").parse()?;
    Ok((Backend::start(&config, api).await?, port))
}

#[tokio::test]
async fn beyond_loopback_the_embedded_broker_admits_devices_only_under_their_own_id() -> TestResult {
    let api = Api::new().await?;
    let (backend, port) = closed_embedded_broker(&api).await?;
    let (a, b) = (provision(&api, "dev-a").await?, provision(&api, "dev-b").await?);
    // The front answers a refused login with its reason.
    let code = |r| refused_with(r);
    assert_eq!(code(connect(options("dev-a", port, None)).await), Some(ConnectReturnCode::NotAuthorized));
    assert_eq!(
        code(connect(options("dev-a", port, Some(("dev-a", "wrong")))).await),
        Some(ConnectReturnCode::BadUserNamePassword)
    );
    confinement(&api, port, Broker::Embedded, [&a, &b]).await?;
    backend.stop().await;
    Ok(())
}

#[tokio::test]
async fn a_provisioned_device_updates_through_the_closed_embedded_broker() -> TestResult {
    tokio::task::LocalSet::new().run_until(update_through_the_front()).await
}

/// A real simulated device with its provisioned login takes a rollout (offer, chunks,
/// status reports) through the front; one without a login never gets in.
async fn update_through_the_front() -> TestResult {
    let api = Api::new().await?;
    let (backend, port) = closed_embedded_broker(&api).await?;
    common::rollouts::upload(&api, &[("1.0.0", "digits_cnn_v1", ""), ("1.1.0", "digits_cnn_v2", "")]).await?;
    let (v1, v2) = (common::model("digits_cnn_v1")?, common::model("digits_cnn_v2")?);
    let data = api.dir.path().join("data");
    let mut device = common::device(&data, ("127.0.0.1", port), "sim-1", &v1, Default::default())?;
    device.password = Some(provision(&api, "sim-1").await?);
    let (status, task) = common::run_device(device);
    let stray = common::device(&data, ("127.0.0.1", port), "sim-2", &v1, Default::default())?;
    let (_, stray_task) = common::run_device(stray);
    common::rollouts::registered(&api, "sim-1", 1).await?;

    let body = json!({
        "model": "digits", "version": "1.1.0", "selector": { "ids": ["sim-1"] },
        "plan": { "cohorts": [{ "percent": 100 }] },
        "gates": { "min_reports": 1, "max_failure_permille": 0, "stuck_timeout_s": 120 },
    });
    let id = common::rollouts::created(&api.json("POST", "/v1/rollouts", &api.operator, body).await?)?;
    common::rollouts::wait_state(&api, id, 120, "completed").await?;
    assert_eq!(status.borrow().running, Some(mota_proto::Digest::of(&v2)));
    // Auto-registration is on: had sim-2 got in, its hello (sent long before the rollout
    // ended) would have registered it.
    assert_eq!(api.get("/v1/devices/sim-2", &api.viewer).await?.status, 404, "no login, no way in");
    task.abort();
    stray_task.abort();
    backend.stop().await;
    Ok(())
}

/// `NAME=USER:PASSWORD` from the environment.
fn login_from(name: &str) -> Result<(String, String), BoxError> {
    let value = std::env::var(name).map_err(|_| format!("{name} is not set"))?;
    let (user, password) = value.split_once(':').ok_or(format!("{name} must be USER:PASSWORD"))?;
    Ok((user.to_owned(), password.to_owned()))
}

/// Publishes a dynamic-security command document as the plugin's admin; fails unless
/// every command succeeded.
async fn dynsec(port: u16, admin: &(String, String), document: &serde_json::Value) -> TestResult {
    let mut options = options("mota-test-dynsec-admin", port, Some((&admin.0, &admin.1)));
    options.set_max_packet_size(64 * 1024, 64 * 1024);
    let (client, mut events) = connect(options).await?;
    client.subscribe("$CONTROL/dynamic-security/v1/response", QoS::AtLeastOnce).await?;
    let mut sent = false;
    let response = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match events.poll().await? {
                Event::Incoming(Packet::SubAck(_)) if !sent => {
                    sent = true;
                    client
                        .publish("$CONTROL/dynamic-security/v1", QoS::AtLeastOnce, false, document.to_string())
                        .await?;
                }
                Event::Incoming(Packet::Publish(p)) => return Ok::<_, BoxError>(p.payload),
                _ => {}
            }
        }
    })
    .await??;
    let response: serde_json::Value = serde_json::from_slice(&response)?;
    let failed = response["responses"].as_array().into_iter().flatten().any(|r| r.get("error").is_some());
    assert!(!failed, "{response}");
    Ok(())
}

/// The same on Mosquitto with the shipped configuration: devices provisioned by the
/// backend's own dynamic-security documents. Runs when `.ci/mosquitto-acl.sh` sets
/// `MOTA_TEST_DYNSEC` (HOST:PORT), `MOTA_TEST_DYNSEC_ADMIN` and
/// `MOTA_TEST_DYNSEC_BACKEND` (USER:PASSWORD each).
#[tokio::test]
async fn on_mosquitto_the_backends_dynsec_commands_admit_devices_only_under_their_own_id() -> TestResult {
    let Ok(addr) = std::env::var("MOTA_TEST_DYNSEC") else {
        eprintln!("MOTA_TEST_DYNSEC is not set: skipped (.ci/mosquitto-acl.sh runs it)");
        return Ok(());
    };
    let port: u16 = addr.rsplit_once(':').ok_or("MOTA_TEST_DYNSEC must be HOST:PORT")?.1.parse()?;
    let (admin, backend_login) = (login_from("MOTA_TEST_DYNSEC_ADMIN")?, login_from("MOTA_TEST_DYNSEC_BACKEND")?);
    let api = Api::new().await?;
    let mut config = common::config(api.dir.path().join("unused")).await?;
    config.no_mqtt = false;
    config.mqtt_url = Some(format!("mqtt://{addr}"));
    (config.mqtt_username, config.mqtt_password) = (Some(backend_login.0), Some(backend_login.1));
    config.mqtt_client_id = format!("mota-backend-identity-{}", std::process::id());
    config.mqtt_share_group = format!("mota-identity-{}", std::process::id());
    let backend = Backend::start(&config, &api).await?;
    let mut passwords = Vec::new();
    for id in ["dev-a", "dev-b"] {
        let r = api.json("POST", "/v1/devices", &api.operator, json!({ "id": id, "device_class": "mcu" })).await?;
        assert_eq!(r.status, 201, "{}", r.json());
        dynsec(port, &admin, &r.json()["mqtt"]["mosquitto_dynsec"]).await?;
        passwords.push(r.json()["mqtt"]["password"].as_str().ok_or("no password")?.to_owned());
    }
    confinement(&api, port, Broker::Mosquitto, [&passwords[0], &passwords[1]]).await?;
    backend.stop().await;
    Ok(())
}
