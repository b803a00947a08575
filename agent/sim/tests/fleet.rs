//! A fleet over a real broker: simulated devices (the real agent on simulated flash) and a
//! minimal backend stand-in on the MQTT side (retained offer per device, chunks served
//! from memory, statuses collected), until every device has committed the new model,
//! including devices whose power is cut at random flash operations and whose
//! connections drop. The broker is rumqttd in-process, or the one at `MOTA_TEST_BROKER`
//! (HOST:PORT; CI points it at Mosquitto).

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use ed25519_dalek::SigningKey;
use mota_proto::message::{Chunk, Event, Get, Hello, Status};
use mota_proto::sign::{ReleaseKey, certify};
use mota_proto::topic::{Kind, Topic};
use mota_proto::{Delta, Digest, Image, Manifest, Validation, Wire};
use mota_sim::{DeviceOptions, DeviceStatus, Faults, FleetOptions, broker, run_fleet};
use rumqttc::{AsyncClient, Event as MqttEvent, MqttOptions, Packet, QoS};

type TestResult = Result<(), Box<dyn std::error::Error>>;
type BoxError = Box<dyn std::error::Error>;

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../runtime/fixtures/models/");
const CLASS: &str = "sim-digits";

struct Release {
    root: [u8; 32],
    envelope: Vec<u8>,
    artifacts: HashMap<Digest, Vec<u8>>,
    target: Digest,
}

/// digits_cnn v1 → v2 as a delta, with a validation set of 60 records, signed.
fn release(old: &[u8], new: &[u8]) -> Result<Release, BoxError> {
    let root = SigningKey::from_bytes(&[0x51; 32]);
    let key = SigningKey::from_bytes(&[0x52; 32]);
    let key = ReleaseKey::new(key.clone(), certify(&root, &key.verifying_key(), u64::MAX, 0..=99)?)
        .map_err(|e| format!("{e:?}"))?;
    let patch = mota_delta::encode::make(old, new);
    let set = validation_set("digits_cnn_v2", 60)?;
    let model = mota_runtime::Model::parse(new).map_err(|e| format!("{e:?}"))?;
    let manifest = Manifest {
        format: mota_proto::manifest::FORMAT_VERSION,
        model: "digits_cnn",
        version: "2.0.0",
        security_counter: 2,
        device_class: CLASS,
        image: Image { size: new.len() as u32, sha256: Digest::of(new) },
        delta: Some(Delta {
            base_sha256: Digest::of(old),
            patch_size: patch.len() as u32,
            patch_sha256: Digest::of(&patch),
            codec: u16::from(mota_delta::format::CODEC),
        }),
        validation: Some(Validation {
            set_sha256: Digest::of(&set),
            set_size: set.len() as u32,
            min_accuracy_permille: 800,
            max_drop_permille: 50,
        }),
        arena_bytes: mota_runtime::arena_size(&model).map_err(|e| format!("{e:?}"))? as u32,
        expires_at: None,
        rollout_id: 11,
    };
    let envelope = key.sign(&manifest)?;
    let artifacts = HashMap::from([(Digest::of(&patch), patch), (Digest::of(&set), set)]);
    Ok(Release { root: root.verifying_key().to_bytes(), envelope, artifacts, target: Digest::of(new) })
}

fn validation_set(name: &str, records: usize) -> Result<Vec<u8>, BoxError> {
    let npy = |suffix: &str| -> Result<mota_runtime::npy::Npy, BoxError> {
        mota_runtime::npy::Npy::parse(&std::fs::read(format!("{FIXTURES}{name}.{suffix}.npy"))?)
            .map_err(|e| format!("{e:?}").into())
    };
    let (x, y) = (npy("inputs")?, npy("labels")?);
    let per = x.data.len() / x.rows();
    let labels: Vec<u16> = y.data.chunks_exact(4).take(records).map(|c| c[0] as u16).collect();
    Ok(mota_runtime::validation::build(
        mota_runtime::DType::Int8,
        &x.shape[1..],
        &x.data[..per * records],
        Some((&labels, 10)),
        None,
    )
    .map_err(|e| format!("{e:?}"))?)
}

/// Terminal reports seen per device, by (rollout, seq, event).
type Terminal = HashMap<String, HashSet<(u64, u32, Event)>>;

/// The backend stand-in: offers to every device that says hello, serves chunks, and
/// records statuses (terminal ones by idempotency key).
async fn backend(
    prefix: String,
    host: String,
    port: u16,
    r: Rc<Release>,
    terminal: Rc<RefCell<Terminal>>,
    ready: tokio::sync::oneshot::Sender<()>,
) {
    let mut ready = Some(ready);
    let mut subacks = 0;
    // Own client id and own devices: tests may share one broker (CI's Mosquitto).
    let mut opts = MqttOptions::new(format!("backend-{prefix}"), host, port);
    opts.set_max_packet_size(64 * 1024, 64 * 1024);
    let (client, mut events) = AsyncClient::new(opts, 1024);
    let mut offered = HashSet::new();
    loop {
        let Ok(event) = events.poll().await else {
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        };
        let p = match event {
            MqttEvent::Incoming(Packet::ConnAck(_)) => {
                for kind in [Kind::Hello, Kind::Get, Kind::Status] {
                    let _ = client.subscribe(format!("mota/v1/dev/+/{}", kind.as_str()), QoS::AtLeastOnce).await;
                }
                continue;
            }
            MqttEvent::Incoming(Packet::SubAck(_)) => {
                subacks += 1;
                if subacks == 3 {
                    ready.take().map(|tx| tx.send(()));
                }
                continue;
            }
            MqttEvent::Incoming(Packet::Publish(p)) => p,
            _ => continue,
        };
        let Ok(topic) = Topic::parse(&p.topic) else { continue };
        let device = topic.device().to_owned();
        if !device.starts_with(&prefix) {
            continue;
        }
        match topic.kind() {
            Kind::Hello if Hello::parse(&p.payload).is_ok_and(|h| h.online) && offered.insert(device.clone()) => {
                let to = format!("mota/v1/dev/{device}/offer");
                let _ = client.publish(to, QoS::AtLeastOnce, true, r.envelope.clone()).await;
            }
            Kind::Get => {
                let Ok(get) = Get::parse(&p.payload) else { continue };
                let Some(data) = r.artifacts.get(&get.artifact) else { continue };
                let start = (get.offset as usize).min(data.len());
                let end = (start + get.length as usize).min(data.len());
                let Ok(chunk) = Chunk::data(get.artifact, get.offset, &data[start..end]).to_vec() else { continue };
                let _ = client.publish(format!("mota/v1/dev/{device}/chunk"), QoS::AtLeastOnce, false, chunk).await;
            }
            Kind::Status => {
                if let Ok(s) = Status::parse(&p.payload)
                    && s.event.is_terminal()
                {
                    terminal.borrow_mut().entry(device).or_default().insert((s.rollout_id, s.seq, s.event));
                }
            }
            _ => {}
        }
    }
}

/// `count` fault-free devices on the factory model `old`, trusting `r`'s root.
fn fleet(count: usize, prefix: String, (host, port): (&str, u16), r: &Release, old: &[u8]) -> FleetOptions {
    FleetOptions {
        count,
        prefix,
        data_dir: None,
        stagger: Duration::ZERO,
        device: DeviceOptions {
            id: String::new(),
            host: host.to_owned(),
            port,
            password: None,
            class: CLASS.into(),
            roots: vec![r.root],
            factory: Arc::from(old),
            factory_counter: 1,
            flash_file: None,
            faults: Faults::default(),
            seed: 7,
            keep_alive: DeviceOptions::KEEP_ALIVE,
        },
    }
}

fn broker_address() -> Result<(String, u16), BoxError> {
    if let Ok(addr) = std::env::var("MOTA_TEST_BROKER") {
        let (host, port) = addr.rsplit_once(':').ok_or("MOTA_TEST_BROKER must be HOST:PORT")?;
        return Ok((host.to_owned(), port.parse()?));
    }
    let port = broker::free_port()?;
    broker::start(format!("127.0.0.1:{port}").parse()?)?;
    Ok(("127.0.0.1".to_owned(), port))
}

#[test]
fn a_fleet_with_power_cuts_and_drops_commits_the_new_model() -> TestResult {
    let old = std::fs::read(format!("{FIXTURES}digits_cnn_v1.tflite"))?;
    let new = std::fs::read(format!("{FIXTURES}digits_cnn_v2.tflite"))?;
    let r = Rc::new(release(&old, &new)?);
    let (host, port) = broker_address()?;
    let prefix = format!("t{}-fleet-", std::process::id());
    let base = fleet(12, format!("{prefix}calm-"), (&host, port), &r, &old);
    let mut rough = fleet(12, format!("{prefix}rough-"), (&host, port), &r, &old);
    rough.device.faults = Faults {
        cut_probability: 0.9,
        max_cuts: 3,
        disconnect_every: Some(Duration::from_millis(1500)),
        message_delay: Duration::from_millis(2),
    };
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let local = tokio::task::LocalSet::new();
    let terminal = Rc::new(RefCell::new(HashMap::new()));
    let fleet: Vec<(String, Rc<RefCell<DeviceStatus>>)> = local.block_on(&runtime, async {
        let (tx, rx) = tokio::sync::oneshot::channel();
        tokio::task::spawn_local(backend(prefix.clone(), host.clone(), port, Rc::clone(&r), Rc::clone(&terminal), tx));
        let _ = tokio::time::timeout(Duration::from_secs(10), rx).await;
        let mut fleet = run_fleet(base).await;
        fleet.extend(run_fleet(rough).await);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
        while tokio::time::Instant::now() < deadline {
            let all = fleet.iter().all(|(id, s)| {
                s.borrow().running == Some(r.target) && terminal.borrow().get(id).is_some_and(|t| !t.is_empty())
            });
            if all {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        fleet
    });
    let terminal = terminal.borrow();
    let mut cuts = 0;
    for (id, status) in &fleet {
        let s = status.borrow();
        cuts += s.cuts;
        assert_eq!(s.running, Some(r.target), "{id} runs {:?} ({s:?})", s.version);
        assert_eq!((s.version.as_str(), s.counter), ("2.0.0", 2), "{id}");
        let reports = terminal.get(id).ok_or(format!("{id}: no terminal report"))?;
        assert_eq!(reports.len(), 1, "{id}: {reports:?}");
        assert!(
            reports.iter().all(|&(rollout, _, event)| rollout == 11 && event == Event::Committed),
            "{id}: {reports:?}"
        );
    }
    assert!(cuts > 0, "no power cut was injected");
    println!("{} devices committed, {cuts} power cuts injected", fleet.len());
    Ok(())
}

/// Runs `opts` with the backend stand-in until every device runs `target` (or 60 s).
fn run_until(
    opts: FleetOptions,
    r: &Rc<Release>,
    host: &str,
    port: u16,
    with_backend: bool,
) -> Result<Vec<DeviceStatus>, BoxError> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let local = tokio::task::LocalSet::new();
    let terminal = Rc::new(RefCell::new(HashMap::new()));
    let statuses = local.block_on(&runtime, async {
        if with_backend {
            let (tx, rx) = tokio::sync::oneshot::channel();
            tokio::task::spawn_local(backend(
                opts.prefix.clone(),
                host.to_owned(),
                port,
                Rc::clone(r),
                Rc::clone(&terminal),
                tx,
            ));
            let _ = tokio::time::timeout(Duration::from_secs(10), rx).await;
        }
        let fleet = run_fleet(opts).await;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        while tokio::time::Instant::now() < deadline
            && !fleet.iter().all(|(_, s)| s.borrow().boots > 0 && s.borrow().running == Some(r.target))
        {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        fleet.iter().map(|(_, s)| s.borrow().clone()).collect()
    });
    Ok(statuses)
}

#[test]
fn a_device_keeps_its_flash_across_process_restarts() -> TestResult {
    let old = std::fs::read(format!("{FIXTURES}digits_cnn_v1.tflite"))?;
    let new = std::fs::read(format!("{FIXTURES}digits_cnn_v2.tflite"))?;
    let r = Rc::new(release(&old, &new)?);
    let (host, port) = broker_address()?;
    let dir = tempfile::tempdir()?;
    let mut opts = fleet(2, format!("t{}-disk-", std::process::id()), (&host, port), &r, &old);
    opts.data_dir = Some(dir.path().to_path_buf());
    let first = run_until(opts.clone(), &r, &host, port, true)?;
    assert!(first.iter().all(|s| s.running == Some(r.target)), "{first:?}");
    // A new process on the same files, with no backend: the devices boot into v2.
    let again = run_until(opts, &r, &host, port, false)?;
    for s in &again {
        assert_eq!((s.running, s.version.as_str(), s.counter, s.boots), (Some(r.target), "2.0.0", 2, 1), "{s:?}");
    }
    Ok(())
}
