//! Scale-out (issue 9): the status-report ingest rate with 1, 2 and 3 `mota-backend`
//! replicas (the real binary, one process each, the same share group) on the same
//! PostgreSQL server and the same Mosquitto, side by side in one run.
//!
//! Per replica count: a fresh database; D devices registered (through the backend's own
//! `hello` handling) and offered a one-cohort rollout by the replicas' engines, so every
//! report is stored and moves an attempt (the real path); then one rumqttc load client
//! publishes R status reports (QoS 1, 10 per device: accepted, 7 × downloading,
//! verified, committed, interleaved by device as a fleet's arrive), timed from the first
//! publish until all R rows are in `device_reports` (counted every 100 ms: a count scans
//! the table, so more often would take PostgreSQL time from the writers). Anchor (once, same broker): the same
//! R payloads to a plain rumqttc `$share/` subscriber, first publish to R-th message. CPU
//! seconds of each process during each ingest (replicas, Mosquitto, PostgreSQL, this
//! process: the load client and the row-count poll), from `/proc`.
//!
//! Knobs: `MOTA_TEST_POSTGRES` (a PostgreSQL server URL; required), `MOTA_BENCH_REPORTS`
//! (20000), `MOTA_BENCH_REPLICAS` (`1,2,3`), `MOTA_BENCH_ROUNDS` (1: each replica count
//! measured that many times, in turn), `MOTA_BENCH_BINARY` (the replicas' binary, e.g. a
//! release build when this bench runs in another profile), `MOSQUITTO`. No timing is
//! asserted.
//!
//! Run: `MOTA_TEST_POSTGRES=postgres://… cargo bench -p mota-backend --bench scale_out`.

#[path = "../tests/common/mod.rs"]
mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::cluster::{Mosquitto, Replica, cpu_seconds, free_port, postgres_cpu, postgres_since};
use common::load::{device_hello, env_or, publisher, subscriber, update_reports};
use common::{Api, BoxError};
use mota_proto::message::Hello;
use mota_proto::{Digest, Wire};
use serde_json::json;

type Res<T> = Result<T, BoxError>;

/// The replicas' binary: `MOTA_BENCH_BINARY`, else the one cargo built with this bench.
fn binary() -> String {
    std::env::var("MOTA_BENCH_BINARY").unwrap_or_else(|_| env!("CARGO_BIN_EXE_mota-backend").to_owned())
}
const REPORTS_PER_DEVICE: usize = 10;

async fn count(api: &Api, sql: &str) -> Res<i64> {
    Ok(sqlx::query_scalar(sqlx::AssertSqlSafe(sql.to_owned())).fetch_one(&api.state.db.pool).await?)
}

/// Polls `sql` every `every` until it reaches `want` (`timeout` at most): (when, count).
async fn wait_count(api: &Api, sql: &str, want: i64, every: Duration, timeout: Duration) -> Res<(Instant, i64)> {
    let start = Instant::now();
    loop {
        let n = count(api, sql).await?;
        if n >= want || start.elapsed() > timeout {
            return Ok((Instant::now(), n));
        }
        tokio::time::sleep(every).await;
    }
}

struct Run {
    replicas: usize,
    round: usize,
    reports: usize,
    seconds: f64,
    acked_s: f64,
    stored: i64,
    committed: i64,
    /// CPU seconds: each replica, Mosquitto, PostgreSQL, this process.
    cpu_replicas: Vec<f64>,
    cpu_mosquitto: f64,
    cpu_postgres: f64,
    cpu_bench: f64,
}

async fn ingest(broker: &Mosquitto, replicas: usize, round: usize, reports_n: usize) -> Res<Run> {
    let devices = reports_n.div_ceil(REPORTS_PER_DEVICE);
    let group = format!("mota-bench-scale-{}-{replicas}-{round}", std::process::id());
    let (api, config) = common::cluster::api_on(broker, &group).await?;
    common::rollouts::upload(&api, &[("1.0.0", "digits_cnn_v1", ""), ("1.1.0", "digits_cnn_v2", "")]).await?;
    let (v1, v2) = (common::model("digits_cnn_v1")?, common::model("digits_cnn_v2")?);
    let hello = device_hello(Digest::of(&v1), 4096)?;
    let ids: Vec<String> = (0..devices).map(|i| format!("ing-{replicas}-{round}-{i:05}")).collect();
    for id in &ids {
        let parsed = Hello::parse(&hello).map_err(|e| format!("{e:?}"))?;
        mota_backend::mqtt::registry::hello(
            &api.state.db,
            id,
            &parsed,
            mota_backend::mqtt::registry::Registration::Auto,
        )
        .await?;
    }
    let logs = tempfile::tempdir()?;
    let mut procs = Vec::new();
    for i in 0..replicas {
        let id = format!("{group}-{i}");
        procs
            .push(Replica::spawn(&binary(), &config, &id, free_port()?, &logs.path().join(format!("{id}.log"))).await?);
    }
    // The replicas' engines offer the update to every device.
    let body = json!({
        "model": "digits", "version": "1.1.0", "selector": { "class": "mcu" },
        "plan": { "cohorts": [{ "percent": 100 }] },
        "gates": { "max_failure_permille": 100, "stuck_timeout_s": 3600 },
    });
    let r = api.json("POST", "/v1/rollouts", &api.operator, body).await?;
    let rollout = r.json()["id"].as_i64().ok_or_else(|| format!("no rollout: {}", String::from_utf8_lossy(&r.body)))?;
    let (_, offered) = wait_count(
        &api,
        "SELECT COUNT(*) FROM attempts WHERE state = 'offered'",
        devices as i64,
        Duration::from_millis(20),
        Duration::from_secs(300),
    )
    .await?;
    if offered != devices as i64 {
        return Err(format!("{offered}/{devices} offered").into());
    }
    let manifest: String =
        sqlx::query_scalar("SELECT manifest_sha256 FROM device_offers LIMIT 1").fetch_one(&api.state.db.pool).await?;
    let manifest: Digest = manifest.parse().map_err(|_| "manifest digest")?;
    let per_device = update_reports(rollout as u64, manifest, v2.len() as u32)?;
    let mut messages = Vec::with_capacity(reports_n);
    for payload in &per_device {
        for d in &ids {
            messages.push((format!("mota/v1/dev/{d}/status"), payload.clone()));
        }
    }
    messages.truncate(reports_n);
    let n = messages.len();
    tokio::time::sleep(Duration::from_millis(500)).await;

    let pids: Vec<u32> = procs.iter().filter_map(Replica::pid).collect();
    let before: Vec<f64> = pids.iter().map(|p| cpu_seconds(*p)).collect();
    let mosq = broker.pid().map_or(0.0, cpu_seconds);
    let pg = postgres_cpu();
    let me = cpu_seconds(std::process::id());
    let load = publisher(&format!("bench-scale-load-{replicas}-{round}"), broker.port, Arc::new(messages));
    let (end, stored) = wait_count(
        &api,
        &format!("SELECT COUNT(*) FROM device_reports WHERE rollout_id = {rollout}"),
        n as i64,
        // Counting the table is a scan that competes with the writers: not too often.
        Duration::from_millis(100),
        Duration::from_secs(600),
    )
    .await?;
    let (start, acked) = load.await??;
    let cpu_replicas: Vec<f64> = pids.iter().zip(&before).map(|(p, b)| cpu_seconds(*p) - b).collect();
    let cpu_mosquitto = broker.pid().map_or(0.0, cpu_seconds) - mosq;
    let cpu_postgres = postgres_since(&pg);
    let cpu_bench = cpu_seconds(std::process::id()) - me;
    let seconds = (end - start).as_secs_f64();
    // Settle, then count what the reports moved.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let committed =
        count(&api, &format!("SELECT COUNT(*) FROM attempts WHERE rollout_id = {rollout} AND state = 'committed'"))
            .await?;
    drop(procs);
    common::clear_session(&config, "127.0.0.1", broker.port).await;
    Ok(Run {
        replicas,
        round,
        reports: n,
        seconds,
        acked_s: (acked - start).as_secs_f64(),
        stored,
        committed,
        cpu_replicas,
        cpu_mosquitto,
        cpu_postgres,
        cpu_bench,
    })
}

async fn anchor(broker: &Mosquitto, reports_n: usize) -> Res<f64> {
    let devices = reports_n.div_ceil(REPORTS_PER_DEVICE);
    let per_device = update_reports(1, Digest::of(b"anchor"), 30_000)?;
    let mut messages = Vec::with_capacity(reports_n);
    for payload in &per_device {
        for i in 0..devices {
            // Same topic lengths as the measured run's.
            messages.push((format!("motb/v1/dev/ing-1-0-{i:05}/status"), payload.clone()));
        }
    }
    messages.truncate(reports_n);
    let n = messages.len();
    let (ready, sub) =
        subscriber("bench-scale-anchor", broker.port, "$share/bench-scale-anchor/motb/v1/dev/+/status", n, |_| Some(0));
    ready.await?;
    let (start, _) = publisher("bench-scale-anchor-load", broker.port, Arc::new(messages)).await??;
    let (last, _, _) = sub.await??;
    Ok(n as f64 / (last - start).as_secs_f64())
}

async fn run() -> Res<()> {
    if std::env::var_os("MOTA_TEST_POSTGRES").is_none() {
        return Err("set MOTA_TEST_POSTGRES to a PostgreSQL server URL (a database per run is created there)".into());
    }
    let reports_n: usize = env_or("MOTA_BENCH_REPORTS", 20_000);
    let rounds: usize = env_or("MOTA_BENCH_ROUNDS", 1);
    let counts: Vec<usize> = std::env::var("MOTA_BENCH_REPLICAS")
        .unwrap_or_else(|_| "1,2,3".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let broker = Mosquitto::start()?;
    eprintln!("anchor: {reports_n} reports broker → one $share subscriber");
    let raw = anchor(&broker, reports_n).await?;
    let mut runs = Vec::new();
    for round in 0..rounds {
        for &replicas in &counts {
            eprintln!("round {round}: {replicas} replica(s), {reports_n} reports");
            let run = ingest(&broker, replicas, round, reports_n).await?;
            eprintln!("  {:.0}/s", run.reports as f64 / run.seconds);
            runs.push(run);
        }
    }

    println!("\n## Status reports ingested by 1..3 replicas (PostgreSQL, Mosquitto), one run\n");
    println!(
        "anchor: Mosquitto alone, {reports_n} reports from one load client to one `$share/` subscriber: {raw:.0}/s\n"
    );
    println!(
        "| replicas | round | reports | stored /s | ratio to 1 replica | ratio to the anchor | wall (s) | load client's PUBACKs done after (s) | CPU s: each replica | Mosquitto | PostgreSQL | bench process (load client, polls) | Σ CPU / wall |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|");
    for r in &runs {
        let rate = r.reports as f64 / r.seconds;
        let one: Vec<f64> =
            runs.iter().filter(|o| o.replicas == 1).map(|o| o.reports as f64 / o.seconds).collect::<Vec<_>>();
        let base = if one.is_empty() { f64::NAN } else { one.iter().sum::<f64>() / one.len() as f64 };
        let total = r.cpu_replicas.iter().sum::<f64>() + r.cpu_mosquitto + r.cpu_postgres + r.cpu_bench;
        println!(
            "| {} | {} | {} | **{rate:.0}** | {:.2} | {:.2} | {:.2} | {:.2} | {} | {:.1} | {:.1} | {:.1} | {:.2} |",
            r.replicas,
            r.round,
            r.reports,
            rate / base,
            rate / raw,
            r.seconds,
            r.acked_s,
            r.cpu_replicas.iter().map(|c| format!("{c:.1}")).collect::<Vec<_>>().join(" + "),
            r.cpu_mosquitto,
            r.cpu_postgres,
            r.cpu_bench,
            total / r.seconds
        );
        if r.stored != r.reports as i64 || r.committed * REPORTS_PER_DEVICE as i64 != r.reports as i64 {
            println!(
                "\n(run {} × {}: {} of {} stored, {} attempts committed)\n",
                r.replicas, r.round, r.stored, r.reports, r.committed
            );
        }
    }
    Ok(())
}

fn main() {
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!("machine: {cpus} CPUs; backend binary {}", binary());
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("scale_out bench: {e}");
            std::process::exit(1);
        }
    };
    if let Err(e) = runtime.block_on(run()) {
        eprintln!("scale_out bench failed: {e}");
        std::process::exit(1);
    }
}
