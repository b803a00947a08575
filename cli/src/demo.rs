//! `mota demo`: the whole product on one machine, offline, in one command.
//!
//! It runs the real parts, not a recording: the backend in this process on its embedded
//! defaults (a temporary SQLite file, local blobs, the in-process broker), a fleet of
//! mota-sim devices (the real agent, delta decoder and runtime on simulated flash, each
//! with its own MQTT connection) on a thread of their own, and this CLI's own commands
//! against the API. The models are the runtime's digits fixtures, built into the binary
//! so the demo needs no checkout. What it prints at the end is read back from the
//! backend, so a regression anywhere shows up as a demo that says so and exits non-zero.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use indicatif::{ProgressBar, ProgressStyle};
use mota_backend::config::Config;
use serde_json::{Value, json};

use crate::client::Client;
use crate::output::{self, bytes, permille, text};
use crate::registry::{Upload, upload};
use crate::rollout::WatchArgs;

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../agent/runtime/fixtures/models/");
const V1: &[u8] =
    include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/../agent/runtime/fixtures/models/digits_cnn_v1.tflite"));
const V2: &[u8] =
    include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/../agent/runtime/fixtures/models/digits_cnn_v2.tflite"));
const V3_BAD: &[u8] =
    include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/../agent/runtime/fixtures/models/digits_cnn_v3_bad.tflite"));
const INPUTS: &[u8] =
    include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/../agent/runtime/fixtures/models/digits_cnn_v1.inputs.npy"));
const LABELS: &[u8] =
    include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/../agent/runtime/fixtures/models/digits_cnn_v1.labels.npy"));

/// The device class of the demo fleet.
const CLASS: &str = "cortex-m4";
/// Records in the validation set devices run before committing.
const SET_RECORDS: usize = 64;

/// `mota demo`.
#[derive(clap::Args)]
pub struct DemoArgs {
    /// Devices in the fleet [default: 100 simulated ones; with --qemu, one per image
    /// given, at least 3].
    #[arg(long, value_parser = clap::value_parser!(u16).range(3..=2000))]
    devices: Option<u16>,
    /// Leave the backend, the fleet and the dashboard running afterwards (Ctrl-C stops).
    #[arg(long)]
    keep: bool,
    /// Where the API and dashboard listen.
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Keep the backend's data here instead of a temporary directory.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Run the devices as QEMU Cortex-M4 machines with this firmware image (ELF; repeat
    /// to mix images, the devices take them in turn), over a Mosquitto started for them.
    /// `agent/firmware/scripts/demo.sh` builds the images and runs this.
    #[arg(long, value_name = "FIRMWARE")]
    qemu: Vec<PathBuf>,
    /// With --qemu: cut the power of devices (SIGKILL to QEMU, then boot from the same
    /// flash file) at random moments of every update, while they download, validate and
    /// commit; the demo fails if fewer cuts than this happened, or if the fleet does not
    /// end where the backend says it is.
    #[arg(long, default_value_t = 0, requires = "qemu")]
    kills: u32,
}

/// What [`Stack::start`] runs.
#[derive(Debug, Clone)]
pub struct StackOptions {
    /// Simulated devices (`demo-00000`, ...); none is fine.
    pub devices: usize,
    /// Where the API listens (port 0: any free port).
    pub listen: SocketAddr,
    /// The backend's data directory (default: a temporary one, removed by [`Stack::stop`]).
    pub data_dir: Option<PathBuf>,
    /// Firmware images: the devices are QEMU machines running them (over Mosquitto)
    /// instead of simulated ones.
    pub qemu: Vec<PathBuf>,
}

/// A backend on its embedded defaults and a fleet of simulated devices, in this process:
/// what `mota demo` shows and what the CLI's tests run every command against.
pub struct Stack {
    client: Client,
    url: String,
    token: String,
    database_url: String,
    data_dir: PathBuf,
    stop_server: tokio::sync::oneshot::Sender<()>,
    server: tokio::task::JoinHandle<Result<(), mota_backend::server::ServerError>>,
    stop_fleet: tokio::sync::oneshot::Sender<()>,
    fleet: std::thread::JoinHandle<()>,
    qemu: Option<(crate::qemu::Fleet, crate::qemu::Mosquitto)>,
    devices: usize,
    _temp: Option<tempfile::TempDir>,
}

pub(crate) async fn run(args: DemoArgs) -> Result<()> {
    let started = Instant::now();
    let devices = match (args.devices, args.qemu.len()) {
        (Some(n), _) => usize::from(n),
        (None, 0) => 100,
        (None, images) => images.max(3),
    };
    let kind = if args.qemu.is_empty() { "simulated devices" } else { "QEMU Cortex-M4 devices" };
    println!("mota demo: a backend, {devices} {kind} and two rollouts, all on this machine.\n");
    let options = StackOptions { devices, listen: args.listen, data_dir: args.data_dir.clone(), qemu: args.qemu };
    let mut stack = Stack::start(&options).await?;
    let (good, bad) = scenario(&mut stack, args.kills).await?;
    println!("\nfinished in {:.0} s", started.elapsed().as_secs_f64());

    if args.keep {
        println!("\nstill running (Ctrl-C stops):");
        println!("  dashboard  {}/ui/#token={}", stack.url, stack.token);
        println!("  CLI        export MOTA_SERVER={} MOTA_TOKEN={}", stack.url, stack.token);
        println!("             mota rollout show {good}    mota rollout show {bad}    mota device list");
        tokio::signal::ctrl_c().await.context("waiting for Ctrl-C")?;
    } else {
        println!(
            "\nnext: `mota demo --keep` leaves it running with the dashboard; README.md has the quickstart for real use"
        );
    }
    stack.stop().await
}

/// What the demo shows, on a started stack: the fleet on 1.0.0, a good 1.1.0 rolled out
/// (mostly as patches), a degraded 1.2.0 refused by the canaries' own validation and
/// paused, then a summary read back from the backend. With QEMU devices, `kills` power
/// cuts land during the updates and every device must end where the backend says it
/// is. Returns the ids of the good and the degraded rollout.
pub async fn scenario(stack: &mut Stack, kills: u32) -> Result<(i64, i64)> {
    let client = &stack.client;
    let devices = stack.devices;
    let mut cuts = (kills > 0).then(|| crate::qemu::PowerCuts::new(now_ms() as u64));
    step(1, "the fleet runs digits 1.0.0");
    let set = validation_set()?;
    let v1 = push(
        client,
        "1.0.0",
        V1,
        Upload { query: vec![("device_class", CLASS.to_owned())], set: Some(("digits-64.mvs".to_owned(), set)) },
    )
    .await?;
    let set_sha = v1["validation_set_sha256"].as_str().context("1.0.0 has no validation set")?.to_owned();
    wait_for_fleet(client, devices).await?;

    step(2, "a fine-tuned 1.1.0 rolls out in three cohorts, mostly as patches");
    // Later versions name the same set, and devices refuse a drop of more than 2 points.
    // None raises the security counter, so a rollback can return to the one before.
    let rule = || Upload {
        query: vec![("validation_set", set_sha.clone()), ("max_drop_permille", "20".to_owned())],
        set: None,
    };
    let v2 = push(client, "1.1.0", V2, rule()).await?;
    let patch = wait_for_delta(client, "1.1.0").await?;
    println!(
        "  the backend made a patch from 1.0.0: {} for a {} model\n",
        bytes(&patch["patch_size"]),
        bytes(&v2["image_size"])
    );
    let good = rollout(client, "1.1.0", devices, &[]).await?;
    let watched =
        watch(client, good, stack.qemu.as_mut().zip(cuts.as_mut()).map(|((fleet, _), cuts)| (fleet, cuts))).await;
    watched.with_context(|| format!("rollout {good} of the good model did not complete"))?;

    step(3, "a degraded 1.2.0: the canaries measure it on their validation sets and refuse it");
    push(client, "1.2.0", V3_BAD, rule()).await?;
    wait_for_delta(client, "1.2.0").await?;
    let canaries: Vec<String> = (0..2).map(|i| mota_sim::device_id("demo-", i)).collect();
    let bad = rollout(client, "1.2.0", devices, &canaries).await?;
    match watch(client, bad, stack.qemu.as_mut().zip(cuts.as_mut()).map(|((fleet, _), cuts)| (fleet, cuts))).await {
        Err(e) if e.downcast_ref::<crate::exit::Stopped>().is_some_and(|s| s.state == "paused") => {}
        Err(e) => return Err(e.context(format!("rollout {bad} of the degraded model"))),
        Ok(()) => bail!("rollout {bad} of the degraded model completed: the canaries should have refused it"),
    }
    let beyond = offered_beyond_first_cohort(client, bad).await?;
    if beyond > 0 {
        bail!("{beyond} devices outside the canary cohort were offered the degraded model");
    }
    println!("  rollout {bad} paused itself; no device outside its first cohort was offered 1.2.0\n");

    step(4, "summary");
    summary(client, good, bad, &v2).await?;
    if let Some((fleet, _)) = stack.qemu.as_mut() {
        for id in [good, bad] {
            println!("\nwhat each device measured in rollout {id} (`mota rollout show {id}` lists them too):");
            crate::rollout::devices(client, id, None, usize::MAX, false).await?;
        }
        measured_on_devices(client, good, devices).await?;
        let done = cuts.map(|c| c.done);
        devices_agree(client, fleet, done.as_ref()).await?;
        let done = done.unwrap_or_default();
        if done.total() < kills {
            bail!("only {} power cuts happened during the updates, {kills} were asked for", done.total());
        }
    }
    Ok((good, bad))
}

/// Every device committed rollout `id` with an accuracy of its own measuring.
async fn measured_on_devices(client: &Client, id: i64, devices: usize) -> Result<()> {
    let attempts = client.all(&format!("/v1/rollouts/{id}/devices"), &[], usize::MAX).await?;
    let measured =
        attempts.iter().filter(|a| a["state"] == "committed" && a["accuracy_permille"].as_u64().is_some()).count();
    if measured < devices {
        bail!("{measured} of {devices} devices committed rollout {id} with an accuracy they measured");
    }
    Ok(())
}

/// Watches rollout `id` to its end, cutting QEMU devices' power meanwhile.
async fn watch(
    client: &Client,
    id: i64,
    cuts: Option<(&mut crate::qemu::Fleet, &mut crate::qemu::PowerCuts)>,
) -> Result<()> {
    let args = WatchArgs::of(id);
    let watching = crate::rollout::watch(client, &args, false);
    let Some((fleet, cuts)) = cuts else { return watching.await };
    tokio::pin!(watching);
    loop {
        tokio::select! {
            outcome = &mut watching => return outcome,
            () = tokio::time::sleep(Duration::from_millis(5)) => cuts.step(fleet).await?,
        }
    }
}

/// Every QEMU device runs, by its own account, the model the backend has on record for
/// it, and is idle and online (waits up to 60 s for the last reports after power cuts).
async fn devices_agree(client: &Client, fleet: &crate::qemu::Fleet, cuts: Option<&crate::qemu::Cuts>) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let mut disagree = Vec::new();
        let mut rows = Vec::new();
        for (i, id) in fleet.ids().iter().enumerate() {
            let seen = fleet.seen(id);
            let record = client.get(&format!("/v1/devices/{id}"), &[]).await?;
            let image = fleet.firmware(i).and_then(|p| p.file_name()).map(|n| n.to_string_lossy().into_owned());
            if let Some(line) = &seen.trouble {
                bail!("{id} printed {line:?}");
            }
            // A product that confirms its trials has confirmed the model it runs.
            let agreed = seen.running.is_some()
                && record["running_sha256"].as_str() == seen.running.as_deref()
                && seen.phase == "idle"
                && record["online"] == true
                && (seen.confirmed.is_none() || seen.confirmed == seen.version);
            if !agreed {
                disagree.push(format!(
                    "{id}: runs {:?} ({}), backend says {} (online {})",
                    seen.version, seen.phase, record["running_version"], record["online"]
                ));
            }
            rows.push(format!(
                "  {id} ({}): digits {}{} on the device and in the backend; {} boots, {} power cuts, \
                 {} down and {} up over MQTT",
                image.unwrap_or_default(),
                seen.version.clone().unwrap_or_default(),
                if seen.confirmed.is_some() { ", confirmed by the product," } else { "" },
                seen.boots,
                seen.kills,
                indicatif::HumanBytes(seen.wire_down),
                indicatif::HumanBytes(seen.wire_up)
            ));
        }
        if disagree.is_empty() {
            println!("\nQEMU devices, each by its own account:");
            rows.iter().for_each(|r| println!("{r}"));
            if let Some(cuts) = cuts {
                println!(
                    "  {} power cuts survived: {} while downloading, {} while validating, {} after deciding",
                    cuts.total(),
                    cuts.download,
                    cuts.validation,
                    cuts.decision
                );
            }
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("devices and backend disagree after 60 s: {}", disagree.join("; "));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

fn step(n: u32, what: &str) {
    println!("[{n}/4] {what}");
}

impl Stack {
    /// Starts the backend (SQLite, local blobs, the in-process broker on a free port),
    /// waits until it is ready, creates an operator token, and starts the fleet.
    pub async fn start(args: &StackOptions) -> Result<Self> {
        let (temp, dir) = match &args.data_dir {
            Some(dir) => (None, dir.clone()),
            None => {
                let temp = tempfile::Builder::new()
                    .prefix("mota-demo-")
                    .tempdir()
                    .context("creating a temporary directory")?;
                let dir = temp.path().to_path_buf();
                (Some(temp), dir)
            }
        };
        let mut config = Config::embedded(dir.clone());
        let mqtt_port = mota_sim::broker::free_port().context("finding a free port for the broker")?;
        config.no_mqtt = false;
        config.mqtt_listen = SocketAddr::from(([127, 0, 0, 1], mqtt_port));
        let mosquitto = match args.qemu.is_empty() {
            true => None,
            false => Some(crate::qemu::Mosquitto::start().await?),
        };
        config.mqtt_url = mosquitto.as_ref().map(crate::qemu::Mosquitto::url);
        let listener = tokio::net::TcpListener::bind(args.listen)
            .await
            .with_context(|| format!("listening on {}", args.listen))?;
        let url = format!("http://{}", listener.local_addr()?);
        let (stop_server, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(mota_backend::server::run(config.clone(), listener, async {
            let _ = stopped.await;
        }));
        let unauthenticated = Client::new(&url, None)?;
        let deadline = Instant::now() + Duration::from_secs(60);
        while unauthenticated.get("/readyz", &[]).await.is_err() {
            if server.is_finished() || Instant::now() > deadline {
                let outcome = server.await;
                bail!("the backend did not start: {outcome:?}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let db = mota_backend::db::Db::connect(&config.database_url()).await?;
        let token = mota_backend::tokens::create(&db, "demo", mota_backend::tokens::Role::Operator, now_ms()).await?;
        db.pool.close().await;
        let root = dev_root(&dir)?;
        let ids: Vec<String> = (0..args.devices).map(|i| mota_sim::device_id("demo-", i)).collect();
        let qemu = match mosquitto {
            Some(mosquitto) => {
                let options = crate::qemu::FleetOptions {
                    firmware: args.qemu.clone(),
                    ids,
                    broker_port: mosquitto.port(),
                    root,
                    dir: dir.join("devices"),
                };
                std::fs::create_dir_all(&options.dir)?;
                Some((crate::qemu::Fleet::start(options)?, mosquitto))
            }
            None => None,
        };
        let (stop_fleet, fleet_stopped) = tokio::sync::oneshot::channel::<()>();
        let options = mota_sim::FleetOptions {
            count: if qemu.is_some() { 0 } else { args.devices },
            prefix: "demo-".into(),
            data_dir: None,
            stagger: Duration::from_millis(2),
            device: mota_sim::DeviceOptions {
                id: String::new(),
                host: "127.0.0.1".into(),
                port: mqtt_port,
                password: None,
                class: CLASS.into(),
                roots: vec![root],
                factory: std::sync::Arc::from(V1),
                factory_counter: 1,
                flash_file: None,
                faults: mota_sim::Faults::default(),
                seed: 1,
                keep_alive: mota_sim::DeviceOptions::KEEP_ALIVE,
            },
        };
        // The devices share one thread (their tasks are not `Send`), like a fleet simulator.
        let fleet = std::thread::Builder::new().name("fleet".into()).spawn(move || {
            let Ok(runtime) = tokio::runtime::Builder::new_current_thread().enable_all().build() else { return };
            let local = tokio::task::LocalSet::new();
            local.block_on(&runtime, async move {
                let _devices = mota_sim::run_fleet(options).await;
                let _ = fleet_stopped.await;
            });
        })?;
        Ok(Stack {
            client: Client::new(&url, Some(token.clone()))?,
            url,
            token,
            database_url: config.database_url(),
            data_dir: dir,
            stop_server,
            server,
            stop_fleet,
            fleet,
            qemu,
            devices: args.devices,
            _temp: temp,
        })
    }

    /// The API's base URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// An operator token.
    pub fn token(&self) -> &str {
        &self.token
    }

    /// The backend's data directory.
    pub fn data_dir(&self) -> &std::path::Path {
        &self.data_dir
    }

    /// A new token with `role` (`viewer`, `operator`, `admin`).
    pub async fn token_for(&self, role: &str) -> Result<String> {
        let role = mota_backend::tokens::Role::parse(role).with_context(|| format!("no role {role:?}"))?;
        let db = mota_backend::db::Db::connect(&self.database_url).await?;
        let token = mota_backend::tokens::create(&db, role.as_str(), role, now_ms()).await?;
        db.pool.close().await;
        Ok(token)
    }

    /// The QEMU devices, when the stack runs them.
    pub fn qemu(&mut self) -> Option<&mut crate::qemu::Fleet> {
        self.qemu.as_mut().map(|(fleet, _)| fleet)
    }

    /// Stops the fleet and the backend, and removes a temporary data directory.
    pub async fn stop(mut self) -> Result<()> {
        if let Some((mut fleet, mosquitto)) = self.qemu.take() {
            fleet.stop().await;
            mosquitto.stop().await;
        }
        let _ = self.stop_fleet.send(());
        let _ = self.stop_server.send(());
        self.server.await.context("the backend's task")??;
        tokio::task::spawn_blocking(move || self.fleet.join())
            .await?
            .map_err(|_| anyhow::anyhow!("the fleet thread panicked"))?;
        Ok(())
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

/// The development root the backend generated: what the demo fleet's firmware trusts.
fn dev_root(dir: &std::path::Path) -> Result<[u8; 32]> {
    let path = dir.join("keys/dev-root.pub.pem");
    let pem = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    match mota_proto::keys::KeyFile::from_pem(&pem) {
        Ok(mota_proto::keys::KeyFile::Public(root)) => Ok(root.to_bytes()),
        _ => bail!("{} is not a public key", path.display()),
    }
}

/// The first records of the digits inputs and labels, as `mota valset make` builds a set.
fn validation_set() -> Result<Vec<u8>> {
    let parse = |bytes: &[u8], what: &str| {
        mota_runtime::npy::Npy::parse(bytes).map_err(|e| anyhow::anyhow!("{FIXTURES}digits_cnn_v1.{what}.npy: {e:?}"))
    };
    let (x, y) = (parse(INPUTS, "inputs")?, parse(LABELS, "labels")?);
    let records = SET_RECORDS.min(x.rows());
    let per = x.data.len() / x.rows().max(1);
    let labels: Vec<u16> = y.data.chunks_exact(4).take(records).map(|c| u16::from(c[0])).collect();
    mota_runtime::validation::build(
        mota_runtime::DType::Int8,
        &x.shape[1..],
        &x.data[..per * records],
        Some((&labels, 10)),
        None,
    )
    .map_err(|e| anyhow::anyhow!("building the validation set: {e:?}"))
}

async fn push(client: &Client, version: &str, image: &[u8], mut upload_with: Upload) -> Result<Value> {
    upload_with.query.insert(0, ("version", version.to_owned()));
    let v = upload(client, "digits", image.to_vec(), upload_with)
        .await
        .with_context(|| format!("pushing digits {version}"))?;
    println!(
        "  pushed digits {version}: {}, accuracy {} measured by the backend on the validation set",
        bytes(&v["image_size"]),
        permille(&v["accuracy_permille"])
    );
    Ok(v)
}

async fn wait_for_fleet(client: &Client, devices: usize) -> Result<()> {
    let bar = ProgressBar::new(devices as u64);
    if let Ok(style) = ProgressStyle::with_template("  devices connected [{bar:30}] {pos}/{len}") {
        bar.set_style(style.progress_chars("=> "));
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let known = client.all("/v1/devices", &[("class", CLASS.to_owned())], usize::MAX).await?;
        // Registered from its own hello (pre-registered devices have no agent version).
        let ready = known.iter().filter(|d| d["online"] == true && d["agent_version"].is_string()).count();
        bar.set_position(ready as u64);
        if ready >= devices {
            bar.finish_and_clear();
            println!("  {devices} devices connected, each running 1.0.0 flashed at the factory\n");
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("only {ready} of {devices} devices registered in 120 s");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

async fn wait_for_delta(client: &Client, version: &str) -> Result<Value> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let v = crate::registry::fetch_version(client, "digits", version).await?;
        if let Some(d) = v["deltas"].as_array().and_then(|ds| ds.iter().find(|d| d["state"] != "pending")) {
            if d["state"] != "done" {
                bail!("the patch to {version} ended {}", d["state"]);
            }
            return Ok(d.clone());
        }
        if Instant::now() > deadline {
            bail!("no patch to {version} after 60 s");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Starts a rollout of `version` to the whole fleet in three cohorts (about 5 %, 30 %,
/// then everyone), each judged on failures and on the accuracy devices measure.
async fn rollout(client: &Client, version: &str, devices: usize, canaries: &[String]) -> Result<i64> {
    let first = devices.div_ceil(20).max(canaries.len()).max(1);
    let second = (devices * 3 / 10).max(first + 1) - first;
    // A fleet too small for three cohorts (three devices and two canaries) gets two.
    let (cohorts, sizes) = match first + second < devices {
        true => (json!([{ "count": first }, { "count": second }, { "percent": 100 }]), format!("{first}, {second}")),
        false => (json!([{ "count": first }, { "percent": 100 }]), first.to_string()),
    };
    let body = json!({
        "model": "digits", "version": version,
        "selector": { "class": CLASS },
        "plan": { "cohorts": cohorts, "canary": canaries },
        "gates": { "min_reports": first.min(2), "max_failure_permille": 100, "max_accuracy_drop_permille": 20,
                   "stuck_timeout_s": 120, "on_failure": "pause" },
    });
    let mut dry_run = body.clone();
    dry_run["dry_run"] = json!(true);
    let preview =
        client.json(reqwest::Method::POST, "/v1/rollouts", &dry_run).await.context("previewing the rollout")?;
    let r = client.json(reqwest::Method::POST, "/v1/rollouts", &body).await.context("starting the rollout")?;
    let id = r["id"].as_i64().context("no rollout id")?;
    println!(
        "  rollout {id}: {version} to {} devices in cohorts of {sizes} and the rest{}; {} will get a patch, {} the full image",
        preview["population"],
        if canaries.is_empty() { String::new() } else { format!(", canaries {} first", canaries.join(" and ")) },
        preview["delta"],
        preview["full"]
    );
    Ok(id)
}

async fn offered_beyond_first_cohort(client: &Client, id: i64) -> Result<usize> {
    let attempts = client.all(&format!("/v1/rollouts/{id}/devices"), &[], usize::MAX).await?;
    Ok(attempts.iter().filter(|a| a["cohort"].as_i64() != Some(0) && !a["offered_at"].is_null()).count())
}

async fn summary(client: &Client, good: i64, bad: i64, v2: &Value) -> Result<()> {
    let devices = client.all("/v1/devices", &[("class", CLASS.to_owned())], usize::MAX).await?;
    let mut per_version: BTreeMap<String, usize> = BTreeMap::new();
    for d in &devices {
        *per_version.entry(text(&d["running_version"])).or_default() += 1;
    }
    let attempts = client.all(&format!("/v1/rollouts/{good}/devices"), &[], usize::MAX).await?;
    let patched = attempts.iter().filter(|a| a["delta"] == true).count();
    let full = attempts.iter().filter(|a| a["delta"] == false).count();
    let patch_size = wait_for_delta(client, "1.1.0").await?["patch_size"].as_u64().unwrap_or(0);
    let image = v2["image_size"].as_u64().unwrap_or(0);
    let (sent, full_cost) = (patched as u64 * patch_size + full as u64 * image, (patched + full) as u64 * image);
    let served = chunk_bytes(client).await?;
    let mean = |rollout: &Value, key: &str| -> Option<f64> {
        let cohorts = rollout["cohorts"].as_array()?;
        let (sum, n) = cohorts.iter().fold((0.0, 0u64), |(s, n), c| {
            let m = c["tally"]["measured"].as_u64().unwrap_or(0);
            (s + c["tally"][key].as_f64().unwrap_or(0.0) * m as f64, n + m)
        });
        (n > 0).then(|| sum / n as f64)
    };
    let (good_view, bad_view) = (crate::rollout::get(client, good).await?, crate::rollout::get(client, bad).await?);
    let rows: Vec<(&str, String)> = vec![
        (
            "devices per model",
            per_version.iter().map(|(v, n)| format!("digits {v}: {n}")).collect::<Vec<_>>().join(", "),
        ),
        (
            "sent for 1.1.0",
            format!(
                "{patched} devices got a patch, {full} the full image: {} instead of {} as full images ({:.0} % less)",
                indicatif::HumanBytes(sent),
                indicatif::HumanBytes(full_cost),
                if full_cost > 0 { 100.0 * (1.0 - sent as f64 / full_cost as f64) } else { 0.0 }
            ),
        ),
        (
            "served over MQTT",
            format!(
                "{} in chunks in all (both rollouts' models and patches, and the validation sets)",
                indicatif::HumanBytes(served)
            ),
        ),
        (
            "accuracy on devices",
            format!(
                "1.1.0 {} (backend measured {}); 1.2.0 {} on the canaries, {:.0}‰ below what they ran",
                permille(&mean(&good_view, "mean_accuracy_permille").map_or(Value::Null, Value::from)),
                permille(&v2["accuracy_permille"]),
                permille(&mean(&bad_view, "mean_accuracy_permille").map_or(Value::Null, Value::from)),
                mean(&bad_view, "mean_accuracy_drop_permille").unwrap_or(f64::NAN),
            ),
        ),
        ("rollouts", format!("{good} completed; {bad} {}", crate::rollout::state_line(&bad_view))),
    ];
    output::fields(&rows);
    Ok(())
}

/// Chunk bytes the backend served, from its Prometheus counter.
async fn chunk_bytes(client: &Client) -> Result<u64> {
    let text = client.request(reqwest::Method::GET, "/metrics").send().await?.text().await?;
    Ok(text
        .lines()
        .find_map(|l| l.strip_prefix("mota_chunk_bytes_total "))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map_or(0, |v| v as u64))
}
