//! `mota rollout`: create (flags, plan file, dry run), list, show, watch, devices, and
//! every action, driving a fleet of simulated devices; exit codes 3, 5 and 7.

use serde_json::Value;

use crate::support::{Env, TestResult, arg, eventually, fixture, make_digits_set};

const DEVICES: usize = 8;

/// v1 (with its validation set) and `more` versions pushed; the fleet registered and
/// each pushed version's patch from the one before computed.
async fn fleet_with(more: &[(&str, &str)]) -> Result<Env, Box<dyn std::error::Error + Send + Sync>> {
    let env = Env::start(DEVICES).await?;
    let set = make_digits_set(&env).await;
    let v1 = fixture("digits_cnn_v1.tflite");
    let pushed = env
        .json(&[
            "model",
            "push",
            &arg(&v1),
            "--model",
            "digits",
            "--version",
            "1.0.0",
            "--device-class",
            "cortex-m4",
            "--valset",
            &arg(&set),
        ])
        .await;
    let sha = pushed["validation_set_sha256"].as_str().ok_or("no set")?.to_owned();
    for (version, file) in more {
        let path = fixture(&format!("{file}.tflite"));
        env.ok(&[
            "model",
            "push",
            &arg(&path),
            "--model",
            "digits",
            "--version",
            version,
            "--valset-sha256",
            &sha,
            "--max-drop-permille",
            "20",
        ])
        .await;
        eventually(60, "the patch", || async {
            let deltas = env.json(&["delta", "list", "digits", version]).await;
            deltas.as_array().is_some_and(|ds| ds.iter().any(|d| d["state"] == "done"))
        })
        .await;
    }
    eventually(60, "the fleet to register", || async {
        let devices = env.json(&["device", "list", "--class", "cortex-m4"]).await;
        devices.as_array().is_some_and(|ds| ds.iter().filter(|d| d["online"] == true).count() == DEVICES)
    })
    .await;
    Ok(env)
}

async fn state(env: &Env, id: &str) -> Value {
    env.json(&["rollout", "show", id]).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_previews_starts_approves_watches_and_rolls_back_a_rollout() -> TestResult {
    let env = fleet_with(&[("1.1.0", "digits_cnn_v2")]).await?;

    let preview = env.json(&["rollout", "create", "digits", "1.1.0", "--cohorts", "2,50%,100%", "--dry-run"]).await;
    assert_eq!(preview["population"], DEVICES);
    assert_eq!(preview["delta"], DEVICES, "every device runs 1.0.0, which has a patch: {preview}");
    let sizes: Vec<u64> =
        preview["cohorts"].as_array().ok_or("no cohorts")?.iter().filter_map(|c| c["size"].as_u64()).collect();
    assert_eq!(sizes, [2, 2, 4]);
    let table = env.ok(&["rollout", "create", "digits", "1.1.0", "--cohorts", "2,50%,100%", "--dry-run"]).await;
    assert!(table.contains("8 devices selected: 8 would get a patch"), "{table}");
    assert!(env.json(&["rollout", "list"]).await.as_array().is_some_and(Vec::is_empty), "a dry run creates nothing");

    // From a plan file, with one gate changed on the command line.
    let plan = env.home.path().join("plan.toml");
    std::fs::write(
        &plan,
        "[plan]\ncohorts = [{ count = 2 }, { percent = 100 }]\napproval = true\n\n[gates]\nmin_reports = 2\nstuck_timeout_s = 300\n",
    )?;
    let created = env
        .ok(&["rollout", "create", "digits", "1.1.0", "--plan", &arg(&plan), "--max-accuracy-drop-permille", "20"])
        .await;
    assert!(created.starts_with("created rollout 1: digits 1.1.0"), "{created}");
    let r = state(&env, "1").await;
    assert_eq!(r["plan"]["approval"], true);
    assert_eq!(r["gates"]["min_reports"], 2);
    assert_eq!(r["gates"]["max_accuracy_drop_permille"], 20);
    let list = env.ok(&["rollout", "list"]).await;
    assert!(list.lines().any(|l| l.starts_with('1') && l.contains("digits 1.1.0")), "{list}");

    eventually(60, "the first cohort to pass and wait for approval", || async {
        state(&env, "1").await["awaiting_approval"] == true
    })
    .await;
    let shown = env.ok(&["rollout", "show", "1"]).await;
    assert!(shown.contains("awaiting approval"), "{shown}");
    assert!(shown.contains("cohort 1 gates: failure_rate 0‰ ≤ 100‰ ok"), "{shown}");
    let approved = env.ok(&["rollout", "approve", "1"]).await;
    assert!(approved.starts_with("rollout 1: running"), "{approved}");

    let watched = env.mota(&["rollout", "watch", "1", "--interval", "200ms", "--timeout", "90s"]).await;
    assert_eq!(watched.code, 0, "{watched:?}");
    assert!(watched.stderr.contains("rollout 1 completed"), "{watched:?}");
    assert!(watched.stderr.contains("cohort 2 passed"), "{watched:?}");

    let committed = env.json(&["rollout", "devices", "1", "--state", "committed"]).await;
    assert_eq!(committed.as_array().map(Vec::len), Some(DEVICES));
    assert!(committed.as_array().is_some_and(|a| a.iter().all(|d| d["delta"] == true)), "all as patches: {committed}");
    let table = env.ok(&["rollout", "devices", "1"]).await;
    assert_eq!(table.lines().filter(|l| l.contains("committed") && l.contains("patch")).count(), DEVICES, "{table}");
    // A rollout this small lists each device's own measurement under its cohorts.
    let shown = env.ok(&["rollout", "show", "1"]).await;
    let measured = shown.lines().filter(|l| l.starts_with("demo-") && l.contains("committed") && l.contains(" %"));
    assert_eq!(measured.count(), DEVICES, "{shown}");

    let back = env.ok(&["rollout", "rollback", "1"]).await;
    assert!(back.contains("rolled_back"), "{back}");
    eventually(60, "the fleet back on 1.0.0", || async {
        let devices = env.json(&["device", "list"]).await;
        devices.as_array().is_some_and(|ds| ds.iter().all(|d| d["running_version"] == "1.0.0"))
    })
    .await;
    let history = env.json(&["device", "history", "demo-00000"]).await;
    assert_eq!(history[0]["rollout_id"], 1);
    assert_eq!(history[0]["state"], "rolled_back", "{history}");

    // Refusals: the state forbids it (5), no such rollout (3); each with a hint.
    let again = env.mota(&["rollout", "pause", "1"]).await;
    assert_eq!(again.code, 5, "{again:?}");
    assert!(
        again.stderr.contains("rollout_state") && again.stderr.contains("hint: `mota rollout show ID`"),
        "{again:?}"
    );
    let missing = env.mota(&["rollout", "show", "99"]).await;
    assert_eq!(missing.code, 3, "{missing:?}");
    env.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollout_the_canaries_refuse_stops_and_watch_exits_7() -> TestResult {
    let env = fleet_with(&[("1.1.0", "digits_cnn_v2"), ("1.2.0", "digits_cnn_v3_bad")]).await?;
    let out = env
        .mota(&[
            "rollout",
            "create",
            "digits",
            "1.2.0",
            "--canary",
            "demo-00003",
            "--cohorts",
            "1,100%",
            "--stuck-timeout",
            "2m",
            "--watch",
        ])
        .await;
    assert_eq!(out.code, 7, "{out:?}");
    assert!(out.stdout.starts_with("created rollout 1"), "{out:?}");
    assert!(out.stderr.contains("rollout 1 paused (cohort 1 failed its gates: failure_rate"), "{out:?}");
    let r = state(&env, "1").await;
    assert_eq!(r["cohorts"][0]["tally"]["rejected"], 1, "{r}");
    assert_eq!(r["cohorts"][1]["state"], "pending", "{r}");
    let rejected = env.json(&["rollout", "devices", "1", "--state", "rejected"]).await;
    assert_eq!(rejected[0]["device_id"], "demo-00003");

    // Paused: pausing again is refused, aborting ends it; resuming after is refused.
    assert_eq!(env.mota(&["rollout", "pause", "1"]).await.code, 5);
    let aborted = env.json(&["rollout", "abort", "1"]).await;
    assert_eq!(aborted["state"], "aborted");
    assert_eq!(env.mota(&["rollout", "resume", "1"]).await.code, 5);
    let watched = env.mota(&["rollout", "watch", "1"]).await;
    assert_eq!(watched.code, 7, "an aborted rollout did not complete: {watched:?}");

    // Pause and resume on a running rollout, with JSON lines from watch.
    env.ok(&["rollout", "create", "digits", "1.1.0", "--cohorts", "1,100%", "--approval"]).await;
    let paused = env.json(&["rollout", "pause", "2"]).await;
    assert_eq!(paused["state"], "paused");
    let lines = env.mota(&["--json", "rollout", "watch", "2"]).await;
    assert_eq!(lines.code, 7);
    let docs: Vec<Value> = lines.stdout.lines().map(serde_json::from_str).collect::<Result<_, _>>()?;
    assert_eq!(docs.last().map(|d| d["state"].clone()), Some("paused".into()));
    let resumed = env.json(&["rollout", "resume", "2"]).await;
    assert_eq!(resumed["state"], "running");
    env.stop().await
}
