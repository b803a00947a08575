//! Rollouts through what fleets and deployments go through: the backend (and with it the
//! embedded broker) killed mid-rollout while devices lose power mid-download; two
//! replicas on one database; a device silent past the stuck timeout that reports late,
//! and reports delivered twice. Same services as `rollout.rs`.

mod common;

use std::time::Duration;

use common::cluster::Replica;
use common::rollouts::{attempts, created, events, registered, setup, wait_state};
use common::{Backend, BoxError, TestResult, eventually, fleet, model};
use mota_proto::Digest;
use serde_json::{Value, json};

/// Kinds of the rollout's events, counted.
fn count(log: &[(i64, String, String)], kind: &str) -> usize {
    log.iter().filter(|(_, k, _)| k == kind).count()
}

/// The real binary on `config` (database, blobs, broker), serving HTTP on `port`,
/// logging into the data dir; SIGKILLed on drop.
async fn spawn(config: &mota_backend::Config, port: u16) -> Result<Replica, BoxError> {
    let log = config.data_dir.join("backend.log");
    Replica::spawn(env!("CARGO_BIN_EXE_mota-backend"), config, &config.mqtt_client_id, port, &log).await
}

#[tokio::test]
async fn a_backend_killed_mid_rollout_resumes_from_the_database_while_devices_lose_power() -> TestResult {
    tokio::task::LocalSet::new().run_until(killed_mid_rollout()).await
}

async fn killed_mid_rollout() -> TestResult {
    let _turn = common::broker_turn().await;
    // The in-process backend only prepares the database; the binary runs the rollout.
    let (api, backend, (host, port), config) =
        setup("faults-kill", &[("1.0.0", "digits_cnn_v1", ""), ("1.1.0", "digits_cnn_v2", "")]).await?;
    backend.stop().await;
    let http = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let replica = spawn(&config, http).await?;
    let prefix = format!("k{}-", std::process::id());
    let (v1, v2) = (model("digits_cnn_v1")?, model("digits_cnn_v2")?);
    let faults = mota_sim::Faults { cut_probability: 0.5, max_cuts: 2, ..Default::default() };
    let devices = fleet(&config.data_dir, (&host, port), &prefix, 20, &v1, faults).await?;
    registered(&api, &prefix, 20).await?;
    let body = json!({
        "model": "digits", "version": "1.1.0",
        "selector": { "ids": devices.iter().map(|(id, _)| id.clone()).collect::<Vec<_>>() },
        "plan": { "cohorts": [{ "count": 4 }, { "count": 8 }, { "percent": 100 }] },
        "gates": { "min_reports": 4, "max_failure_permille": 0, "stuck_timeout_s": 120 },
    });
    let id = created(&api.json("POST", "/v1/rollouts", &api.operator, body).await?)?;

    // Killed (SIGKILL) as soon as the first cohort passed: the second is being offered.
    eventually(120, "the first cohort to pass", || async {
        let r = common::rollouts::rollout(&api, id).await?;
        Ok((r["cohorts"][0]["state"] == "passed").then_some(()))
    })
    .await?;
    let mut replica = replica;
    replica.kill()?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let _replica = spawn(&config, http).await?;

    let done = wait_state(&api, id, 240, "completed").await?;
    assert!(done["cohorts"].as_array().is_some_and(|c| c.iter().all(|c| c["state"] == "passed")), "{done:#}");
    let rows = attempts(&api, id).await?;
    assert!(rows.iter().all(|r| r.2 == "committed"), "{rows:?}");
    for (id, status) in &devices {
        assert_eq!(status.borrow().running, Some(Digest::of(&v2)), "{id}");
    }
    let cuts: u32 = devices.iter().map(|(_, s)| s.borrow().cuts).sum();
    assert!(cuts > 0, "no device lost power");
    let log = events(&api, id).await?;
    assert_eq!(
        (count(&log, "cohort.started"), count(&log, "cohort.passed"), count(&log, "rollout.completed")),
        (3, 3, 1)
    );
    Ok(())
}

#[tokio::test]
async fn two_replicas_on_one_database_advance_each_cohort_once_and_count_each_report_once() -> TestResult {
    tokio::task::LocalSet::new().run_until(two_replicas()).await
}

async fn two_replicas() -> TestResult {
    let _turn = common::broker_turn().await;
    let (api, first, (host, port), config) =
        setup("faults-two", &[("1.0.0", "digits_cnn_v1", ""), ("1.1.0", "digits_cnn_v2", "")]).await?;
    // The second replica: same database, blobs and share groups; its own client id, on
    // the first one's broker.
    let mut other = config.clone();
    other.mqtt_client_id.push_str("-b");
    other.mqtt_url = Some(format!("mqtt://{host}:{port}"));
    let state = mota_backend::server::open(&other).await?;
    let second = Backend::start_on(&other, &state).await?;

    let prefix = format!("r{}-", std::process::id());
    let v1 = model("digits_cnn_v1")?;
    let devices = fleet(&config.data_dir, (&host, port), &prefix, 30, &v1, Default::default()).await?;
    registered(&api, &prefix, 30).await?;
    let body = json!({
        "model": "digits", "version": "1.1.0",
        "selector": { "ids": devices.iter().map(|(id, _)| id.clone()).collect::<Vec<_>>() },
        "plan": { "cohorts": [{ "percent": 10 }, { "percent": 40 }, { "percent": 100 }] },
        "gates": { "min_reports": 3, "max_failure_permille": 0, "stuck_timeout_s": 120 },
    });
    let id = created(&api.json("POST", "/v1/rollouts", &api.operator, body).await?)?;
    wait_state(&api, id, 240, "completed").await?;
    let log = events(&api, id).await?;
    assert_eq!(
        (count(&log, "cohort.started"), count(&log, "cohort.passed"), count(&log, "rollout.completed")),
        (3, 3, 1)
    );

    // Every report again, as a broker redelivery would: stored and counted once.
    let reports: Vec<(String, Vec<u8>)> =
        sqlx::query_as("SELECT device_id, payload FROM device_reports WHERE rollout_id = $1 ORDER BY device_id, seq")
            .bind(id)
            .fetch_all(&api.state.db.pool)
            .await?;
    let client = first.mqtt.client();
    for (device, payload) in &reports {
        let topic = mota_proto::topic::Topic::new(device, mota_proto::topic::Kind::Status)?.to_string();
        client.publish(topic, rumqttc::QoS::AtLeastOnce, false, payload.clone()).await?;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let stored: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM device_reports WHERE rollout_id = $1")
        .bind(id)
        .fetch_one(&api.state.db.pool)
        .await?;
    assert_eq!(stored as usize, reports.len());
    let view = common::rollouts::rollout(&api, id).await?;
    let committed: i64 =
        view["cohorts"].as_array().ok_or("no cohorts")?.iter().filter_map(|c| c["tally"]["committed"].as_i64()).sum();
    assert_eq!(committed, 30);
    assert_eq!(count(&events(&api, id).await?, "cohort.passed"), 3);

    second.stop().await;
    first.stop().await;
    Ok(())
}

#[tokio::test]
async fn a_device_offline_past_the_offline_limit_fails_its_cohort_then_reports_late_and_counts() -> TestResult {
    tokio::task::LocalSet::new().run_until(late_device()).await
}

async fn late_device() -> TestResult {
    let _turn = common::broker_turn().await;
    let (api, backend, (host, port), config) =
        setup("faults-late", &[("1.0.0", "digits_cnn_v1", ""), ("1.1.0", "digits_cnn_v2", "")]).await?;
    let prefix = format!("l{}-", std::process::id());
    let v1 = model("digits_cnn_v1")?;
    let online = fleet(&config.data_dir, (&host, port), &prefix, 3, &v1, Default::default()).await?;
    registered(&api, &prefix, 3).await?;
    // A fourth device known to the backend but switched off.
    let late = format!("{prefix}late");
    let r = api.json("POST", "/v1/devices", &api.operator, json!({ "id": late, "device_class": "mcu" })).await?;
    assert_eq!(r.status, 201);
    let mut ids: Vec<String> = online.iter().map(|(id, _)| id.clone()).collect();
    ids.push(late.clone());
    let body = json!({
        "model": "digits", "version": "1.1.0", "selector": { "ids": ids },
        "plan": { "cohorts": [{ "percent": 100 }] },
        "gates": { "min_reports": 3, "max_failure_permille": 0, "stuck_timeout_s": 2, "offline_limit_s": 2 },
    });
    let id = created(&api.json("POST", "/v1/rollouts", &api.operator, body).await?)?;
    // Offline is waiting, not failing, until the offline limit.
    let waiting = eventually(30, "the online devices to commit", || async {
        let view: Value = common::rollouts::rollout(&api, id).await?;
        Ok((view["cohorts"][0]["tally"]["committed"] == 3).then_some(view))
    })
    .await?;
    assert!(waiting["cohorts"][0]["tally"]["offline"] == 1 || waiting["state"] == "paused", "{waiting:#}");
    let paused = wait_state(&api, id, 60, "paused").await?;
    assert_eq!(paused["cohorts"][0]["tally"]["timed_out"], 1, "{paused:#}");
    assert_eq!(paused["cohorts"][0]["tally"]["committed"], 3, "{paused:#}");

    // The device comes up, finds its retained offer (the full image: the backend never
    // knew what it ran), and commits: the late report replaces the timeout.
    let (_, task) =
        common::run_device(common::device(&config.data_dir, (&host, port), &late, &v1, Default::default())?);
    let states = eventually(60, "the late device to commit", || async {
        let rows = attempts(&api, id).await?;
        Ok(rows.iter().all(|r| r.2 == "committed").then_some(rows))
    })
    .await?;
    assert_eq!(states.iter().find(|r| r.0 == late).map(|r| r.3), Some(Some(0)), "a full image");
    let view: Value = common::rollouts::rollout(&api, id).await?;
    assert_eq!(view["cohorts"][0]["tally"]["committed"], 4);
    assert_eq!(view["state"], "paused", "a failed cohort waits for the operator");
    let r = api.json("POST", &format!("/v1/rollouts/{id}/resume"), &api.operator, json!(null)).await?;
    assert_eq!(r.status, 200);
    let done = wait_state(&api, id, 30, "completed").await?;
    assert!(done["cohorts"][0]["reason"].as_str().is_some_and(|r| r.starts_with("accepted by")), "{done:#}");
    task.abort();
    backend.stop().await;
    Ok(())
}

#[tokio::test]
async fn a_terminal_report_the_broker_dropped_is_asked_for_again() -> TestResult {
    tokio::task::LocalSet::new().run_until(lost_report()).await
}

/// A broker that restarts drops what devices publish before a replica rejoins the shared
/// subscription (Mosquitto 2.0.11, found by the scale-out test). Here the loss is made
/// by hand: a device committed, and the backend forgets the report (its row gone, the
/// attempt back at `verified`, quiet for a minute). The engine republishes the offer of
/// an attempt quiet that long, and the agent answers an offer it already finished with
/// its terminal report again: the attempt is committed again, from the same report.
/// A rollout of two devices, one approval apart, whose first cohort passed: the API,
/// the backend, the rollout, the committed device and its `committed` report (seq,
/// payload).
async fn one_committed(name: &str) -> Result<(common::Api, Backend, i64, String, (i64, Vec<u8>)), BoxError> {
    let (api, backend, (host, port), config) =
        setup(name, &[("1.0.0", "digits_cnn_v1", ""), ("1.1.0", "digits_cnn_v2", "")]).await?;
    let prefix = format!("r{}-", std::process::id());
    let v1 = model("digits_cnn_v1")?;
    let online = fleet(&config.data_dir, (&host, port), &prefix, 2, &v1, Default::default()).await?;
    registered(&api, &prefix, 2).await?;
    let ids: Vec<String> = online.iter().map(|(id, _)| id.clone()).collect();
    // Two cohorts with approval: after the first, the rollout waits, still running.
    let body = json!({
        "model": "digits", "version": "1.1.0", "selector": { "ids": ids },
        "plan": { "cohorts": [{ "count": 1 }, { "percent": 100 }], "approval": true },
    });
    let id = created(&api.json("POST", "/v1/rollouts", &api.operator, body).await?)?;
    let first = eventually(60, "the first cohort to pass", || async {
        let r = common::rollouts::rollout(&api, id).await?;
        Ok((r["awaiting_approval"] == true).then_some(r))
    })
    .await?;
    assert_eq!(first["cohorts"][0]["tally"]["committed"], 1);
    let rows = attempts(&api, id).await?;
    let device = rows.iter().find(|r| r.2 == "committed").map(|r| r.0.clone()).ok_or("no committed device")?;
    let report: (i64, Vec<u8>) = sqlx::query_as(
        "SELECT seq, payload FROM device_reports WHERE rollout_id = $1 AND device_id = $2 AND event = 4",
    )
    .bind(id)
    .bind(&device)
    .fetch_one(&api.state.db.pool)
    .await?;
    Ok((api, backend, id, device, report))
}

/// Forgets that `device` committed: its report is gone and its attempt is back at
/// `verified`, last updated `updated_at`.
async fn forget_commit(api: &common::Api, id: i64, device: &str, updated_at: i64) -> TestResult {
    sqlx::query("DELETE FROM device_reports WHERE rollout_id = $1 AND device_id = $2 AND event = 4")
        .bind(id)
        .bind(device)
        .execute(&api.state.db.pool)
        .await?;
    sqlx::query("UPDATE attempts SET state = 'verified', updated_at = $1 WHERE rollout_id = $2 AND device_id = $3")
        .bind(updated_at)
        .bind(id)
        .bind(device)
        .execute(&api.state.db.pool)
        .await?;
    Ok(())
}

async fn lost_report() -> TestResult {
    let _turn = common::broker_turn().await;
    let (api, backend, id, device, report) = one_committed("faults-lost").await?;

    // The report is lost; the attempt looks unfinished and has been quiet for a minute.
    forget_commit(&api, id, &device, mota_backend::db::now_ms() - 60_000).await?;

    // A replica starting now asks its quiet devices at once.
    let engine = mota_backend::rollout::engine::Engine::new(&api.state, &backend.mqtt);
    engine.tick().await.map_err(|e| e.to_string())?;
    let again: (i64, Vec<u8>) = eventually(30, "the device to report again", || async {
        Ok(sqlx::query_as(
            "SELECT seq, payload FROM device_reports WHERE rollout_id = $1 AND device_id = $2 AND event = 4",
        )
        .bind(id)
        .bind(&device)
        .fetch_optional(&api.state.db.pool)
        .await?)
    })
    .await?;
    assert_eq!(again, report, "the same report, under the same key");
    let rows = attempts(&api, id).await?;
    assert_eq!(rows.iter().find(|r| r.0 == device).map(|r| r.2.as_str()), Some("committed"));
    backend.stop().await;
    Ok(())
}

#[tokio::test]
async fn a_report_is_folded_again_onto_what_another_replica_wrote_meanwhile() -> TestResult {
    tokio::task::LocalSet::new().run_until(folded_again()).await
}

/// Replica B reads the attempt (`verified`), folds the device's `committed` report onto
/// it and writes; replica A moved the attempt to `validated` in between and commits
/// while B waits for the row. B's write expects `verified`, so it misses; B reads
/// `validated`, folds again and writes `committed`. (On SQLite, B's transaction waits for
/// A's to end and reads `validated` the first time.) Without the second read the
/// device's commit would be stored but never counted.
async fn folded_again() -> TestResult {
    let _turn = common::broker_turn().await;
    let (api, backend, id, device, (_, payload)) = one_committed("faults-fold").await?;
    forget_commit(&api, id, &device, mota_backend::db::now_ms()).await?;

    let db = api.state.db.clone();
    let mut other = db.begin().await?;
    sqlx::query("UPDATE attempts SET state = 'validated' WHERE rollout_id = $1 AND device_id = $2")
        .bind(id)
        .bind(&device)
        .execute(&mut *other)
        .await?;
    let ingest = tokio::spawn({
        let (db, device) = (db.clone(), device.clone());
        async move { mota_backend::mqtt::reports::ingest(&db, &[(device.as_str(), &payload[..])]).await }
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    other.commit().await?;
    let moved = ingest.await?.map_err(|e| e.to_string())?;
    assert_eq!(moved, 1, "the committed report counted once");
    let rows = attempts(&api, id).await?;
    assert_eq!(rows.iter().find(|r| r.0 == device).map(|r| r.2.as_str()), Some("committed"));
    backend.stop().await;
    Ok(())
}
