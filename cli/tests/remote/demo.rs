//! `mota demo`: the one command a newcomer runs. It must finish with the outcome the
//! README promises (the good version everywhere, mostly as patches; the degraded one
//! stopped by the canaries), and `--keep` must leave the dashboard and API up.

use std::process::Stdio;

use tokio::io::{AsyncBufReadExt, BufReader};

use crate::support::TestResult;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_rolls_out_a_good_model_and_the_canaries_stop_a_bad_one() -> TestResult {
    let out =
        tokio::process::Command::new(env!("CARGO_BIN_EXE_mota")).args(["demo", "--devices", "12"]).output().await?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    for expected in [
        "12 devices connected",
        "rollout 1: 1.1.0 to 12 devices in cohorts of 1, 2 and the rest; 12 will get a patch, 0 the full image",
        "rollout 2 paused itself; no device outside its first cohort was offered 1.2.0",
        "devices per model    digits 1.1.0: 12",
        "12 devices got a patch, 0 the full image",
        "rollouts             1 completed; 2 paused (cohort 1 failed its gates: failure_rate",
    ] {
        assert!(stdout.contains(expected), "missing {expected:?} in\n{stdout}");
    }
    let accuracy = stdout.lines().find(|l| l.starts_with("accuracy on devices")).ok_or("no accuracy line")?;
    assert!(accuracy.contains("1.1.0 95.3 % (backend measured 95.3 %)"), "{accuracy}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_keep_the_dashboard_and_api_stay_up_until_interrupted() -> TestResult {
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_mota"))
        .args(["demo", "--devices", "4", "--keep"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()?;
    let mut lines = BufReader::new(child.stdout.take().ok_or("no stdout")?).lines();
    let dashboard = loop {
        let line = tokio::time::timeout(std::time::Duration::from_secs(120), lines.next_line())
            .await??
            .ok_or("the demo ended without printing the dashboard address")?;
        if let Some(url) = line.trim().strip_prefix("dashboard") {
            break url.trim().to_owned();
        }
    };
    let (base, token) = dashboard.split_once("/ui/#token=").ok_or("no token in the dashboard address")?;
    let page = reqwest::get(format!("{base}/ui/")).await?;
    assert_eq!(page.status(), 200);
    assert!(page.text().await?.contains("app.js"));
    let rollouts: serde_json::Value =
        reqwest::Client::new().get(format!("{base}/v1/rollouts")).bearer_auth(token).send().await?.json().await?;
    let states: Vec<&str> =
        rollouts["items"].as_array().ok_or("no items")?.iter().filter_map(|r| r["state"].as_str()).collect();
    assert_eq!(states, ["paused", "completed"], "newest first");

    let pid = child.id().ok_or("no pid")?;
    let interrupted = tokio::process::Command::new("kill").args(["-INT", &pid.to_string()]).status().await?;
    assert!(interrupted.success());
    let status = tokio::time::timeout(std::time::Duration::from_secs(30), child.wait()).await??;
    assert!(status.success(), "Ctrl-C ends the demo cleanly: {status}");
    Ok(())
}
