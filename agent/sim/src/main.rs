//! `mota-sim`: a fleet of simulated devices against an MQTT broker.
//!
//! ```text
//! mota-sim --root keys/root.pub.pem --count 100                      # broker on 127.0.0.1:1883
//! mota-sim --root keys/root.pub.pem --count 100 --embedded-broker     # start rumqttd here too
//! ```

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::Parser;
use mota_proto::keys::KeyFile;
use mota_sim::{DeviceOptions, Faults, FleetOptions, ThreadedFleet, broker};

/// The built-in factory model (the digits CNN from mota-runtime's fixtures).
static DEFAULT_MODEL: &[u8] = include_bytes!("../../runtime/fixtures/models/digits_cnn_v1.tflite");

#[derive(Parser)]
#[command(version, about = "A fleet of simulated mota devices: the real agent on simulated flash over MQTT")]
struct Args {
    /// Root public key the devices trust (PEM, as `mota keys root-new` writes it); repeat for several.
    #[arg(long, required = true)]
    root: Vec<PathBuf>,
    /// Number of devices.
    #[arg(long, default_value_t = 1)]
    count: usize,
    /// Device id prefix (ids are PREFIX00000, PREFIX00001, ...).
    #[arg(long, default_value = "sim-")]
    prefix: String,
    /// Broker address.
    #[arg(long, default_value = "127.0.0.1:1883")]
    broker: String,
    /// Start an MQTT broker (rumqttd) on --broker's port in this process.
    #[arg(long)]
    embedded_broker: bool,
    /// Device class.
    #[arg(long, default_value = "sim-digits")]
    class: String,
    /// Factory model (.tflite); the built-in digits CNN by default.
    #[arg(long)]
    model: Option<PathBuf>,
    /// Security counter of the factory model.
    #[arg(long, default_value_t = 1)]
    counter: u32,
    /// Keep each device's flash in DIR/<id>.flash (survives restarts); in memory if absent.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Chance per boot of a power cut at a random flash operation (0..1).
    #[arg(long, default_value_t = 0.0)]
    cut_probability: f64,
    /// Most power cuts per device.
    #[arg(long, default_value_t = 3)]
    max_cuts: u32,
    /// Drop each device's connection about this often (seconds).
    #[arg(long)]
    disconnect_every: Option<f64>,
    /// Delay before handling each message, milliseconds (a slow link).
    #[arg(long, default_value_t = 0)]
    delay_ms: u64,
    /// Seed for the fault dice.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Threads to spread the devices over (each device patches and validates on its own
    /// thread, as firmware does on its core; one thread saturates near 1,000 devices
    /// updating at once).
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// MQTT keep-alive of each device, seconds (raise it for large fleets on few cores:
    /// a device waiting for its thread longer than 1.5 keep-alives is disconnected).
    #[arg(long, default_value_t = DeviceOptions::KEEP_ALIVE.as_secs())]
    keep_alive: u64,
}

fn main() -> Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,rumqttd=error"));
    tracing_subscriber::fmt().with_env_filter(filter).init();
    let args = Args::parse();
    let mut roots = Vec::new();
    for path in &args.root {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        match KeyFile::from_pem(&text).with_context(|| format!("{}", path.display()))? {
            KeyFile::Public(key) => roots.push(key.to_bytes()),
            _ => bail!("{}: not a public key (give the root's .pub.pem)", path.display()),
        }
    }
    let factory: Arc<[u8]> = match &args.model {
        Some(p) => std::fs::read(p).with_context(|| format!("reading {}", p.display()))?.into(),
        None => DEFAULT_MODEL.into(),
    };
    let (host, port) = args.broker.rsplit_once(':').context("--broker must be HOST:PORT")?;
    let port: u16 = port.parse().context("--broker port")?;
    if args.embedded_broker {
        let addr = format!("{host}:{port}").parse().context("--embedded-broker needs an IP address in --broker")?;
        broker::start(addr)?;
        println!("embedded broker on {addr}");
    }
    if let Some(dir) = &args.data_dir {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let opts = FleetOptions {
        count: args.count,
        prefix: args.prefix,
        data_dir: args.data_dir,
        stagger: Duration::from_millis(5),
        device: DeviceOptions {
            id: String::new(),
            host: host.to_owned(),
            port,
            password: None,
            class: args.class,
            roots,
            factory,
            factory_counter: args.counter,
            flash_file: None,
            faults: Faults {
                cut_probability: args.cut_probability,
                max_cuts: args.max_cuts,
                disconnect_every: args.disconnect_every.map(Duration::from_secs_f64),
                message_delay: Duration::from_millis(args.delay_ms),
            },
            seed: args.seed,
            keep_alive: Duration::from_secs(args.keep_alive),
        },
    };
    let fleet = ThreadedFleet::spawn(opts, args.threads).context("starting the fleet's threads")?;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(async move {
        let statuses = fleet.statuses().await;
        println!("{} devices started", statuses.len());
        let mut every = tokio::time::interval(Duration::from_secs(10));
        loop {
            every.tick().await;
            let (mut online, mut by_version) = (0, std::collections::BTreeMap::<String, usize>::new());
            let statuses = fleet.statuses().await;
            for (_, s) in &statuses {
                online += usize::from(s.connects > 0);
                *by_version.entry(s.version.clone()).or_default() += 1;
            }
            println!("connected once: {online}/{}; running: {by_version:?}", statuses.len());
        }
    })
}
