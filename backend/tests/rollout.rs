//! Rollouts end to end: the backend (API, engine, MQTT side) and a fleet of 50 simulated
//! devices (mota-sim: the real agent, verifier, patcher and runtime on simulated flash)
//! on a real broker — the embedded one, or the one at `MOTA_TEST_BROKER`; on SQLite, or
//! the PostgreSQL at `MOTA_TEST_POSTGRES`.
//!
//! (a) a fine-tuned model walks three cohorts to every device, mostly as patches, each
//! cohort started once and only after the one before passed; (c) a cloud rollback
//! returns every device to its previous model; (b) a degraded model is rejected by the
//! canaries' on-device validation, the rollout stops itself, and no device outside the
//! canary cohort was ever offered it.

mod common;

use std::collections::HashSet;

use common::rollouts::{attempts, created, events, registered, rollout, setup, wait_state};
use common::{Api, Backend, TestResult, eventually, fleet, model};
use mota_proto::Digest;
use serde_json::json;

const DEVICES: usize = 50;

#[tokio::test]
async fn a_good_model_walks_three_cohorts_as_patches_and_a_cloud_rollback_returns_the_fleet() -> TestResult {
    tokio::task::LocalSet::new().run_until(good_then_rollback()).await
}

async fn good_then_rollback() -> TestResult {
    let _turn = common::broker_turn().await;
    let (api, backend, (host, port), _) =
        setup("rollout-good", &[("1.0.0", "digits_cnn_v1", ""), ("1.1.0", "digits_cnn_v2", "")]).await?;
    let prefix = format!("g{}-", std::process::id());
    let (v1, v2) = (model("digits_cnn_v1")?, model("digits_cnn_v2")?);
    let devices = fleet(&api.dir.path().join("data"), (&host, port), &prefix, DEVICES, &v1, Default::default()).await?;
    registered(&api, &prefix, DEVICES).await?;
    let canary: Vec<String> = devices.iter().take(2).map(|(id, _)| id.clone()).collect();
    let body = json!({
        "model": "digits", "version": "1.1.0",
        "selector": { "ids": devices.iter().map(|(id, _)| id.clone()).collect::<Vec<_>>() },
        "plan": { "cohorts": [{ "percent": 10 }, { "percent": 50 }, { "percent": 100 }], "canary": canary },
        "gates": { "min_reports": 2, "max_failure_permille": 0, "stuck_timeout_s": 120,
                   "min_accuracy_permille": 800, "max_accuracy_drop_permille": 20, "max_latency_increase_permille": 500 },
    });

    // The dry run: cohort sizes and how many would get a patch; nothing written.
    let mut dry = body.clone();
    dry["dry_run"] = true.into();
    let preview = api.json("POST", "/v1/rollouts", &api.operator, dry).await?;
    assert_eq!(preview.status, 200, "{}", String::from_utf8_lossy(&preview.body));
    let p = preview.json();
    assert_eq!(p["population"], DEVICES);
    let sizes: Vec<i64> =
        p["cohorts"].as_array().ok_or("no cohorts")?.iter().filter_map(|c| c["size"].as_i64()).collect();
    assert_eq!(sizes, [5, 20, 25]);
    assert_eq!((p["delta"].as_i64(), p["full"].as_i64()), (Some(DEVICES as i64), Some(0)));
    assert_eq!(api.count("rollouts").await?, 0);

    let id = created(&api.json("POST", "/v1/rollouts", &api.operator, body).await?)?;
    let done = wait_state(&api, id, 240, "completed").await?;
    let cohorts = done["cohorts"].as_array().ok_or("no cohorts")?;
    assert!(cohorts.iter().all(|c| c["state"] == "passed"), "{done:#}");
    assert_eq!(cohorts[0]["tally"]["committed"], 5);
    let gates = cohorts[0]["gates"].as_array().ok_or("no gates")?;
    assert!(gates.iter().all(|g| g["holds"] == true), "{gates:?}");

    // Every device took 1.1.0, as a patch; the canaries were in the first cohort.
    let rows = attempts(&api, id).await?;
    assert_eq!(rows.len(), DEVICES);
    assert!(rows.iter().all(|(_, _, state, _)| state == "committed"), "{rows:?}");
    // As the dry run said: every one a patch, and the offer recorded even for devices
    // that answered before the engine wrote it down.
    assert!(rows.iter().all(|r| r.3 == Some(1)), "{rows:?}");
    let unrecorded: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM attempts WHERE rollout_id = $1 AND (offered_at IS NULL OR manifest_sha256 IS NULL)",
    )
    .bind(id)
    .fetch_one(&api.state.db.pool)
    .await?;
    assert_eq!(unrecorded, 0);
    assert!(rows.iter().filter(|r| canary.contains(&r.0)).all(|r| r.1 == 0));
    for (id, status) in &devices {
        assert_eq!(status.borrow().running, Some(Digest::of(&v2)), "{id}");
    }
    let running_v2: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM devices WHERE id LIKE $1 AND running_version = '1.1.0'")
            .bind(format!("{prefix}%"))
            .fetch_one(&api.state.db.pool)
            .await?;
    assert_eq!(running_v2, DEVICES as i64);

    // Each cohort started once, after the one before passed; one completion.
    let log = events(&api, id).await?;
    let kinds: Vec<&str> = log.iter().map(|(_, k, _)| k.as_str()).collect();
    assert_eq!(
        kinds,
        [
            "rollout.created",
            "cohort.started",
            "cohort.passed",
            "cohort.started",
            "cohort.passed",
            "cohort.started",
            "cohort.passed",
            "rollout.completed"
        ],
    );

    // The device's history shows the update.
    let history = api.get(&format!("/v1/devices/{}/updates", devices[7].0), &api.viewer).await?.json();
    assert_eq!(history["items"][0]["state"], "committed");
    assert_eq!(history["items"][0]["delta"], true);

    // (c) Cloud rollback: every device returns to 1.0.0.
    let r = api.json("POST", &format!("/v1/rollouts/{id}/rollback"), &api.operator, json!(null)).await?;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    eventually(120, "every device to roll back", || async {
        let rows = attempts(&api, id).await?;
        Ok(rows.iter().all(|r| r.2 == "rolled_back").then_some(()))
    })
    .await
    .map_err(|e| format!("{e}; {:?}", devices.iter().map(|(_, s)| s.borrow().version.clone()).collect::<Vec<_>>()))?;
    for (id, status) in &devices {
        assert_eq!(status.borrow().running, Some(Digest::of(&v1)), "{id}");
    }
    let back: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM devices WHERE id LIKE $1 AND running_sha256 = $2")
        .bind(format!("{prefix}%"))
        .bind(Digest::of(&v1).to_string())
        .fetch_one(&api.state.db.pool)
        .await?;
    assert_eq!(back, DEVICES as i64);
    assert_eq!(rollout(&api, id).await?["state"], "rolled_back");

    clear(&backend, &devices.iter().map(|(id, _)| id.clone()).collect::<Vec<_>>()).await?;
    backend.stop().await;
    Ok(())
}

#[tokio::test]
async fn a_degraded_model_is_stopped_by_the_canaries_and_never_offered_beyond() -> TestResult {
    tokio::task::LocalSet::new().run_until(degraded()).await
}

async fn degraded() -> TestResult {
    let _turn = common::broker_turn().await;
    let (api, backend, (host, port), _) = setup(
        "rollout-bad",
        &[("1.0.0", "digits_cnn_v1", ""), ("1.2.0", "digits_cnn_v3_bad", "&max_drop_permille=20")],
    )
    .await?;
    let prefix = format!("b{}-", std::process::id());
    let v1 = model("digits_cnn_v1")?;
    let devices = fleet(&api.dir.path().join("data"), (&host, port), &prefix, DEVICES, &v1, Default::default()).await?;
    registered(&api, &prefix, DEVICES).await?;
    let canary: Vec<String> = devices.iter().take(3).map(|(id, _)| id.clone()).collect();
    let body = json!({
        "model": "digits", "version": "1.2.0",
        "selector": { "ids": devices.iter().map(|(id, _)| id.clone()).collect::<Vec<_>>() },
        "plan": { "cohorts": [{ "count": 3 }, { "percent": 100 }], "canary": canary },
        "gates": { "min_reports": 2, "max_failure_permille": 100, "stuck_timeout_s": 120 },
    });
    let id = created(&api.json("POST", "/v1/rollouts", &api.operator, body).await?)?;
    let paused = wait_state(&api, id, 120, "paused").await?;
    assert_eq!(paused["cohorts"][0]["state"], "failed", "{paused:#}");
    assert_eq!(paused["cohorts"][1]["state"], "pending");
    assert!(paused["reason"].as_str().is_some_and(|r| r.contains("failure_rate")), "{paused:#}");

    // The canaries measured the drop themselves and kept 1.0.0 (those still validating when
    // the first rejection stopped the rollout finish on their own).
    eventually(60, "every canary to finish", || async {
        let rows = attempts(&api, id).await?;
        Ok(rows.iter().filter(|r| r.1 == 0).all(|r| r.2 == "rejected").then_some(()))
    })
    .await?;
    let canaries: Vec<(String, String, Option<i32>, Option<i32>)> = sqlx::query_as(
        "SELECT device_id, state, error_code, accuracy_permille FROM attempts WHERE rollout_id = $1 AND state <> 'pending' \
         ORDER BY device_id",
    )
    .bind(id)
    .fetch_all(&api.state.db.pool)
    .await?;
    let accuracy_drop = i32::from(mota_proto::message::ErrorCode::ACCURACY_DROP.0);
    assert!(
        canaries.iter().filter(|c| c.1 == "rejected").all(|c| c.2 == Some(accuracy_drop) && c.3.is_some()),
        "{canaries:?}"
    );
    assert_eq!(canaries.len(), 3, "{canaries:?}");
    for (id, status) in &devices {
        assert_eq!(status.borrow().running, Some(Digest::of(&v1)), "{id}");
    }

    // Only the canary cohort was ever offered the degraded model, even after a while.
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    let offered: HashSet<String> = sqlx::query_scalar("SELECT device_id FROM device_offers WHERE rollout_id = $1")
        .bind(id)
        .fetch_all(&api.state.db.pool)
        .await?
        .into_iter()
        .collect();
    assert_eq!(offered, canary.iter().cloned().collect::<HashSet<_>>());
    let kinds: Vec<String> = events(&api, id).await?.into_iter().map(|(_, k, _)| k).collect();
    assert_eq!(kinds, ["rollout.created", "cohort.started", "cohort.failed", "rollout.paused"]);

    // The operator aborts; nothing more is offered and the cohort's attempts end.
    let r = api.json("POST", &format!("/v1/rollouts/{id}/abort"), &api.operator, json!(null)).await?;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["state"], "aborted");
    let again = api.json("POST", &format!("/v1/rollouts/{id}/resume"), &api.operator, json!(null)).await?;
    assert_eq!(again.status, 409);
    let pending: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM attempts WHERE rollout_id = $1 AND state = 'pending'")
        .bind(id)
        .fetch_one(&api.state.db.pool)
        .await?;
    assert_eq!(pending, 0);

    clear(&backend, &devices.iter().map(|(id, _)| id.clone()).collect::<Vec<_>>()).await?;
    backend.stop().await;
    Ok(())
}

/// On a shared broker, removes the retained offers and commands the test left behind.
async fn clear(backend: &Backend, devices: &[String]) -> TestResult {
    use mota_proto::topic::{Kind, Topic};
    let client = backend.mqtt.client();
    for id in devices {
        for kind in [Kind::Offer, Kind::Cmd] {
            client.publish(Topic::new(id, kind)?.to_string(), rumqttc::QoS::AtLeastOnce, true, Vec::new()).await?;
        }
    }
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    Ok(())
}

#[tokio::test]
async fn with_approval_each_cohort_waits_for_an_operator_and_soaks() -> TestResult {
    tokio::task::LocalSet::new().run_until(approval()).await
}

async fn approval() -> TestResult {
    let _turn = common::broker_turn().await;
    let (api, backend, (host, port), _) =
        setup("rollout-approval", &[("1.0.0", "digits_cnn_v1", ""), ("1.1.0", "digits_cnn_v2", "")]).await?;
    let prefix = format!("a{}-", std::process::id());
    let v1 = model("digits_cnn_v1")?;
    let devices = fleet(&api.dir.path().join("data"), (&host, port), &prefix, 6, &v1, Default::default()).await?;
    registered(&api, &prefix, 6).await?;
    let body = json!({
        "model": "digits", "version": "1.1.0",
        "selector": { "ids": devices.iter().map(|(id, _)| id.clone()).collect::<Vec<_>>() },
        "plan": { "cohorts": [{ "count": 2 }, { "count": 2 }, { "percent": 100 }], "approval": true },
        "gates": { "min_reports": 2, "soak_s": 1 },
    });
    let id = created(&api.json("POST", "/v1/rollouts", &api.operator, body).await?)?;
    let act = |action: &'static str| {
        let api = &api;
        async move { api.json("POST", &format!("/v1/rollouts/{id}/{action}"), &api.operator, json!(null)).await }
    };
    let awaiting = |passed: usize| {
        let api = &api;
        async move {
            eventually(60, "a cohort to pass and wait for approval", || async {
                let r = rollout(api, id).await?;
                let done = r["cohorts"].as_array().map_or(0, |c| c.iter().filter(|c| c["state"] == "passed").count());
                Ok((done == passed && r["awaiting_approval"] == true).then_some(r))
            })
            .await
        }
    };

    let r = awaiting(1).await?;
    let c0 = &r["cohorts"][0];
    let soaked = c0["finished_at"].as_i64().unwrap_or(0) - c0["started_at"].as_i64().unwrap_or(i64::MAX);
    assert!(soaked >= 1000, "passed {soaked} ms after it started, before its 1 s soak");
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    let still = rollout(&api, id).await?;
    assert_eq!(still["cohorts"][1]["state"], "pending", "no approval, no second cohort");
    let offered: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM device_offers WHERE rollout_id = $1")
        .bind(id)
        .fetch_one(&api.state.db.pool)
        .await?;
    assert_eq!(offered, 2);
    assert_eq!(api.json("POST", &format!("/v1/rollouts/{id}/approve"), &api.viewer, json!(null)).await?.status, 403);

    assert_eq!(act("approve").await?.status, 200);
    awaiting(2).await?;
    // Paused, approval is recorded but nothing starts; resumed, the third cohort runs.
    assert_eq!(act("pause").await?.json()["state"], "paused");
    assert_eq!(act("pause").await?.status, 409);
    assert_eq!(act("approve").await?.status, 200);
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    assert_eq!(rollout(&api, id).await?["cohorts"][2]["state"], "pending");
    assert_eq!(act("resume").await?.json()["state"], "running");
    wait_state(&api, id, 60, "completed").await?;
    assert_eq!(act("approve").await?.status, 409, "nothing left to approve");
    let kinds: Vec<String> = events(&api, id).await?.into_iter().map(|(_, k, _)| k).collect();
    assert_eq!(kinds.iter().filter(|k| *k == "rollout.approved").count(), 2);
    assert_eq!(kinds.iter().filter(|k| *k == "cohort.passed").count(), 3);

    clear(&backend, &devices.iter().map(|(id, _)| id.clone()).collect::<Vec<_>>()).await?;
    backend.stop().await;
    Ok(())
}

#[tokio::test]
async fn rollout_requests_are_checked_and_refusals_write_nothing() -> TestResult {
    let api = Api::new().await?;
    assert_eq!(api.upload("digits", "1.0.0", model("digits_cnn_v1")?, "").await?.status, 201);
    for id in ["d1", "d2", "d3"] {
        let r = api.json("POST", "/v1/devices", &api.operator, json!({ "id": id, "device_class": "mcu" })).await?;
        assert_eq!(r.status, 201);
    }
    let post = |body: serde_json::Value, token: String| {
        let api = &api;
        async move { api.json("POST", "/v1/rollouts", &token, body).await }
    };
    let rollout = |plan: serde_json::Value, extra: serde_json::Value| {
        let mut body = json!({ "model": "digits", "version": "1.0.0", "plan": plan });
        if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
            b.extend(e.clone());
        }
        body
    };
    let hundred = json!({ "cohorts": [{ "percent": 100 }] });
    let cases = [
        (rollout(json!({ "cohorts": [{ "percent": 50 }, { "percent": 20 }] }), json!({})), 422, "invalid_rollout"),
        (rollout(json!({ "cohorts": [] }), json!({})), 422, "invalid_rollout"),
        (rollout(json!({ "cohorts": [{ "percent": 100 }, { "count": 1 }] }), json!({})), 422, "invalid_rollout"),
        (rollout(json!({ "cohorts": [{ "percent": 100 }], "canary": ["nobody"] }), json!({})), 422, "invalid_rollout"),
        (rollout(hundred.clone(), json!({ "selector": { "tags": ["none-has-it"] } })), 422, "invalid_rollout"),
        (rollout(hundred.clone(), json!({ "selector": { "class": "other" } })), 422, "invalid_rollout"),
        (rollout(hundred.clone(), json!({ "gates": { "max_failure_permille": 1001 } })), 422, "invalid_rollout"),
        (rollout(hundred.clone(), json!({ "gates": { "stuck_timeout_s": 0 } })), 422, "invalid_rollout"),
        (rollout(hundred.clone(), json!({ "version": "9.9.9" })), 404, "not_found"),
        (rollout(hundred.clone(), json!({ "surprise": 1 })), 400, ""),
        (rollout(json!({ "cohorts": [{ "percent": 100, "count": 2 }] }), json!({})), 400, ""),
    ];
    for (body, status, code) in cases {
        let r = post(body.clone(), api.operator.clone()).await?;
        assert_eq!(r.status, status, "{body}: {}", String::from_utf8_lossy(&r.body));
        if !code.is_empty() {
            assert_eq!(r.code(), code, "{body}");
        }
    }
    assert_eq!(post(rollout(hundred.clone(), json!({})), api.viewer.clone()).await?.status, 403);
    assert_eq!([api.count("rollouts").await?, api.count("attempts").await?, api.count("cohorts").await?], [0, 0, 0]);

    // Created once; the same devices cannot be in a second unfinished rollout.
    let first = post(rollout(hundred.clone(), json!({})), api.operator.clone()).await?;
    assert_eq!(first.status, 201);
    assert_eq!(first.json()["cohorts"][0]["size"], 3);
    let second = post(rollout(hundred.clone(), json!({})), api.operator.clone()).await?;
    assert_eq!((second.status.as_u16(), second.code().as_str()), (409, "rollout_state"));
    assert_eq!(api.get("/v1/rollouts/999", &api.viewer).await?.status, 404);
    let page = api.get("/v1/rollouts?limit=1", &api.viewer).await?.json();
    assert_eq!(page["items"].as_array().map(Vec::len), Some(1));
    let devices = api.get(&format!("/v1/rollouts/{}/devices?state=pending", first.json()["id"]), &api.viewer).await?;
    assert_eq!(devices.json()["items"].as_array().map(Vec::len), Some(3));
    Ok(())
}
