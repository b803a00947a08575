//! The rollout control plane without a broker, for the model-based test and its
//! scenarios: the real backend (device registry, report ingest, chunk service, two
//! engines on one database, operator actions, rollout creation) and real agents on
//! simulated flash (`mota_sim::memdev`), joined by an in-memory bus the test drives one
//! message at a time, so every interleaving is a schedule it chose and can replay.
//!
//! The bus is a broker reduced to what the control plane relies on: QoS 1 in order per
//! publisher, retained messages delivered on (re)connect, nothing kept for a device that
//! is not connected, a last will when a connection drops, and a restart that may or may
//! not keep what was retained. Device-to-backend messages wait in `inbound`, where a
//! schedule drops, duplicates, reorders or delays them.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use mota_backend::Config;
use mota_backend::db::Clock;
use mota_backend::mqtt::chunks::{ChunkService, Limits};
use mota_backend::mqtt::publish::{PublishError, Publisher, Publishing};
use mota_backend::mqtt::{registry, reports};
use mota_backend::registry::{NewVersion, SetSource};
use mota_backend::rollout::actions::{self, Action};
use mota_backend::rollout::create::{NewRollout, create};
use mota_backend::rollout::decide::{Decision, Snapshot, decide};
use mota_backend::rollout::engine::Engine;
use mota_backend::server::{AppState, open};
use mota_proto::message::{Get, Hello, Payload};
use mota_proto::topic::{Kind, Topic};
use mota_proto::{Envelope, Manifest, Wire};
use mota_sim::memdev::{MemDevice, MemOptions};
use mota_simflash::CutMode;
use tokio::sync::OnceCell;

use super::{BoxError, digits_set, model};

/// The versions every world has: (version, fixture). 1.2.0 fails its validation on
/// the devices; 1.3.0 re-releases 1.0.0's bytes with a higher counter (the issue's
/// trial: the way back after 1.1.0, as a rollout).
pub const VERSIONS: [(&str, &str); 4] = [
    ("1.0.0", "digits_cnn_v1"),
    ("1.1.0", "digits_cnn_v2"),
    ("1.2.0", "digits_cnn_v3_bad"),
    ("1.3.0", "digits_cnn_v1"),
];

/// A message the backend published.
#[derive(Debug, Clone)]
pub struct Msg {
    /// Publish order, from 1.
    pub seq: u64,
    pub topic: String,
    pub payload: Vec<u8>,
    pub retain: bool,
}

impl Msg {
    /// The rollout of an offer (`None` for other kinds, and for a cleared offer).
    pub fn offer_rollout(&self) -> Option<u64> {
        let topic = Topic::parse(&self.topic).ok()?;
        if topic.kind() != Kind::Offer || self.payload.is_empty() {
            return None;
        }
        let envelope = Envelope::parse(&self.payload).ok()?;
        Some(Manifest::parse(envelope.body).ok()?.rollout_id)
    }
}

#[derive(Default)]
struct BusState {
    seq: u64,
    queue: VecDeque<Msg>,
    retained: BTreeMap<String, Vec<u8>>,
    log: Vec<Msg>,
    /// Offers published before the chunk service could see them (a device answers an
    /// offer at once: its chunk requests would be refused).
    unservable: Vec<String>,
}

/// The broker side the backend publishes into.
#[derive(Default)]
pub struct Bus {
    state: Mutex<BusState>,
    /// The database, to check that each offer is servable the moment it is published.
    db: std::sync::OnceLock<mota_backend::db::Db>,
}

impl Publisher for Bus {
    fn publish(&self, topic: String, payload: Vec<u8>, retain: bool) -> Publishing<'_> {
        let msg = self.with(|s| {
            s.seq += 1;
            let msg = Msg { seq: s.seq, topic, payload, retain };
            if retain {
                if msg.payload.is_empty() {
                    s.retained.remove(&msg.topic);
                } else {
                    s.retained.insert(msg.topic.clone(), msg.payload.clone());
                }
            }
            s.queue.push_back(msg.clone());
            s.log.push(msg.clone());
            msg
        });
        Box::pin(async move {
            // What the chunk service reads (committed rows, another connection).
            if let (Some(db), Ok(topic), Ok(envelope)) =
                (self.db.get(), Topic::parse(&msg.topic), Envelope::parse(&msg.payload))
                && topic.kind() == Kind::Offer
            {
                let manifest = mota_backend::blobs::hex(&mota_proto::Digest::of(envelope.body).0);
                let recorded: Option<i32> =
                    sqlx::query_scalar("SELECT 1 FROM device_offers WHERE device_id = $1 AND manifest_sha256 = $2")
                        .bind(topic.device())
                        .bind(&manifest)
                        .fetch_optional(&db.pool)
                        .await
                        .map_err(|e| PublishError(e.to_string()))?;
                if recorded.is_none() {
                    self.with(|s| s.unservable.push(msg.topic.clone()));
                }
            }
            Ok::<(), PublishError>(())
        })
    }
}

impl Bus {
    fn with<T>(&self, f: impl FnOnce(&mut BusState) -> T) -> T {
        f(&mut self.state.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// Offer topics an offer was published on before the chunk service could serve it.
    pub fn unservable(&self) -> Vec<String> {
        self.with(|s| s.unservable.clone())
    }

    /// The last publish's number.
    pub fn seq(&self) -> u64 {
        self.with(|s| s.seq)
    }

    /// Everything published after `seq`.
    pub fn since(&self, seq: u64) -> Vec<Msg> {
        self.with(|s| s.log.iter().filter(|m| m.seq > seq).cloned().collect())
    }

    /// What the broker retains on `topic`.
    pub fn retained(&self, topic: &str) -> Option<Vec<u8>> {
        self.with(|s| s.retained.get(topic).cloned())
    }

    /// Every retained (topic, payload).
    pub fn all_retained(&self) -> Vec<(String, Vec<u8>)> {
        self.with(|s| s.retained.iter().map(|(t, p)| (t.clone(), p.clone())).collect())
    }

    /// Messages not delivered yet.
    pub fn queued(&self) -> usize {
        self.with(|s| s.queue.len())
    }

    fn pop(&self) -> Option<Msg> {
        self.with(|s| s.queue.pop_front())
    }

    /// A broker restart: what was in flight is gone, and so is what it retained unless
    /// it persisted it.
    pub fn restart(&self, keep_retained: bool) {
        self.with(|s| {
            s.queue.clear();
            if !keep_retained {
                s.retained.clear();
            }
        });
    }
}

/// A device and its connection.
pub struct Node {
    pub dev: MemDevice,
    pub connected: bool,
}

/// The whole control plane in one process.
pub struct World {
    pub state: AppState,
    pub bus: Arc<Bus>,
    /// Two replicas' engines on the one database.
    pub engines: [Engine; 2],
    pub chunks: ChunkService,
    /// The control plane's clock (Unix ms); devices read it too.
    pub clock: Arc<AtomicI64>,
    pub devices: Vec<Node>,
    /// Device-to-backend messages in flight: (device, kind, payload).
    pub inbound: VecDeque<(String, Kind, Vec<u8>)>,
    /// Reports of the devices' reverts, by (device, rollout, seq): what the model
    /// reverted was installed by (its manifest). See [`World::revert`].
    reverts: HashMap<(String, u64, u32), mota_proto::Digest>,
    /// The world's own PostgreSQL database, if on PostgreSQL.
    postgres_db: Option<String>,
    /// The world's files (its data directory, the development keys among them).
    dir: tempfile::TempDir,
}

/// The database and blobs every world starts from: the four versions uploaded with the
/// digits validation set, deltas computed, built once per test process.
struct Template {
    dir: tempfile::TempDir,
    /// The PostgreSQL template database's URL, when `MOTA_TEST_POSTGRES` names a server.
    postgres: Option<(String, String)>,
}

static TEMPLATE: OnceCell<Template> = OnceCell::const_new();

async fn template() -> Result<&'static Template, BoxError> {
    TEMPLATE
        .get_or_try_init(|| async {
            let dir = tempfile::tempdir()?;
            let mut config = Config::embedded(dir.path().join("data"));
            let postgres = match std::env::var("MOTA_TEST_POSTGRES") {
                Ok(server) => {
                    let name = format!("mota_control_tmpl_{}", std::process::id());
                    admin(&server, &format!("CREATE DATABASE {name}")).await?;
                    let url = format!("{}/{name}", server.rsplit_once('/').ok_or("no database in the URL")?.0);
                    config.database_url = Some(url.clone());
                    Some((server, name))
                }
                Err(_) => None,
            };
            std::fs::create_dir_all(&config.data_dir)?;
            let state = open(&config).await?;
            let set = state.registry.add_set("digits-8", digits_set(8)?.into(), "test").await?;
            let mut digest = [0u8; 32];
            hex::decode_to_slice(&set.sha256, &mut digest)?;
            for (version, fixture) in VERSIONS {
                let new = NewVersion {
                    model: "digits".into(),
                    version: version.into(),
                    device_class: Some("mcu".into()),
                    image: model(fixture)?.into(),
                    set: Some(SetSource::Known(digest)),
                    min_accuracy_permille: None,
                    // The bad model measures far below what the devices run: refused.
                    max_drop_permille: Some(20),
                    // None raises it: every rollback stays possible.
                    raise_counter: false,
                };
                state.registry.add_version(new, "test").await?;
            }
            state.registry.run_delta_jobs().await?;
            if state.db.engine == mota_backend::db::Engine::Sqlite {
                sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)").execute(&state.db.pool).await?;
            }
            state.db.pool.close().await;
            Ok::<_, BoxError>(Template { dir, postgres })
        })
        .await
}

async fn admin(server: &str, sql: &str) -> Result<(), BoxError> {
    use sqlx::Connection;
    let mut conn = sqlx::PgConnection::connect(server).await?;
    sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_owned())).execute(&mut conn).await?;
    Ok(())
}

fn copy_dir(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_dir(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), target)?;
        }
    }
    Ok(())
}

/// What handling a device's message did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fate {
    /// Handled once.
    Once,
    /// Lost on the way.
    Dropped,
    /// Handled twice (a QoS 1 redelivery).
    Twice,
}

impl World {
    /// A world of `devices` devices (`d0`, `d1`, ...) running 1.0.0's image, connected
    /// and registered, at time `start` (Unix ms).
    pub async fn new(devices: usize, start: i64) -> Result<Self, BoxError> {
        let t = template().await?;
        let dir = tempfile::tempdir()?;
        let data = dir.path().join("data");
        copy_dir(&t.dir.path().join("data"), &data)?;
        let mut config = Config::embedded(data.clone());
        let mut postgres_db = None;
        if let Some((server, template)) = &t.postgres {
            let mut name = [0u8; 8];
            getrandom::fill(&mut name).map_err(|e| e.to_string())?;
            let name = format!("mota_control_{}", mota_backend::blobs::hex(&name));
            admin(server, &format!("CREATE DATABASE {name} TEMPLATE {template}")).await?;
            config.database_url = Some(format!("{}/{name}", server.rsplit_once('/').ok_or("no database")?.0));
            postgres_db = Some(name);
        }
        let clock = Arc::new(AtomicI64::new(start));
        let mut state = open(&config).await?;
        state.db = state.db.with_clock(Clock::Manual(clock.clone()));
        let bus = Arc::new(Bus::default());
        let _ = bus.db.set(state.db.clone());
        let publisher: Arc<dyn Publisher> = bus.clone();
        let engines = [Engine::with_publisher(&state, publisher.clone()), Engine::with_publisher(&state, publisher)];
        let limits = Limits { cache_bytes: 4 << 20, rate: 0.0, burst: 0.0 };
        let chunks = ChunkService::new(state.db.clone(), state.blobs.clone(), state.metrics.clone(), limits);
        let root = super::dev_root(&data)?;
        let factory: Arc<[u8]> = model(VERSIONS[0].1)?.into();
        let mut nodes = Vec::with_capacity(devices);
        for i in 0..devices {
            let opts = MemOptions {
                id: format!("d{i}"),
                class: "mcu".into(),
                roots: vec![root],
                factory: factory.clone(),
                // 1.0.0's counter, so a rollback to it is not a downgrade.
                factory_counter: 1,
            };
            nodes.push(Node { dev: MemDevice::new(opts)?, connected: false });
        }
        let mut world = Self {
            state,
            bus,
            engines,
            chunks,
            clock,
            devices: nodes,
            inbound: VecDeque::new(),
            reverts: HashMap::new(),
            postgres_db,
            dir,
        };
        for i in 0..devices {
            world.connect(i);
        }
        world.drain().await?;
        Ok(world)
    }

    /// Now, Unix ms.
    pub fn now(&self) -> i64 {
        self.clock.load(Ordering::SeqCst)
    }

    /// Moves the clock by `ms`.
    pub fn advance(&self, ms: i64) {
        self.clock.fetch_add(ms, Ordering::SeqCst);
    }

    fn device_now(&self) -> u64 {
        u64::try_from(self.now()).unwrap_or_default()
    }

    fn collect(&mut self, i: usize, out: Vec<(Kind, Vec<u8>)>) {
        let id = self.devices[i].dev.id().to_owned();
        let out: Vec<_> = out.into_iter().map(|(kind, payload)| (kind, self.as_reverted(&id, kind, payload))).collect();
        self.inbound.extend(out.into_iter().map(|(kind, payload)| (id.clone(), kind, payload)));
        // A device whose power failed drops its connection: the broker sends its will.
        if self.devices[i].dev.is_off() && self.devices[i].connected {
            self.drop_connection(i);
        }
    }

    /// Device `i` connects (if it runs and is not connected): its hello, then what the
    /// broker retained for it.
    pub fn connect(&mut self, i: usize) {
        if self.devices[i].connected || self.devices[i].dev.is_off() {
            return;
        }
        self.devices[i].connected = true;
        let now = self.device_now();
        let out = self.devices[i].dev.connect(now);
        self.collect(i, out);
        for kind in [Kind::Trust, Kind::Offer, Kind::Cmd] {
            let Ok(topic) = Topic::new(self.devices[i].dev.id(), kind) else { continue };
            if let Some(payload) = self.bus.retained(&topic.to_string())
                && self.devices[i].connected
            {
                let out = self.devices[i].dev.deliver(kind, &payload, now);
                self.collect(i, out);
            }
        }
    }

    /// Device `i`'s product never confirms the model the device committed last, so the
    /// device reverts it: back to its previous model, reporting `reverted`
    /// (`not_confirmed`, the reverted model's manifest) under the rollout that installed
    /// it, with a new report number, and again after every boot and reconnect until its
    /// next report, as the agent holds a terminal report. The simulated devices run
    /// without a product trial (`trial_boots` 0), so the switch back is the agent's own
    /// rollback, on a command signed here with the release key, and its report is
    /// rewritten as the one the agent sends when it reverts a trial. Only a
    /// connected, idle device whose last report is that commit can revert; returns
    /// whether it did (the report is in `inbound`).
    pub fn revert(&mut self, i: usize) -> Result<bool, BoxError> {
        use mota_proto::command::COMMAND_FORMAT_VERSION;
        use mota_proto::message::Event;
        use mota_proto::{Action, CommandBody, Target};
        let node = &self.devices[i];
        let Some(state) = node.dev.state().filter(|_| node.connected && node.dev.is_idle()) else { return Ok(false) };
        let (Some(report), Some(current), Some(previous)) = (state.report, state.current, state.previous) else {
            return Ok(false);
        };
        let Some(manifest) =
            current.manifest.filter(|&m| report.event == Event::Committed && report.manifest == Some(m))
        else {
            return Ok(false);
        };
        let body = CommandBody {
            format: COMMAND_FORMAT_VERSION,
            device: node.dev.id(),
            rollout_id: report.rollout,
            action: Action::Rollback,
            subject: manifest,
            target: Some(Target { image: previous.sha256, manifest: previous.manifest }),
        };
        let signed = self.state.signer.release.sign_command(&body)?;
        let now = self.device_now();
        let out = self.devices[i].dev.deliver(Kind::Cmd, &signed, now);
        let id = self.devices[i].dev.id().to_owned();
        // Its answer: the rollback's report, or a refusal (the device keeps the model,
        // and says nothing of a trial it did not fail).
        let back = out.iter().find_map(|(kind, payload)| match Payload::parse(*kind, payload) {
            Ok(Payload::Status(s)) if s.event == Event::RolledBack && s.rollout_id == report.rollout => Some(s.seq),
            _ => None,
        });
        let Some(seq) = back else {
            self.collect(i, out.into_iter().filter(|(kind, _)| *kind != Kind::Status).collect());
            return Ok(false);
        };
        self.reverts.insert((id, report.rollout, seq), manifest);
        self.collect(i, out);
        Ok(true)
    }

    /// A report of a device's rollback that stands for its revert (see [`World::revert`])
    /// as the revert's report; anything else as it is.
    fn as_reverted(&self, device: &str, kind: Kind, payload: Vec<u8>) -> Vec<u8> {
        use mota_proto::message::{ErrorCode, Event, Status};
        let rewritten = match Payload::parse(kind, &payload) {
            Ok(Payload::Status(s)) if s.event == Event::RolledBack => {
                self.reverts.get(&(device.to_owned(), s.rollout_id, s.seq)).and_then(|&manifest| {
                    let reverted = Status {
                        event: Event::Reverted,
                        error: Some(ErrorCode::NOT_CONFIRMED),
                        manifest: Some(manifest),
                        rollback_target: None,
                        ..s
                    };
                    reverted.to_vec().ok()
                })
            }
            _ => None,
        };
        rewritten.unwrap_or(payload)
    }

    /// Revocation list `seq` of `keys`, signed by the development root (as `mota keys
    /// revoke` would).
    pub fn revocation(&self, seq: u32, keys: &[mota_proto::KeyId]) -> Result<Vec<u8>, BoxError> {
        let pem = std::fs::read_to_string(self.dir.path().join("data/keys/dev-root.key.pem"))?;
        match mota_proto::keys::KeyFile::from_pem(&pem) {
            Ok(mota_proto::keys::KeyFile::Private(root)) => Ok(mota_proto::sign::revoke(&root, seq, keys)?),
            _ => Err("dev-root.key.pem is not a private key".into()),
        }
    }

    /// Device `i`'s connection drops: the broker publishes its last will.
    pub fn drop_connection(&mut self, i: usize) {
        if !std::mem::replace(&mut self.devices[i].connected, false) {
            return;
        }
        let will = Hello::OFFLINE.to_vec().unwrap_or_default();
        self.inbound.push_back((self.devices[i].dev.id().to_owned(), Kind::Hello, will));
    }

    /// Arms a power cut `after` flash operations ahead on device `i`.
    pub fn arm_cut(&mut self, i: usize, after: u64, mode: CutMode, seed: u64) {
        self.devices[i].dev.arm_cut(after, mode, seed);
    }

    /// Device `i` restarts (power back, or a reset) and connects.
    pub fn reboot(&mut self, i: usize) -> Result<(), BoxError> {
        self.drop_connection(i);
        self.devices[i].dev.reboot()?;
        self.connect(i);
        Ok(())
    }

    /// Time passes on device `i` (its poll).
    pub fn poll(&mut self, i: usize) {
        if self.devices[i].dev.is_off() {
            return;
        }
        let now = self.device_now();
        let out = self.devices[i].dev.poll(now);
        self.collect(i, out);
    }

    /// Delivers the next message the backend published; false when none is left.
    pub fn deliver(&mut self) -> bool {
        let Some(msg) = self.bus.pop() else { return false };
        let Ok(topic) = Topic::parse(&msg.topic) else { return true };
        let Some(i) = self.devices.iter().position(|n| n.dev.id() == topic.device()) else { return true };
        if self.devices[i].connected && !self.devices[i].dev.is_off() {
            let now = self.device_now();
            let out = self.devices[i].dev.deliver(topic.kind(), &msg.payload, now);
            self.collect(i, out);
        }
        true
    }

    /// Handles the device message at `index` of `inbound` (0: the oldest), as `fate`
    /// says; false when there is none.
    pub async fn handle(&mut self, index: usize, fate: Fate) -> Result<bool, BoxError> {
        let Some((device, kind, payload)) = self.inbound.remove(index) else { return Ok(false) };
        let times = match fate {
            Fate::Once => 1,
            Fate::Dropped => 0,
            Fate::Twice => 2,
        };
        for _ in 0..times {
            self.dispatch(&device, kind, &payload).await?;
        }
        Ok(true)
    }

    /// What the backend's MQTT handler does with a device's message (a status report
    /// goes to the writer's `ingest`, here one at a time).
    async fn dispatch(&self, device: &str, kind: Kind, payload: &[u8]) -> Result<(), BoxError> {
        let db = &self.state.db;
        match Payload::parse(kind, payload) {
            Ok(Payload::Hello(hello)) => {
                registry::hello(db, device, &hello, registry::Registration::Auto).await?;
            }
            Ok(Payload::Status(_)) => {
                reports::ingest(db, &[(device, payload)]).await?;
                for e in &self.engines {
                    e.wake.notify_one();
                }
            }
            Ok(Payload::Get(get)) => {
                let get: Get = get;
                self.chunks.serve(&*self.bus, device, &get).await?;
            }
            Ok(_) | Err(_) => {}
        }
        Ok(())
    }

    /// One engine's tick (commands, every live rollout).
    pub async fn tick(&self, engine: usize) -> Result<(), BoxError> {
        self.engines[engine].tick().await?;
        Ok(())
    }

    /// The first half of an engine's step: what it would decide now.
    pub async fn plan(&self, engine: usize, rollout: i64) -> Result<Option<(Snapshot, Vec<Decision>)>, BoxError> {
        Ok(self.engines[engine].snapshot(rollout).await?.map(|s| {
            let d = decide(&s);
            (s, d)
        }))
    }

    /// The second half: executes decisions taken earlier (maybe on a stale snapshot).
    pub async fn execute(&self, engine: usize, planned: &(Snapshot, Vec<Decision>)) -> Result<(), BoxError> {
        self.engines[engine].apply(&planned.0, &planned.1).await?;
        Ok(())
    }

    /// Creates a rollout (`body` as the API takes it).
    pub async fn create(&self, body: serde_json::Value) -> Result<i64, mota_backend::rollout::RolloutError> {
        let new: NewRollout =
            serde_json::from_value(body).map_err(|e| mota_backend::rollout::RolloutError::Invalid(e.to_string()))?;
        let (_, id) = create(&self.state.db, &new, "ops").await?;
        id.ok_or_else(|| mota_backend::rollout::RolloutError::Invalid("dry run".into()))
    }

    /// An operator's action.
    pub async fn act(&self, id: i64, action: Action) -> Result<(), mota_backend::rollout::RolloutError> {
        actions::apply(&self.state.db, id, action, "ops", None).await
    }

    /// Everything settles with nothing lost: messages delivered and handled until none
    /// is left, devices polled, engines ticked, `rounds` times at most.
    pub async fn drain(&mut self) -> Result<(), BoxError> {
        for _ in 0..10_000 {
            let mut moved = false;
            while self.deliver() {
                moved = true;
            }
            while self.handle(0, Fate::Once).await? {
                moved = true;
            }
            if !moved {
                return Ok(());
            }
        }
        Err("the bus never went quiet".into())
    }

    /// Runs the system to rest: every device up and connected, messages delivered,
    /// devices polled and engines ticked while time moves on, until nothing has changed
    /// for 250 s of it (past the agents' retries, the engine's 30 s nudge and the
    /// schedules' 60 s stuck timeout and 120 s offline limit), `rounds` at most.
    pub async fn settle(&mut self, step_ms: i64, rounds: usize) -> Result<(), BoxError> {
        for i in 0..self.devices.len() {
            if self.devices[i].dev.is_off() {
                self.reboot(i)?;
            }
            self.connect(i);
        }
        let mut quiet = 0;
        for _ in 0..rounds {
            let before = (self.bus.seq(), self.fingerprint().await?);
            self.advance(step_ms);
            for i in 0..self.devices.len() {
                self.poll(i);
            }
            self.drain().await?;
            for e in 0..self.engines.len() {
                self.tick(e).await?;
                self.drain().await?;
            }
            if (self.bus.seq(), self.fingerprint().await?) == before {
                quiet += step_ms;
                if quiet >= 250_000 {
                    return Ok(());
                }
            } else {
                quiet = 0;
            }
        }
        Ok(())
    }

    /// The control plane's state in one string, to see when nothing changes.
    async fn fingerprint(&self) -> Result<String, BoxError> {
        let rows: Vec<(i64, String, String)> =
            sqlx::query_as("SELECT rollout_id, device_id, state FROM attempts ORDER BY rollout_id, device_id")
                .fetch_all(&self.state.db.pool)
                .await?;
        let rollouts: Vec<(i64, String)> =
            sqlx::query_as("SELECT id, state FROM rollouts ORDER BY id").fetch_all(&self.state.db.pool).await?;
        Ok(format!("{rows:?}{rollouts:?}"))
    }

    /// (device, what the backend records it runs) for every device.
    pub async fn recorded_running(&self) -> Result<HashMap<String, Option<String>>, BoxError> {
        let rows: Vec<(String, Option<String>)> =
            sqlx::query_as("SELECT id, running_sha256 FROM devices").fetch_all(&self.state.db.pool).await?;
        Ok(rows.into_iter().collect())
    }

    /// The image SHA-256 (hex) of a version.
    pub async fn image(&self, version: &str) -> Result<String, BoxError> {
        Ok(sqlx::query_scalar("SELECT image_sha256 FROM model_versions WHERE version = $1")
            .bind(version)
            .fetch_one(&self.state.db.pool)
            .await?)
    }

    /// (device, state) of a rollout's attempts.
    pub async fn attempts(&self, rollout: i64) -> Result<Vec<(String, String)>, BoxError> {
        Ok(sqlx::query_as("SELECT device_id, state FROM attempts WHERE rollout_id = $1 ORDER BY device_id")
            .bind(rollout)
            .fetch_all(&self.state.db.pool)
            .await?)
    }

    /// A rollout's state and reason.
    pub async fn rollout(&self, rollout: i64) -> Result<(String, Option<String>), BoxError> {
        Ok(sqlx::query_as("SELECT state, reason FROM rollouts WHERE id = $1")
            .bind(rollout)
            .fetch_one(&self.state.db.pool)
            .await?)
    }

    /// Closes the world's connections and, on PostgreSQL, drops its database (thousands
    /// of schedules would otherwise keep thousands).
    pub async fn close(self) -> Result<(), BoxError> {
        self.state.db.pool.close().await;
        self.state.registry.db.pool.close().await;
        if let (Some((server, _)), Some(name)) = (&template().await?.postgres, &self.postgres_db) {
            admin(server, &format!("DROP DATABASE {name} WITH (FORCE)")).await?;
        }
        Ok(())
    }

    /// The data directory (keys, blobs, the SQLite file).
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }
}
