//! Rollouts over MQTT (issue 7): the backend's device side against the broker it runs on,
//! each figure beside an anchor measured in the same run, on the same broker.
//!
//! - `ingest`: N status reports (distinct (device, rollout, seq) keys, 10 per device, the
//!   sequence a device sends for one update: accepted, 7 × downloading, verified,
//!   committed) published by one rumqttc load client (QoS 1) for devices that
//!   are registered and were offered a rollout by the engine, so every report is stored
//!   and moves an attempt: the real path. Timed from the first publish until all N rows
//!   are in `device_reports` (PostgreSQL). Anchor: the same N payloads, same topic
//!   lengths, through the same broker to a plain rumqttc subscriber (`$share/` filter,
//!   QoS 1), timed from the first publish to the N-th message received.
//! - `chunks`: M `get`s (4 KiB, the simulated devices' chunk size) for the patch the
//!   devices were offered, from a load client subscribed to the chunk topics that keeps
//!   W (64) requests outstanding, as W devices pulling one chunk at a time would;
//!   measured before `ingest` on the same backend (before the MQTT loop was split from
//!   its handlers, a status burst left it answering no `get` for minutes: BENCHMARKS.md);
//!   chunk data bytes received per second. Anchors: (a) one way, M pre-encoded chunk messages of the
//!   same size published at once broker → subscriber; (b) round trip, the same M `get`s
//!   with the same window answered by a plain rumqttc echo client that publishes a
//!   pre-encoded chunk per request (the broker carries both legs, the "backend" costs
//!   nothing).
//! - `rollout`: a fleet of mota-sim devices (the real agent, patcher and mota-runtime
//!   validation on simulated flash, one MQTT connection each, spread over
//!   `MOTA_BENCH_FLEET_THREADS` threads of this process) registers, then a rollout walks 1 % / 10 % / 100 % cohorts to every device
//!   (a cohort passes once every member has finished, at most 10 % of them failed): a
//!   27 KB patch (see [`model_pair`]) and a 2 KB validation set each. Total time,
//!   per-cohort and per-device phases (from the reports' arrival times), CPU per process
//!   and thread, peak RSS. If the rollout has not ended after `MOTA_BENCH_TIMEOUT_S`, the
//!   tables show how far it got (BENCHMARKS.md records such a run: 10,000 devices on two
//!   cores, where the devices' one thread is saturated).
//!
//! The brokers: Mosquitto (a private instance, the tests' `common::cluster::Mosquitto`:
//! `max_connections -1`, `max_queued_messages 100000`, persistence in its own directory;
//! plus `MOTA_BENCH_INFLIGHT`) and the embedded rumqttd (as `mota-backend` starts it) for
//! `ingest`/`chunks`; Mosquitto only for `rollout` (10,000 device connections plus the
//! in-process broker's 10,000 sockets would pass this machine's 20,000 descriptor limit).
//! Database: PostgreSQL at `MOTA_BENCH_POSTGRES` (default
//! `postgres://postgres@127.0.0.1:55432/postgres`), a fresh database per backend.
//!
//! Knobs (environment): `MOTA_BENCH_DEVICES` (10000), `MOTA_BENCH_REPORTS` (20000),
//! `MOTA_BENCH_GETS` (20000), `MOTA_BENCH_WINDOW` (64), `MOTA_BENCH_BROKERS` (`mosquitto,rumqttd`),
//! `MOTA_BENCH_PARTS` (`ingest,rollout`), `MOTA_BENCH_ENGINE` (1; 0 stops the rollout
//! engine before the status reports of `ingest`, a what-if), `MOTA_BENCH_SET_RECORDS` (4),
//! `MOTA_BENCH_TIMEOUT_S` (900, the rollout's), `MOTA_BENCH_FLEET_THREADS` (2: one thread
//! saturated at 10,000 devices), `MOTA_BENCH_KEEP_ALIVE_S` (300, the devices' MQTT
//! keep-alive: a simulated device waits for its thread, a real one has its own core),
//! `MOTA_BENCH_STAGGER_US` (3000: the pause
//! between two devices' starts; all 10,000 at once made their connections thrash: each
//! device's boot and connect run on the one device thread, rumqttc's connection times
//! out, it reconnects under the same client id, and Mosquitto closes the older one),
//! `MOTA_BENCH_INFLIGHT` (100: Mosquitto's `max_inflight_messages`, as
//! `deploy/mosquitto/mosquitto.conf` ships it; the broker's default is 20), `MOSQUITTO`
//! (the binary).
//!
//! Run: `cargo bench -p mota-backend --bench rollout`. No timing is asserted.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[path = "../tests/common/mod.rs"]
mod common;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, header};
use common::BoxError;
use common::cluster::{Mosquitto, cpu_seconds, cpu_seconds_of, free_port, postgres_cpu, postgres_since};
use common::load::{device_hello, env_or, options, publisher, subscriber, update_reports};
use mota_backend::Config;
use mota_backend::server::{AppState, open, router};
use mota_backend::tokens::{self, Role};
use mota_proto::message::{Chunk, Get, Hello};
use mota_proto::{Digest, Wire};
use rumqttc::{Event, Packet, QoS};
use serde_json::{Value, json};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tower::ServiceExt;

const MANIFEST_DIR: &str = env!("CARGO_MANIFEST_DIR");
/// What the simulated devices ask for per `get`.
const CHUNK: u32 = 4096;
/// Status reports per device in `ingest`.
const REPORTS_PER_DEVICE: usize = 10;

type Res<T> = Result<T, BoxError>;

fn env_list(name: &str, default: &str) -> Vec<String> {
    std::env::var(name).unwrap_or_else(|_| default.into()).split(',').map(|s| s.trim().to_owned()).collect()
}

// ---------------------------------------------------------------------------------------
// The model pair and validation set.

/// The update: the base is `kws_dscnn/layer_added/new.tflite` of the delta pairs (a
/// DS-CNN, 53,352 B, the largest model in the repository that fits the simulated
/// devices' 128 KiB slot); the new version is the same graph with every int8 constant
/// (the weights, 26 KB) redrawn from a seeded generator, so the patch shares nothing but
/// the structure, quantization and int32 biases with the base: a retrain whose weights
/// all moved. Its patch is 26,933 B, the most a 53 KB model of this repository gives; a
/// ~50 KB patch needs a ~100 KB model the repository does not have.
fn model_pair() -> (Vec<u8>, Vec<u8>) {
    let base = std::fs::read(format!("{MANIFEST_DIR}/../agent/delta/bench/pairs/kws_dscnn/layer_added/new.tflite"))
        .expect("the delta pairs (agent/delta/bench/pairs)");
    let mut ranges = Vec::new();
    {
        let model = mota_runtime::Model::parse(&base).expect("the base model parses");
        let start = base.as_ptr() as usize;
        for i in 0..model.tensor_count() {
            let t = model.tensor(i).unwrap();
            if let (mota_runtime::DType::Int8, Some(data)) = (t.dtype, t.data) {
                let at = data.as_ptr() as usize - start;
                ranges.push(at..at + data.len());
            }
        }
    }
    let mut new = base.clone();
    let mut dice = 0x9e37_79b9_7f4a_7c15u64;
    for r in ranges {
        for b in &mut new[r] {
            *b = next(&mut dice) as u8;
        }
    }
    (base, new)
}

fn next(dice: &mut u64) -> u64 {
    *dice ^= *dice << 13;
    *dice ^= *dice >> 7;
    *dice ^= *dice << 17;
    *dice
}

/// `records` seeded random inputs labelled with the new model's own top-1 (so it scores
/// 1000 ‰ and a healthy device reproduces that; the base scores what it scores).
fn validation_set(new: &[u8], records: usize) -> Vec<u8> {
    let model = mota_runtime::Model::parse(new).unwrap();
    let input = model.input(0).unwrap();
    let output = model.output(0).unwrap();
    assert!(input.dtype == mota_runtime::DType::Int8 && output.dtype == mota_runtime::DType::Int8);
    let dims: Vec<usize> = input.shape.dims().to_vec();
    let (per, classes) = (input.bytes(), output.bytes());
    let mut arena = vec![0u8; mota_runtime::arena_size(&model).unwrap()];
    let mut interp = mota_runtime::Interpreter::new(model, &mut arena).unwrap();
    let mut dice = 0x1234_5678_9abc_def1u64;
    let inputs: Vec<u8> = (0..per * records).map(|_| next(&mut dice) as u8).collect();
    let mut labels = Vec::new();
    for x in inputs.chunks(per) {
        interp.input(0).unwrap().copy_from_slice(x);
        interp.invoke().unwrap();
        let out = interp.output(0).unwrap();
        let best = (0..out.len()).max_by_key(|&i| (out[i] as i8, std::cmp::Reverse(i))).unwrap();
        labels.push(best as u16);
    }
    // The set's dimensions are the model input's, batch included (`evaluate` compares them).
    mota_runtime::validation::build(mota_runtime::DType::Int8, &dims, &inputs, Some((&labels, classes as u32)), None)
        .unwrap()
}

// ---------------------------------------------------------------------------------------
// Brokers.

#[derive(Clone)]
enum Broker {
    /// A Mosquitto this bench started.
    Mosquitto { port: u16, pid: u32 },
    /// rumqttd in-process, started by `mota_backend::mqtt::start` on this port.
    Embedded { port: u16 },
}

impl Broker {
    fn name(&self) -> &'static str {
        match self {
            Self::Mosquitto { .. } => "Mosquitto 2.0.11",
            Self::Embedded { .. } => "rumqttd (embedded)",
        }
    }
    fn port(&self) -> u16 {
        match self {
            Self::Mosquitto { port, .. } | Self::Embedded { port } => *port,
        }
    }
}

/// The bench's Mosquitto (`tests/common/cluster.rs`) with the in-flight window of
/// `MOTA_BENCH_INFLIGHT`.
fn own_mosquitto() -> Res<Mosquitto> {
    let inflight: u32 = env_or("MOTA_BENCH_INFLIGHT", 100);
    Mosquitto::start_with(&format!("max_inflight_messages {inflight}\n"))
}

fn broker_of(m: &Mosquitto) -> Broker {
    Broker::Mosquitto { port: m.port, pid: m.pid().unwrap_or(0) }
}

// ---------------------------------------------------------------------------------------
// The backend as `mota-backend` runs it: state, router, MQTT side, rollout engine.

struct Backend {
    state: AppState,
    router: Router,
    operator: String,
    mqtt: Option<mota_backend::mqtt::Mqtt>,
    engine: JoinHandle<()>,
    database: String,
    _dir: tempfile::TempDir,
}

async fn fresh_postgres(server: &str) -> Res<(String, String)> {
    use sqlx::Connection;
    let mut conn = sqlx::PgConnection::connect(server).await?;
    let mut name = [0u8; 6];
    getrandom::fill(&mut name).map_err(|e| e.to_string())?;
    let name = format!("mota_bench_{}", mota_backend::blobs::hex(&name));
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}"))).execute(&mut conn).await?;
    let (base, _) = server.rsplit_once('/').ok_or("MOTA_BENCH_POSTGRES has no database part")?;
    Ok((format!("{base}/{name}"), name))
}

impl Backend {
    async fn start(broker: &Broker, tag: &str) -> Res<Self> {
        let server = std::env::var("MOTA_BENCH_POSTGRES")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:55432/postgres".into());
        let dir = tempfile::tempdir()?;
        let mut config = Config::embedded(dir.path().join("data"));
        std::fs::create_dir_all(&config.data_dir)?;
        let (url, database) = fresh_postgres(&server).await?;
        config.database_url = Some(url);
        config.no_mqtt = false;
        config.mqtt_client_id = format!("mota-backend-bench-{tag}-{}", std::process::id());
        config.mqtt_share_group = format!("mota-bench-{tag}-{}", std::process::id());
        match broker {
            Broker::Mosquitto { port, .. } => config.mqtt_url = Some(format!("mqtt://127.0.0.1:{port}")),
            Broker::Embedded { port } => config.mqtt_listen = format!("127.0.0.1:{port}").parse()?,
        }
        let state = open(&config).await?;
        let operator = tokens::create(&state.db, "bench", Role::Operator, 0).await?;
        let router = router(state.clone(), config.max_body_bytes);
        let mqtt = mota_backend::mqtt::start(&config, &state).await?;
        let engine = tokio::spawn(mota_backend::rollout::engine::Engine::new(&state, &mqtt).run());
        // Wait until the backend's subscriptions are in place (a probe on its hello topic
        // would be stored; a plain wait is enough on loopback).
        tokio::time::sleep(Duration::from_millis(500)).await;
        Ok(Self { state, router, operator, mqtt: Some(mqtt), engine, database, _dir: dir })
    }

    async fn stop(mut self) {
        self.engine.abort();
        if let Some(mqtt) = self.mqtt.take() {
            mqtt.stop().await;
        }
    }

    fn data_dir(&self) -> PathBuf {
        self._dir.path().join("data")
    }

    async fn send(&self, method: &str, uri: &str, content_type: &str, body: Vec<u8>) -> Res<(u16, Value)> {
        let request = Request::builder()
            .method(method)
            .uri(uri)
            .header(header::AUTHORIZATION, format!("Bearer {}", self.operator))
            .header(header::CONTENT_TYPE, content_type)
            .body(Body::from(body))?;
        let response = self.router.clone().oneshot(request).await?;
        let status = response.status().as_u16();
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX).await?;
        Ok((status, serde_json::from_slice(&bytes).unwrap_or(Value::Null)))
    }

    /// Uploads the set, the base as 1.0.0 and the new model as 1.1.0 (class `mcu`) and
    /// computes the deltas. Returns (patch digest, patch size, set digest, set size).
    async fn upload(&self, base: &[u8], new: &[u8], set: &[u8]) -> Res<Artifacts> {
        let (s, v) =
            self.send("POST", "/v1/validation-sets?name=bench", "application/octet-stream", set.to_vec()).await?;
        assert_eq!(s, 201, "{v}");
        let set_sha = v["sha256"].as_str().ok_or("no set digest")?.to_owned();
        for (version, bytes) in [("1.0.0", base), ("1.1.0", new)] {
            let uri = format!("/v1/models/kws/versions?version={version}&device_class=mcu&validation_set={set_sha}");
            let (s, v) = self.send("POST", &uri, "application/octet-stream", bytes.to_vec()).await?;
            assert_eq!(s, 201, "{version}: {v}");
        }
        self.state.registry.run_delta_jobs().await?;
        let (patch_sha, patch_size): (String, i64) = sqlx::query_as(
            "SELECT d.patch_sha256, a.size FROM deltas d JOIN model_versions v ON v.id = d.version_id \
             JOIN artifacts a ON a.sha256 = d.patch_sha256 WHERE v.version = '1.1.0'",
        )
        .fetch_one(&self.state.db.pool)
        .await?;
        Ok(Artifacts {
            patch: patch_sha.parse().map_err(|_| "patch digest")?,
            patch_size: patch_size as u32,
            set_size: set.len() as u32,
        })
    }

    async fn count(&self, sql: &str) -> Res<i64> {
        Ok(sqlx::query_scalar(sqlx::AssertSqlSafe(sql.to_owned())).fetch_one(&self.state.db.pool).await?)
    }

    /// Creates a rollout of kws 1.1.0 to every `mcu` device; its id.
    async fn rollout(&self, cohorts: Value) -> Res<i64> {
        let body = json!({
            "model": "kws", "version": "1.1.0", "selector": { "class": "mcu" },
            "plan": { "cohorts": cohorts },
            "gates": { "max_failure_permille": 100, "stuck_timeout_s": 3600 },
        });
        let (s, v) = self.send("POST", "/v1/rollouts", "application/json", body.to_string().into_bytes()).await?;
        assert_eq!(s, 201, "{v}");
        Ok(v["id"].as_i64().ok_or("no rollout id")?)
    }
}

#[derive(Clone, Copy)]
struct Artifacts {
    patch: Digest,
    patch_size: u32,
    set_size: u32,
}

// ---------------------------------------------------------------------------------------
// Load clients.

/// Answers every `get` on `motb/v1/dev/+/get` with `chunk` on the device's chunk topic.
fn echo(port: u16, chunk: Arc<Vec<u8>>, capacity: usize) -> (oneshot::Receiver<()>, JoinHandle<()>) {
    let (client, mut events) = options("bench-echo", port, capacity + 64);
    let (ready, subscribed) = oneshot::channel();
    let task = tokio::spawn(async move {
        let mut ready = Some(ready);
        loop {
            match events.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    client.try_subscribe("$share/bench-echo/motb/v1/dev/+/get", QoS::AtLeastOnce).unwrap()
                }
                Ok(Event::Incoming(Packet::SubAck(_))) => {
                    if let Some(r) = ready.take() {
                        let _ = r.send(());
                    }
                }
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    let device = p.topic.split('/').nth(3).unwrap_or("x");
                    let topic = format!("motb/v1/dev/{device}/chunk");
                    client.try_publish(topic, QoS::AtLeastOnce, false, chunk.as_ref().clone()).unwrap();
                }
                Ok(_) => {}
                Err(_) => return,
            }
        }
    });
    (subscribed, task)
}

/// Sends `gets` (topic, payload) keeping `window` requests outstanding: the next goes out
/// when a chunk comes back on `filter`, as devices pull one chunk at a time. Resolves
/// to (first get, last chunk, Σ data bytes, refusals).
fn requester(
    id: &str,
    port: u16,
    filter: &str,
    gets: Vec<(String, Vec<u8>)>,
    window: usize,
) -> JoinHandle<(Instant, Instant, u64, usize)> {
    let n = gets.len();
    let (client, mut events) = options(id, port, n + 64);
    let filter = filter.to_owned();
    tokio::spawn(async move {
        let mut start = None;
        let mut sent = 0usize;
        let (mut got, mut bytes, mut refused) = (0usize, 0u64, 0usize);
        loop {
            match events.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    client.try_subscribe(filter.clone(), QoS::AtLeastOnce).unwrap()
                }
                Ok(Event::Incoming(Packet::SubAck(_))) if start.is_none() => {
                    start = Some(Instant::now());
                    while sent < window.min(n) {
                        let (t, p) = &gets[sent];
                        client.try_publish(t.clone(), QoS::AtLeastOnce, false, p.clone()).unwrap();
                        sent += 1;
                    }
                }
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    got += 1;
                    match chunk_data(&p.payload) {
                        Some(b) => bytes += b,
                        None => refused += 1,
                    }
                    if got == n {
                        let _ = client.try_disconnect();
                        return (start.unwrap(), Instant::now(), bytes, refused);
                    }
                    if sent < n {
                        let (t, p) = &gets[sent];
                        client.try_publish(t.clone(), QoS::AtLeastOnce, false, p.clone()).unwrap();
                        sent += 1;
                    }
                }
                Ok(_) => {}
                Err(e) => panic!("requester {filter}: {e}"),
            }
        }
    })
}

fn status_len(payload: &[u8]) -> Option<u64> {
    Some(payload.len() as u64)
}

fn chunk_data(payload: &[u8]) -> Option<u64> {
    match Chunk::parse(payload) {
        Ok(c) => c.data.map(|d| d.len() as u64),
        Err(_) => None,
    }
}

// ---------------------------------------------------------------------------------------
// CPU and memory, from /proc (clock ticks of 10 ms: USER_HZ is 100 on Linux/x86-64).

/// CPU seconds of this process' threads by name (`fleet-N`: the simulated devices).
fn own_threads() -> BTreeMap<String, f64> {
    let me = std::process::id();
    let mut out = BTreeMap::new();
    for e in std::fs::read_dir("/proc/self/task").into_iter().flatten().flatten() {
        let Ok(tid) = e.file_name().to_string_lossy().parse::<u32>() else { continue };
        let name = if tid == me {
            "main".to_owned()
        } else {
            std::fs::read_to_string(e.path().join("comm")).unwrap_or_default().trim().to_owned()
        };
        *out.entry(name).or_insert(0.0) += cpu_seconds_of(me, tid);
    }
    out
}

/// CPU seconds of every `postgres` process alive now (its server and connections).
fn kib(pid: &str, field: &str) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    s.lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

struct Cpu {
    wall: Instant,
    threads: BTreeMap<String, f64>,
    broker: f64,
    postgres: HashMap<u32, f64>,
}

impl Cpu {
    fn now(broker: &Broker) -> Self {
        let broker_cpu = match broker {
            Broker::Mosquitto { pid, .. } => cpu_seconds(*pid),
            Broker::Embedded { .. } => 0.0,
        };
        Self { wall: Instant::now(), threads: own_threads(), broker: broker_cpu, postgres: postgres_cpu() }
    }

    /// Rows "where the CPU went" since `self`.
    fn since(&self, broker: &Broker) -> Vec<(String, f64)> {
        let now = Self::now(broker);
        let mut rows = Vec::new();
        for (name, t) in &now.threads {
            let d = t - self.threads.get(name).copied().unwrap_or(0.0);
            if d >= 0.05 {
                rows.push((format!("threads \"{name}\""), d));
            }
        }
        if let Broker::Mosquitto { .. } = broker {
            rows.push(("mosquitto".into(), now.broker - self.broker));
        }
        rows.push(("postgres (server and connections)".into(), postgres_since(&self.postgres)));
        rows.push(("wall".into(), self.wall.elapsed().as_secs_f64()));
        rows
    }
}

// ---------------------------------------------------------------------------------------
// ingest + chunks.

struct IngestResult {
    broker: String,
    devices: usize,
    offer_s: f64,
    reports: usize,
    report_bytes: usize,
    anchor_s: f64,
    backend_s: f64,
    backend_pub_s: f64,
    committed: i64,
    gets: usize,
    chunk_bytes: u64,
    one_way_s: f64,
    echo_s: f64,
    chunks_s: f64,
    served: u64,
    refused: usize,
    chunk_msg: usize,
    window: usize,
    engine_on: bool,
    ack_warnings: u64,
    cpu_ingest: Vec<(String, f64)>,
    cpu_chunks: Vec<(String, f64)>,
}

async fn wait_count(backend: &Backend, sql: &str, want: i64, timeout: Duration) -> Res<(Instant, i64)> {
    let start = Instant::now();
    loop {
        let n = backend.count(sql).await?;
        if n >= want || start.elapsed() > timeout {
            return Ok((Instant::now(), n));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// When the writers have committed `want` reports, by the backend's own counter
/// (`mota_status_reports_total`, counted after each commit): polling the database
/// instead cost it 8 % of its CPU during the measurement. The rows are counted after.
async fn wait_stored(backend: &Backend, want: u64, timeout: Duration) -> Instant {
    let start = Instant::now();
    loop {
        let text = backend.state.metrics.render();
        let stored: u64 = text
            .lines()
            .filter(|l| l.starts_with("mota_status_reports_total{") && !l.contains("failed"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .map(|v| v as u64)
            .sum();
        if stored >= want || start.elapsed() > timeout {
            return Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn ingest_and_chunks(broker: Broker, pair: &(Vec<u8>, Vec<u8>), set: &[u8]) -> Res<IngestResult> {
    let n_reports: usize = env_or("MOTA_BENCH_REPORTS", 20_000);
    let n_gets: usize = env_or("MOTA_BENCH_GETS", 20_000);
    let window: usize = env_or("MOTA_BENCH_WINDOW", 64);
    let devices = n_reports.div_ceil(REPORTS_PER_DEVICE);
    let port = broker.port();
    let tag = if matches!(broker, Broker::Embedded { .. }) { "rumqttd" } else { "mosq" };
    let backend = Backend::start(&broker, tag).await?;
    let artifacts = backend.upload(&pair.0, &pair.1, set).await?;
    let base = Digest::of(&pair.0);
    let ids: Vec<String> = (0..devices).map(|i| format!("ing-{tag}-{i:05}")).collect();
    let hello = device_hello(base, CHUNK)?;
    for id in &ids {
        let parsed = Hello::parse(&hello).unwrap();
        mota_backend::mqtt::registry::hello(
            &backend.state.db,
            id,
            &parsed,
            mota_backend::mqtt::registry::Registration::Auto,
        )
        .await?;
    }
    // The engine offers the patch to every device: the device_offers rows the chunk
    // service checks and an `offered` attempt each reports move.
    let t = Instant::now();
    let id = backend.rollout(json!([{ "percent": 100 }])).await?;
    let (_, offered) = wait_count(
        &backend,
        "SELECT COUNT(*) FROM attempts WHERE state = 'offered'",
        devices as i64,
        Duration::from_secs(300),
    )
    .await?;
    let offer_s = t.elapsed().as_secs_f64();
    assert_eq!(offered, devices as i64, "the engine offered every device");
    let manifest: String = sqlx::query_scalar("SELECT manifest_sha256 FROM device_offers LIMIT 1")
        .fetch_one(&backend.state.db.pool)
        .await?;
    let manifest: Digest = manifest.parse().map_err(|_| "manifest digest")?;
    // (2) chunks first (a burst of status reports can leave the backend deaf: see
    // BENCHMARKS.md): the gets every device would send for the patch, 4 KiB each.
    let whole = artifacts.patch_size / CHUNK; // full chunks only
    let get = |i: usize| {
        Get { artifact: artifacts.patch, offset: (i as u32 % whole) * CHUNK, length: CHUNK }.to_vec().unwrap()
    };
    let mut gets_a = Vec::with_capacity(n_gets);
    let mut gets_b = Vec::with_capacity(n_gets);
    for i in 0..n_gets {
        let d = &ids[i % devices];
        gets_a.push((format!("mota/v1/dev/{d}/get"), get(i / devices)));
        gets_b.push((format!("motb/v1/dev/{d}/get"), get(i / devices)));
    }
    let patch_bytes: Vec<u8> = (0..CHUNK as usize).map(|i| i as u8).collect();
    let canned = Chunk::data(artifacts.patch, 0, &patch_bytes).to_vec().unwrap();
    let chunk_msg = canned.len();
    // (a) one way.
    eprintln!("  anchor: chunks one way");
    let (ready, sub) = subscriber("bench-anchor-chunk", port, "motb/v1/dev/+/chunk", n_gets, chunk_data);
    ready.await?;
    let one: Vec<(String, Vec<u8>)> =
        (0..n_gets).map(|i| (format!("motb/v1/dev/{}/chunk", ids[i % devices]), canned.clone())).collect();
    let (start, _) = publisher("bench-load-c", port, Arc::new(one)).await??;
    let (last, _, _) = sub.await??;
    let one_way_s = (last - start).as_secs_f64();
    tokio::time::sleep(Duration::from_millis(500)).await;
    // (b) round trip through an echo client.
    eprintln!("  anchor: chunks echo");
    let (ready_echo, echo_task) = echo(port, Arc::new(canned.clone()), n_gets);
    ready_echo.await?;
    let (start, last, _, _) = requester("bench-load-d", port, "motb/v1/dev/+/chunk", gets_b, window).await?;
    let echo_s = (last - start).as_secs_f64();
    echo_task.abort();
    tokio::time::sleep(Duration::from_millis(500)).await;
    // The backend.
    let cpu = Cpu::now(&broker);
    eprintln!("  backend: chunks");
    let load = requester("bench-load-e", port, "mota/v1/dev/+/chunk", gets_a, window);
    let (start, last, served, refused) = tokio::time::timeout(Duration::from_secs(300), load)
        .await
        .map_err(|_| format!("no answer to all {n_gets} gets within 300 s ({window} outstanding)"))??;
    let chunks_s = (last - start).as_secs_f64();
    let cpu_chunks = cpu.since(&broker);
    let chunk_bytes = u64::from(CHUNK) * n_gets as u64;
    tokio::time::sleep(Duration::from_millis(1000)).await;

    let per_device = update_reports(id as u64, manifest, pair.1.len() as u32)?;
    // Interleaved by device, as a fleet's reports arrive.
    let mut mota = Vec::with_capacity(devices * REPORTS_PER_DEVICE);
    let mut motb = Vec::with_capacity(devices * REPORTS_PER_DEVICE);
    for payload in &per_device {
        for d in &ids {
            mota.push((format!("mota/v1/dev/{d}/status"), payload.clone()));
            motb.push((format!("motb/v1/dev/{d}/status"), payload.clone()));
        }
    }
    let reports_n = mota.len();
    // `MOTA_BENCH_ENGINE=0`: the engine stops before the reports (a what-if: its steps,
    // woken by every moved attempt, share the database with the ingest).
    let engine_on = env_or("MOTA_BENCH_ENGINE", 1u8) == 1;
    if !engine_on {
        backend.engine.abort();
    }
    let report_bytes = mota.iter().map(|(_, p)| p.len()).sum::<usize>();

    // (1) anchor: the broker alone.
    eprintln!("  offered {devices} devices in {offer_s:.2} s; anchor: status reports");
    let (ready, sub) =
        subscriber("bench-anchor-status", port, "$share/bench-anchor/motb/v1/dev/+/status", reports_n, status_len);
    ready.await?;
    let (start, _) = publisher("bench-load-a", port, Arc::new(motb)).await??;
    let (last, _, _) = sub.await??;
    let anchor_s = (last - start).as_secs_f64();
    tokio::time::sleep(Duration::from_millis(500)).await;

    // (1) the backend: every report stored in PostgreSQL.
    eprintln!("  backend: status reports");
    let cpu = Cpu::now(&broker);
    ACK_WARNINGS.store(0, std::sync::atomic::Ordering::SeqCst);
    let load = publisher("bench-load-b", port, Arc::new(mota));
    let end = wait_stored(&backend, reports_n as u64, Duration::from_secs(600)).await;
    let (start, acked) = load.await??;
    let cpu_ingest = cpu.since(&broker);
    let stored = backend.count("SELECT COUNT(*) FROM device_reports").await?;
    let ack_warnings = ACK_WARNINGS.swap(0, std::sync::atomic::Ordering::SeqCst);
    assert_eq!(stored, reports_n as i64, "every report stored");
    let backend_s = (end - start).as_secs_f64();
    let backend_pub_s = (acked - start).as_secs_f64();
    let committed = backend.count("SELECT COUNT(*) FROM attempts WHERE state = 'committed'").await?;
    tokio::time::sleep(Duration::from_millis(1500)).await;

    eprintln!("[{}] database {}", broker.name(), backend.database);
    backend.stop().await;
    Ok(IngestResult {
        broker: broker.name().into(),
        devices,
        offer_s,
        reports: reports_n,
        report_bytes,
        anchor_s,
        backend_s,
        backend_pub_s,
        committed,
        gets: n_gets,
        chunk_bytes,
        one_way_s,
        echo_s,
        chunks_s,
        served,
        refused,
        chunk_msg,
        window,
        engine_on,
        ack_warnings,
        cpu_ingest,
        cpu_chunks,
    })
}

// ---------------------------------------------------------------------------------------
// The simulated rollout.

fn dev_root(data_dir: &Path) -> [u8; 32] {
    let pem = std::fs::read_to_string(data_dir.join("keys/dev-root.pub.pem")).unwrap();
    match mota_proto::keys::KeyFile::from_pem(&pem) {
        Ok(mota_proto::keys::KeyFile::Public(root)) => root.to_bytes(),
        _ => panic!("dev-root.pub.pem is not a public key"),
    }
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// A cohort: position, size, started, ready (gates first held), finished, state.
type CohortRow = (i32, i64, Option<i64>, Option<i64>, Option<i64>, String);
/// A device's attempt: cohort position, offered at, arrival of its accepted, verified,
/// validated and committed reports (ms), reports stored.
type DeviceRow = (i32, Option<i64>, Option<i64>, Option<i64>, Option<i64>, Option<i64>, i64);

async fn simulated_rollout(pair: &(Vec<u8>, Vec<u8>), set: &[u8]) -> Res<()> {
    let count: usize = env_or("MOTA_BENCH_DEVICES", 10_000);
    let timeout: u64 = env_or("MOTA_BENCH_TIMEOUT_S", 900);
    let mosquitto = own_mosquitto()?;
    let broker = broker_of(&mosquitto);
    let backend = Backend::start(&broker, "fleet").await?;
    ACK_WARNINGS.store(0, std::sync::atomic::Ordering::SeqCst);
    let artifacts = backend.upload(&pair.0, &pair.1, set).await?;
    let rss_before = kib("self", "VmRSS");

    // The fleet connects; every device says hello (registered by the backend).
    let t = Instant::now();
    let cpu_reg = Cpu::now(&broker);
    let options = mota_sim::FleetOptions {
        count,
        prefix: "dev-".into(),
        data_dir: None,
        stagger: Duration::from_micros(env_or("MOTA_BENCH_STAGGER_US", 3000)),
        device: mota_sim::DeviceOptions {
            id: String::new(),
            host: "127.0.0.1".into(),
            port: broker.port(),
            password: None,
            class: "mcu".into(),
            roots: vec![dev_root(&backend.data_dir())],
            factory: Arc::from(pair.0.as_slice()),
            factory_counter: 1,
            flash_file: None,
            faults: Default::default(),
            seed: 11,
            keep_alive: Duration::from_secs(env_or("MOTA_BENCH_KEEP_ALIVE_S", 300)),
        },
    };
    let threads = env_or("MOTA_BENCH_FLEET_THREADS", 2usize);
    let fleet = tokio::task::spawn_blocking(move || mota_sim::ThreadedFleet::spawn(options, threads)).await??;
    let (_, registered) = wait_count(
        &backend,
        "SELECT COUNT(*) FROM devices WHERE agent_version IS NOT NULL",
        count as i64,
        Duration::from_secs(600),
    )
    .await?;
    let register_s = t.elapsed().as_secs_f64();
    let cpu_register = cpu_reg.since(&broker);
    let rss_fleet = kib("self", "VmRSS");
    eprintln!("fleet: {registered}/{count} registered in {register_s:.1} s; RSS {} MiB", rss_fleet / 1024);

    // The rollout: 1 % / 10 % / 100 %; a cohort passes once every member has finished.
    let cpu = Cpu::now(&broker);
    let t = Instant::now();
    let id = backend.rollout(json!([{ "percent": 1 }, { "percent": 10 }, { "percent": 100 }])).await?;
    let mut last_print = Instant::now();
    let state = loop {
        let state: String = sqlx::query_scalar("SELECT state FROM rollouts WHERE id = $1")
            .bind(id)
            .fetch_one(&backend.state.db.pool)
            .await?;
        if state != "running" || t.elapsed() > Duration::from_secs(timeout) {
            break state;
        }
        if last_print.elapsed() > Duration::from_secs(15) {
            let rows: Vec<(String, i64)> = sqlx::query_as(
                "SELECT state, COUNT(*) FROM attempts WHERE rollout_id = $1 GROUP BY state ORDER BY state",
            )
            .bind(id)
            .fetch_all(&backend.state.db.pool)
            .await?;
            eprintln!("{:>5.0} s: {rows:?}", t.elapsed().as_secs_f64());
            last_print = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let total_s = t.elapsed().as_secs_f64();
    let cpu_rollout = cpu.since(&broker);
    let states: Vec<(String, i64)> =
        sqlx::query_as("SELECT state, COUNT(*) FROM attempts WHERE rollout_id = $1 GROUP BY state ORDER BY state")
            .bind(id)
            .fetch_all(&backend.state.db.pool)
            .await?;
    let delta_offers =
        backend.count(&format!("SELECT COUNT(*) FROM attempts WHERE rollout_id = {id} AND delta = 1")).await?;
    let reports = backend.count("SELECT COUNT(*) FROM device_reports").await?;
    let running_new = fleet.statuses().await.iter().filter(|(_, s)| s.running == Some(Digest::of(&pair.1))).count();
    let created_at: i64 = sqlx::query_scalar("SELECT created_at FROM rollouts WHERE id = $1")
        .bind(id)
        .fetch_one(&backend.state.db.pool)
        .await?;
    let cohorts: Vec<CohortRow> = sqlx::query_as(
        "SELECT position, size, started_at, ready_at, finished_at, state FROM cohorts WHERE rollout_id = $1 ORDER BY position",
    )
    .bind(id)
    .fetch_all(&backend.state.db.pool)
    .await?;
    let per_device: Vec<DeviceRow> = sqlx::query_as(
        "SELECT c.position, a.offered_at, \
         MIN(CASE WHEN r.event = 0 THEN r.received_at END), MIN(CASE WHEN r.event = 2 THEN r.received_at END), \
         MIN(CASE WHEN r.event = 3 THEN r.received_at END), MIN(CASE WHEN r.event = 4 THEN r.received_at END), \
         COUNT(r.seq) \
         FROM attempts a JOIN cohorts c ON c.id = a.cohort_id \
         LEFT JOIN device_reports r ON r.device_id = a.device_id AND r.rollout_id = a.rollout_id \
         WHERE a.rollout_id = $1 GROUP BY a.device_id, c.position, a.offered_at",
    )
    .bind(id)
    .fetch_all(&backend.state.db.pool)
    .await?;
    let rss_peak = kib("self", "VmHWM");
    let ack_warnings = ACK_WARNINGS.swap(0, std::sync::atomic::Ordering::SeqCst);
    let mosq_peak = kib(&mosquitto.pid().unwrap_or(0).to_string(), "VmHWM");

    println!("\n## rollout: {count} simulated devices (mota-sim), Mosquitto 2.0.11, PostgreSQL\n");
    println!(
        "model: base {} B (factory in every device, uploaded as 1.0.0), new {} B (1.1.0); patch {} B; \
         validation set {} B ({} records); chunk {} B",
        pair.0.len(),
        pair.1.len(),
        artifacts.patch_size,
        artifacts.set_size,
        env_or("MOTA_BENCH_SET_RECORDS", 4usize),
        CHUNK
    );
    println!(
        "fleet connect + register: {registered}/{count} devices in {register_s:.1} s (starts staggered by {} µs)",
        env_or("MOTA_BENCH_STAGGER_US", 3000u64)
    );
    println!(
        "backend \"MQTT ack\" warnings (acknowledgements dropped) during registration and rollout: {ack_warnings}"
    );
    println!(
        "rollout: state {state} after {total_s:.1} s; attempts {states:?}; {delta_offers} offered as a patch; \
         {reports} reports stored; {running_new}/{count} simulated devices run the new model"
    );
    println!(
        "RSS: before the fleet {} MiB, fleet registered {} MiB, peak (VmHWM) {} MiB (backend + devices + load in one \
         process); mosquitto peak {} MiB",
        rss_before / 1024,
        rss_fleet / 1024,
        rss_peak / 1024,
        mosq_peak / 1024
    );
    println!(
        "\n| cohort | size | started (s after create) | all committed (s) | cohort time (s) | offers published over (s) |"
    );
    println!("|---|---:|---:|---:|---:|---:|");
    for (position, size, started, ready, finished, cstate) in &cohorts {
        let rel = |t: Option<i64>| t.map_or(f64::NAN, |t| (t - created_at) as f64 / 1000.0);
        let offered: Vec<i64> = per_device.iter().filter(|d| d.0 == *position).filter_map(|d| d.1).collect();
        let span = match (offered.iter().min(), offered.iter().max()) {
            (Some(a), Some(b)) => (b - a) as f64 / 1000.0,
            _ => f64::NAN,
        };
        let end = ready.or(*finished);
        println!(
            "| {position} ({cstate}) | {size} | {:.1} | {:.1} | {:.1} | {span:.1} |",
            rel(*started),
            rel(end),
            rel(end) - rel(*started),
        );
    }
    println!(
        "\nPer device (arrival times of its reports at the backend), seconds: median / p90 / max\n\n\
         | cohort | offer → accepted | accepted → verified (patch download, rebuild, SHA-256) | verified → committed (set download, 2 × validation, commit) | offer → committed | reports per device |"
    );
    println!("|---|---|---|---|---|---:|");
    for (position, ..) in &cohorts {
        let rows: Vec<_> = per_device.iter().filter(|d| d.0 == *position).collect();
        let phase = |f: &dyn Fn(&&DeviceRow) -> Option<f64>| {
            let mut v: Vec<f64> = rows.iter().filter_map(f).collect();
            v.sort_by(f64::total_cmp);
            format!("{:.2} / {:.2} / {:.2}", pct(&v, 0.5), pct(&v, 0.9), pct(&v, 1.0))
        };
        let d = |a: Option<i64>, b: Option<i64>| Some((b? - a?) as f64 / 1000.0);
        let n_reports: i64 = rows.iter().map(|r| r.6).sum();
        println!(
            "| {position} | {} | {} | {} | {} | {:.1} |",
            phase(&|r| d(r.1, r.2)),
            phase(&|r| d(r.2, r.3)),
            phase(&|r| d(r.3, r.5)),
            phase(&|r| d(r.1, r.5)),
            n_reports as f64 / rows.len().max(1) as f64
        );
    }
    println!("\nCPU seconds during fleet registration ({register_s:.1} s wall):");
    for (k, v) in &cpu_register {
        println!("- {k}: {v:.1}");
    }
    println!("\nCPU seconds during the rollout ({total_s:.1} s wall):");
    for (k, v) in &cpu_rollout {
        println!("- {k}: {v:.1}");
    }
    eprintln!("database {}", backend.database);
    backend.stop().await;
    drop(fleet);
    Ok(())
}

// ---------------------------------------------------------------------------------------

fn print_cpu(rows: &[(String, f64)]) -> String {
    rows.iter().map(|(k, v)| format!("{k} {v:.1}")).collect::<Vec<_>>().join("; ")
}

async fn run() -> Res<()> {
    let parts = env_list("MOTA_BENCH_PARTS", "ingest,rollout");
    let brokers = env_list("MOTA_BENCH_BROKERS", "mosquitto,rumqttd");
    let pair = model_pair();
    let set = validation_set(&pair.1, env_or("MOTA_BENCH_SET_RECORDS", 4));
    eprintln!("models: base {} B, new {} B; set {} B", pair.0.len(), pair.1.len(), set.len());
    if parts.iter().any(|p| p == "ingest") {
        let mut results = Vec::new();
        for b in &brokers {
            let (own, broker) = match b.as_str() {
                "mosquitto" => {
                    let m = own_mosquitto()?;
                    let broker = broker_of(&m);
                    (Some(m), broker)
                }
                "rumqttd" => (None, Broker::Embedded { port: free_port()? }),
                other => return Err(format!("unknown broker {other}").into()),
            };
            eprintln!("ingest + chunks on {}", broker.name());
            results.push(ingest_and_chunks(broker, &pair, &set).await?);
            drop(own);
        }
        println!("\n## Status reports ingested (PostgreSQL) vs the broker alone\n");
        println!(
            "| broker | reports (devices) | mean payload B | anchor: broker → subscriber | backend: stored in device_reports | ratio | load client's PUBACKs done after |"
        );
        println!("|---|---:|---:|---:|---:|---:|---:|");
        for r in &results {
            let (a, b) = (r.reports as f64 / r.anchor_s, r.reports as f64 / r.backend_s);
            println!(
                "| {} | {} ({}) | {:.0} | {:.0}/s ({:.2} s) | **{:.0}/s** ({:.2} s) | {:.3} | {:.2} s |",
                r.broker,
                r.reports,
                r.devices,
                r.report_bytes as f64 / r.reports as f64,
                a,
                r.anchor_s,
                b,
                r.backend_s,
                b / a,
                r.backend_pub_s
            );
        }
        println!("\n## Chunks served vs the broker alone (4,096 B of data per chunk)\n");
        println!(
            "| broker | gets (outstanding) | chunk message B | anchor (a) one way, all at once | anchor (b) echo client, same window | backend | ratio to (a) | ratio to (b) |"
        );
        println!("|---|---:|---:|---:|---:|---:|---:|---:|");
        for r in &results {
            let mib = |s: f64| r.chunk_bytes as f64 / s / (1024.0 * 1024.0);
            let got = r.served as f64 / r.chunks_s / (1024.0 * 1024.0);
            println!(
                "| {} | {} ({}) | {} | {:.1} MiB/s ({:.2} s) | {:.1} MiB/s ({:.2} s) | **{:.1} MiB/s** ({:.2} s, {:.0} chunks/s) | {:.3} | {:.3} |",
                r.broker,
                r.gets,
                r.window,
                r.chunk_msg,
                mib(r.one_way_s),
                r.one_way_s,
                mib(r.echo_s),
                r.echo_s,
                got,
                r.chunks_s,
                r.gets as f64 / r.chunks_s,
                got / mib(r.one_way_s),
                got / mib(r.echo_s)
            );
        }
        for r in &results {
            println!(
                "\n[{}] engine offered {} devices in {:.2} s ({:.0} offers/s); {} attempts committed after ingest; \
                 {} chunk refusals; {} \"MQTT ack\" warnings during ingest (acknowledgements dropped)",
                r.broker,
                r.devices,
                r.offer_s,
                r.devices as f64 / r.offer_s,
                r.committed,
                r.refused,
                r.ack_warnings
            );
            println!(
                "[{}] CPU s during ingest (rollout engine {}): {}",
                r.broker,
                if r.engine_on { "running" } else { "stopped" },
                print_cpu(&r.cpu_ingest)
            );
            println!("[{}] CPU s during chunks: {}", r.broker, print_cpu(&r.cpu_chunks));
        }
    }
    if parts.iter().any(|p| p == "rollout") {
        simulated_rollout(&pair, &set).await?;
    }
    Ok(())
}

/// Backend warnings "MQTT ack: ..." (an acknowledgement the client could not queue).
static ACK_WARNINGS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// The log: counts the ack warnings; prints everything with `MOTA_BENCH_LOG`, else errors.
struct Log;

impl std::io::Write for Log {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let line = String::from_utf8_lossy(buf);
        if line.contains("MQTT ack") {
            ACK_WARNINGS.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
        if std::env::var_os("MOTA_BENCH_LOG").is_some() || line.contains("ERROR") {
            std::io::stderr().write_all(buf)?;
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn main() {
    tracing_subscriber::fmt().with_max_level(tracing::Level::WARN).with_ansi(false).with_writer(|| Log).init();
    let cpu_model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("model name")).map(|l| l.split(':').nth(1).unwrap_or("").trim().to_owned())
        })
        .unwrap_or_default();
    println!(
        "machine: {} × {cpu_model}, {} GiB; open files limit {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        mem_gib(),
        std::fs::read_to_string("/proc/self/limits")
            .ok()
            .and_then(|s| s.lines().find(|l| l.starts_with("Max open files")).map(|l| l
                .split_whitespace()
                .nth(3)
                .unwrap_or("")
                .to_owned()))
            .unwrap_or_default()
    );
    // As the binary runs: a multi-threaded runtime (the simulated fleet runs on threads of its own).
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    let local = tokio::task::LocalSet::new();
    if let Err(e) = runtime.block_on(local.run_until(run())) {
        eprintln!("rollout bench failed: {e}");
        std::process::exit(1);
    }
    // Devices and the embedded broker have no stop: leave without waiting for them.
    std::process::exit(0);
}

fn mem_gib() -> u64 {
    let s = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    s.lines()
        .find(|l| l.starts_with("MemTotal"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse::<u64>().ok())
        .map_or(0, |k| (k + 512 * 1024) / (1024 * 1024))
}
