//! An update end to end over MQTT: a simulated device (mota-sim: the real agent on
//! simulated flash) runs digits 1.0.0; a rollout of 1.1.0 to it makes the engine sign a
//! manifest against 1.0.0 (a delta, with a validation set) and publish the offer; the
//! backend serves the chunks the device asks for and records its reports, until the
//! device commits. Chunks are served only for artifacts
//! offered to the asking device, and a re-sent report counts once. The broker is the
//! backend's embedded one on a free port, or the one at `MOTA_TEST_BROKER` (HOST:PORT).

mod common;

use std::cell::RefCell;
use std::collections::BTreeSet;
use std::rc::Rc;
use std::time::Duration;

use common::{Api, BoxError, TestResult, digits_set, model, wait_for_device};
use mota_proto::message::{Chunk, Get, Refusal};
use mota_proto::topic::{Kind, Topic};
use mota_proto::{Digest, Wire};
use mota_sim::Faults;
use rumqttc::{AsyncClient, MqttOptions, QoS};

/// Chunks seen on the watched chunk topics: (device, artifact, refusal, data length).
type Seen = Rc<RefCell<Vec<(String, Digest, Option<Refusal>, usize)>>>;

/// The test's own client: subscribes to every chunk topic and records what it sees.
fn watcher(id: &str, host: &str, port: u16, seen: Seen) -> AsyncClient {
    let (client, mut events) = AsyncClient::new(MqttOptions::new(id, host, port), 64);
    let subscriber = client.clone();
    tokio::task::spawn_local(async move {
        loop {
            match events.poll().await {
                Ok(rumqttc::Event::Incoming(rumqttc::Packet::ConnAck(_))) => {
                    let _ = subscriber.try_subscribe("mota/v1/dev/+/chunk", QoS::AtLeastOnce);
                }
                Ok(rumqttc::Event::Incoming(rumqttc::Packet::Publish(p))) => {
                    if let (Ok(topic), Ok(chunk)) = (Topic::parse(&p.topic), Chunk::parse(&p.payload)) {
                        let len = chunk.data.map_or(0, <[u8]>::len);
                        seen.borrow_mut().push((topic.device().to_owned(), chunk.artifact, chunk.refusal, len));
                    }
                }
                Ok(_) => {}
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    });
    client
}

async fn attempt_state(api: &Api, device: &str) -> Result<Option<String>, BoxError> {
    Ok(sqlx::query_scalar("SELECT state FROM attempts WHERE device_id = $1")
        .bind(device)
        .fetch_optional(&api.state.db.pool)
        .await?)
}

async fn reports(api: &Api, device: &str) -> Result<i64, BoxError> {
    Ok(sqlx::query_scalar("SELECT COUNT(*) FROM device_reports WHERE device_id = $1")
        .bind(device)
        .fetch_one(&api.state.db.pool)
        .await?)
}

#[tokio::test]
async fn a_device_on_v1_is_offered_v2_downloads_the_patch_validates_and_commits() -> TestResult {
    tokio::task::LocalSet::new().run_until(scenario()).await
}

async fn scenario() -> TestResult {
    let mut chosen = None;
    let api = Api::with(|c| chosen = Some((common::broker(c, "offer"), c.clone()))).await?;
    let (address, config) = chosen.ok_or("no configuration")?;
    let (host, port) = address?;
    let backend = common::Backend::start(&config, &api).await?;
    let prefix = format!("o{}-", std::process::id());
    let seen: Seen = Rc::default();
    let client = watcher(&format!("{prefix}watcher"), &host, port, Rc::clone(&seen));

    // digits 1.0.0 and 1.1.0 with a validation set; the delta computed.
    let set = digits_set(64)?;
    let set_bytes = set.clone();
    let r = api.post_bytes("/v1/validation-sets?name=digits-64", &api.operator, set).await?;
    let set_sha = r.json()["sha256"].as_str().ok_or("no set sha")?.to_owned();
    let (v1, v2) = (model("digits_cnn_v1")?, model("digits_cnn_v2")?);
    let extra = format!("&validation_set={set_sha}");
    assert_eq!(api.upload("digits", "1.0.0", v1.clone(), &extra).await?.status, 201);
    assert_eq!(api.upload("digits", "1.1.0", v2.clone(), &extra).await?.status, 201);
    assert_eq!(api.state.registry.run_delta_jobs().await?, 1);

    // One device on 1.0.0, trusting the backend's development root.
    let device = format!("{prefix}dev-0");
    let (status, run) =
        common::run_device(common::device(&config.data_dir, (&host, port), &device, &v1, Faults::default())?);
    wait_for_device(&api, &device, 20, |d| d["online"] == true).await?;

    // A rollout of 1.1.0 to this one device: the engine signs the manifest against 1.0.0
    // (a delta, with the validation set) and publishes the offer.
    let body = serde_json::json!({ "model": "digits", "version": "1.1.0", "selector": { "ids": [device] },
                                   "plan": { "cohorts": [{ "percent": 100 }] } });
    let r = api.json("POST", "/v1/rollouts", &api.operator, body).await?;
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    let patch: String = sqlx::query_scalar("SELECT patch_sha256 FROM deltas").fetch_one(&api.state.db.pool).await?;

    // The device downloads, validates and commits; the backend follows.
    let d = match wait_for_device(&api, &device, 60, |d| d["running_version"] == "1.1.0").await {
        Ok(d) => d,
        Err(e) => {
            let events: Vec<(i64, i64)> = sqlx::query_as("SELECT seq, event FROM device_reports ORDER BY seq")
                .fetch_all(&api.state.db.pool)
                .await?;
            let chunks = seen.borrow().len();
            let last = seen.borrow().last().cloned();
            return Err(format!(
                "{e}; attempt {:?}; reports {events:?}; {chunks} chunks, last {last:?}; device {:?}",
                attempt_state(&api, &device).await?,
                status.borrow()
            )
            .into());
        }
    };
    assert_eq!(d["running_sha256"].as_str(), Some(Digest::of(&v2).to_string().as_str()));
    for _ in 0..100 {
        if attempt_state(&api, &device).await?.as_deref() == Some("committed") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(attempt_state(&api, &device).await?.as_deref(), Some("committed"));
    let accuracy: Option<i32> = sqlx::query_scalar("SELECT accuracy_permille FROM attempts WHERE device_id = $1")
        .bind(&device)
        .fetch_one(&api.state.db.pool)
        .await?;
    assert!(accuracy.is_some_and(|a| a > 800), "accuracy {accuracy:?}");
    assert_eq!(status.borrow().running, Some(Digest::of(&v2)));

    // The chunks served were the patch and the validation set, never the full image.
    let served: BTreeSet<String> = seen
        .borrow()
        .iter()
        .filter(|(d, _, r, _)| *d == device && r.is_none())
        .map(|(_, a, _, _)| a.to_string())
        .collect();
    assert!(served.contains(&patch), "{served:?}");
    assert!(!served.contains(&Digest::of(&v2).to_string()), "the full image was served: {served:?}");
    assert!(served.iter().all(|a| *a == patch || *a == set_sha), "{served:?}");

    // A report sent again is stored and counted once.
    let before = reports(&api, &device).await?;
    assert!(before >= 2, "{before} reports");
    let first: Vec<u8> =
        sqlx::query_scalar("SELECT payload FROM device_reports WHERE device_id = $1 ORDER BY seq LIMIT 1")
            .bind(&device)
            .fetch_one(&api.state.db.pool)
            .await?;
    let status_topic = Topic::new(&device, Kind::Status)?.to_string();
    client.publish(status_topic.as_str(), QoS::AtLeastOnce, false, first).await?;

    // A device the patch was not offered to asks for it: refused. (Sent after the re-sent
    // report, so once the refusal is back the report has been handled too.)
    let stranger = format!("{prefix}stranger");
    let get = Get {
        artifact: Digest(mota_backend::blobs::parse_digest(&patch).ok_or("bad patch digest")?),
        offset: 0,
        length: 512,
    };
    client.publish(Topic::new(&stranger, Kind::Get)?.to_string(), QoS::AtLeastOnce, false, get.to_vec()?).await?;
    let mut refused = None;
    for _ in 0..200 {
        refused = seen.borrow().iter().find(|(d, _, _, _)| *d == stranger).map(|(_, _, r, _)| *r);
        if refused.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(refused, Some(Some(Refusal::NOT_OFFERED)));

    // Offered to a second (test-driven) device: served (a full chunk of the set); an
    // offset past the end is refused.
    let peer = format!("{prefix}peer");
    let envelope: Vec<u8> = sqlx::query_scalar("SELECT envelope FROM offers WHERE rollout_id IS NOT NULL")
        .fetch_one(&api.state.db.pool)
        .await?;
    let client_backend = backend.mqtt.client();
    let mut conn = api.state.db.pool.acquire().await?;
    let now = api.state.db.now().await?;
    mota_backend::mqtt::offers::record_offer(&mut conn, &peer, &envelope, now).await?;
    drop(conn);
    mota_backend::mqtt::offers::publish_offer(&client_backend, &peer, &envelope).await?;
    let peer_get = Topic::new(&peer, Kind::Get)?.to_string();
    let past = Get { offset: 1 << 30, ..get };
    let whole = Get { artifact: Digest::of(&set_bytes), offset: 0, length: mota_proto::limits::MAX_CHUNK_LEN as u32 };
    client.publish(peer_get.as_str(), QoS::AtLeastOnce, false, past.to_vec()?).await?;
    client.publish(peer_get.as_str(), QoS::AtLeastOnce, false, whole.to_vec()?).await?;
    let mut answers = Vec::new();
    for _ in 0..200 {
        answers = seen.borrow().iter().filter(|(d, _, _, _)| *d == peer).map(|(_, _, r, n)| (*r, *n)).collect();
        if answers.len() >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(answers.contains(&(Some(Refusal::OUT_OF_RANGE), 0)), "{answers:?}");
    let expected = set_bytes.len().min(mota_proto::limits::MAX_CHUNK_LEN);
    assert!(answers.contains(&(None, expected)), "{answers:?}");
    assert_eq!(reports(&api, &device).await?, before);
    assert_eq!(attempt_state(&api, &device).await?.as_deref(), Some("committed"));

    run.abort();
    // Leave no retained offer behind on a shared broker.
    for id in [&device, &peer] {
        client.publish(Topic::new(id, Kind::Offer)?.to_string(), QoS::AtLeastOnce, true, Vec::new()).await?;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    backend.stop().await;
    Ok(())
}
