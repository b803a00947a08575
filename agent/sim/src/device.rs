//! One simulated device: boots the agent on its flash, keeps an MQTT connection, feeds
//! the agent every message and a timer tick, and reboots after a power cut.

use std::cell::RefCell;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use embedded_storage::nor_flash::NorFlash;
use mota_agent::{
    Agent, AgentError, Clock, Config, Factory, MapStore, RuntimeValidator, SUBSCRIPTIONS, SlotMemory, Transport, Work,
};
use mota_proto::message::Hello;
use mota_proto::topic::{Kind, Topic};
use mota_proto::{Digest, Limits, Wire};
use mota_simflash::{CutMode, Geometry, Region, SimFlash};
use rumqttc::{AsyncClient, Event, LastWill, MqttOptions, Packet, QoS};

/// The simulated part: 4-byte program units, 4 KiB sectors, erased 0xFF, multiwrite.
pub type Part = SimFlash<4, 4096, true>;
type Slot = Region<Part>;
/// The agent of a simulated device.
pub(crate) type SimAgent<'c> = Agent<'c, Slot, MapStore<Slot>, RuntimeValidator<MappedSlots, UsClock>>;

/// State region: 4 sectors.
pub const STATE_LEN: u32 = 4 * 4096;
/// Each model slot.
pub const SLOT_LEN: u32 = 128 * 1024;
/// Tensor arena of a simulated device.
pub const ARENA: usize = 64 * 1024;
/// Largest chunk a device asks for.
pub const CHUNK: u32 = 4096;

/// Why a device stopped.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// The flash file could not be opened.
    #[error("flash file {0}: {1}")]
    Flash(PathBuf, String),
    /// The factory model does not fit or does not load.
    #[error("factory model: {0}")]
    Factory(String),
    /// The agent refused to start (configuration).
    #[error("agent: {0}")]
    Agent(AgentError),
    /// The device id cannot be a topic level.
    #[error("device id {0:?}: {1}")]
    Id(String, String),
}

/// Faults to inject.
#[derive(Debug, Clone, Copy, Default)]
pub struct Faults {
    /// Chance that a boot schedules a power cut within its next 400 flash operations.
    pub cut_probability: f64,
    /// At most this many cuts over the device's life (so updates still finish).
    pub max_cuts: u32,
    /// Drop the connection this often.
    pub disconnect_every: Option<Duration>,
    /// Delay before each received message is handled (a slow link).
    pub message_delay: Duration,
}

/// What a device is.
#[derive(Debug, Clone)]
pub struct DeviceOptions {
    /// Device id (the `{device}` topic level).
    pub id: String,
    /// Broker host.
    pub host: String,
    /// Broker port.
    pub port: u16,
    /// MQTT password from provisioning (username and client id are the device id), for
    /// a broker that admits provisioned devices only; `None`: no login (an open broker).
    pub password: Option<String>,
    /// Device class.
    pub class: String,
    /// Trusted root public keys.
    pub roots: Vec<[u8; 32]>,
    /// The factory model, flashed into slot 0 of a fresh part.
    pub factory: Arc<[u8]>,
    /// Its security counter.
    pub factory_counter: u32,
    /// Where the flash lives across restarts (`None`: in memory).
    pub flash_file: Option<PathBuf>,
    /// Faults.
    pub faults: Faults,
    /// Seed for the fault dice.
    pub seed: u64,
    /// MQTT keep-alive. A real device has a core of its own; thousands of simulated ones
    /// share a few, and one that waits its turn longer than 1.5 keep-alives is
    /// disconnected by the broker for a silence the simulator caused. Large fleets on
    /// small machines raise it.
    pub keep_alive: Duration,
}

impl DeviceOptions {
    /// The keep-alive devices use unless told otherwise.
    pub const KEEP_ALIVE: Duration = Duration::from_secs(30);
}

/// What a device has done, for observers (the fleet report, tests).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeviceStatus {
    /// Boots so far.
    pub boots: u32,
    /// Power cuts injected.
    pub cuts: u32,
    /// Connections made.
    pub connects: u32,
    /// Digest of the model the device runs.
    pub running: Option<Digest>,
    /// Its version.
    pub version: String,
    /// The device's security counter.
    pub counter: u32,
}

/// Runs the device until its task is dropped; `status` is kept current.
pub async fn run_device(opts: DeviceOptions, status: Rc<RefCell<DeviceStatus>>) -> Result<(), SimError> {
    check_id(&opts.id)?;
    let part = Rc::new(RefCell::new(open_part(&opts.factory, opts.flash_file.as_deref())?));
    let config = config(&opts.id, &opts.class, &opts.roots, &opts.factory, opts.factory_counter)?;
    let mut dice = opts.seed | 1;
    loop {
        part.borrow_mut().restore_power();
        let cut_ops = schedule_cut(&opts, &part, &status, &mut dice);
        let mut arena = vec![0u8; ARENA];
        let agent = boot(config, &part, &mut arena);
        let mut agent = match agent {
            Ok(agent) => agent,
            Err(_) if part.borrow().is_cut() => continue,
            Err((e, _)) => return Err(SimError::Agent(e)),
        };
        status.borrow_mut().boots += 1;
        observe(&agent, &mut status.borrow_mut());
        // One boot: connect (again after drops) until the power fails.
        loop {
            match session(&opts, &mut agent, &status, &mut dice).await {
                Ended::PowerCut => break,
                Ended::Disconnected => continue,
            }
        }
        tracing::debug!(device = %opts.id, ?cut_ops, "power cut: rebooting");
    }
}

/// The device id must be a topic level.
pub(crate) fn check_id(id: &str) -> Result<(), SimError> {
    mota_proto::topic::check_device_id(id).map_err(|e| SimError::Id(id.to_owned(), e.to_string()))
}

/// The device's part (kept in `flash_file`, or in memory): the state region, then the two
/// slots; a fresh one gets `factory` in slot 0.
pub(crate) fn open_part(factory: &[u8], flash_file: Option<&Path>) -> Result<Part, SimError> {
    let geometry = Geometry::uniform(((STATE_LEN + 2 * SLOT_LEN) / 4096) as usize, 4096, 4, 0xFF)
        .map_err(|e| SimError::Factory(e.to_string()))?;
    let mut part = match flash_file {
        Some(path) => {
            SimFlash::with_file(geometry, path).map_err(|e| SimError::Flash(path.to_path_buf(), e.to_string()))?
        }
        None => SimFlash::new(geometry),
    };
    // A fresh part (slot 0 erased) gets the factory image, as production would flash it.
    let fresh = part.contents()[STATE_LEN as usize..STATE_LEN as usize + 4].iter().all(|&b| b == 0xFF);
    if fresh {
        if factory.len() > SLOT_LEN as usize {
            return Err(SimError::Factory("larger than a slot".into()));
        }
        let mut image = factory.to_vec();
        image.resize(image.len().next_multiple_of(4), 0xFF);
        part.write(STATE_LEN, &image).map_err(|e| SimError::Factory(e.to_string()))?;
    }
    Ok(part)
}

/// What makes two devices' configurations the same.
type ConfigKey = (String, String, Vec<[u8; 32]>, Digest, u32);

/// Configurations made so far: the agent borrows its configuration for the process' life,
/// so each is leaked, once per distinct one (the model-based tests boot the same device
/// ids in thousands of schedules).
static CONFIGS: Mutex<Option<HashMap<ConfigKey, &'static Config<'static>>>> = Mutex::new(None);

/// The agent's configuration for device `id` of `class` trusting `roots`, shipped with
/// `factory` (security counter `factory_counter`) in slot 0.
pub(crate) fn config(
    id: &str,
    class: &str,
    roots: &[[u8; 32]],
    factory: &[u8],
    factory_counter: u32,
) -> Result<&'static Config<'static>, SimError> {
    let key = (id.to_owned(), class.to_owned(), roots.to_vec(), Digest::of(factory), factory_counter);
    let mut configs = CONFIGS.lock().unwrap_or_else(PoisonError::into_inner);
    let configs = configs.get_or_insert_with(HashMap::new);
    if let Some(config) = configs.get(&key) {
        return Ok(config);
    }
    let config: &'static Config<'static> =
        Box::leak(Box::new(make_config(id, class, roots, factory, factory_counter)?));
    configs.insert(key, config);
    Ok(config)
}

fn make_config(
    id: &str,
    class: &str,
    roots: &[[u8; 32]],
    factory: &[u8],
    factory_counter: u32,
) -> Result<Config<'static>, SimError> {
    let model = mota_runtime::Model::parse(factory).map_err(|e| SimError::Factory(e.to_string()))?;
    let arena = mota_runtime::arena_size(&model).map_err(|e| SimError::Factory(e.to_string()))?;
    let id: &'static str = Box::leak(id.to_owned().into_boxed_str());
    let class: &'static str = Box::leak(class.to_owned().into_boxed_str());
    let roots: &'static [[u8; 32]] = Box::leak(roots.to_vec().into_boxed_slice());
    Ok(Config {
        device_id: id,
        device_class: class,
        agent_version: concat!("mota-sim-", env!("CARGO_PKG_VERSION")),
        roots,
        crypto: &mota_proto::Software,
        limits: Limits {
            max_image_bytes: SLOT_LEN,
            max_patch_bytes: 1024 * 1024,
            max_arena_bytes: ARENA as u32,
            max_validation_bytes: SLOT_LEN,
        },
        erased: 0xFF,
        chunk_bytes: CHUNK,
        retry_ms: 5_000,
        max_trials: 2,
        trial_boots: 0,
        work: Work::default(),
        leases: None,
        factory: Some(Factory {
            size: factory.len() as u32,
            name: "factory",
            version: "factory",
            counter: factory_counter,
            arena_bytes: arena as u32,
        }),
    })
}

/// Boots the agent on `part`; a failed boot gives `arena` back with the error.
pub(crate) fn boot<'c>(
    config: &'c Config<'c>,
    part: &Rc<RefCell<Part>>,
    arena: &'c mut [u8],
) -> Result<SimAgent<'c>, (AgentError, &'c mut [u8])> {
    let slots = [Region::new(part, STATE_LEN, SLOT_LEN), Region::new(part, STATE_LEN + SLOT_LEN, SLOT_LEN)];
    let state = match MapStore::new(Region::new(part, 0, STATE_LEN), 0xFF) {
        Ok(state) => state,
        Err(e) => return Err((e.into(), arena)),
    };
    let memory = MappedSlots(Rc::clone(part));
    Agent::boot_or_return_arena(config, slots, state, RuntimeValidator { memory, clock: UsClock }, arena)
}

/// Copies what the agent runs into `s`.
pub(crate) fn observe(agent: &SimAgent<'_>, s: &mut DeviceStatus) {
    let model = agent.active_model();
    s.running = model.map(|m| m.installed.sha256);
    s.version = model.map(|m| m.installed.version.as_str().to_owned()).unwrap_or_default();
    s.counter = agent.state().counter;
}

/// Maybe arms a power cut somewhere in the next 400 flash operations of this boot.
fn schedule_cut(
    opts: &DeviceOptions,
    part: &Rc<RefCell<Part>>,
    status: &Rc<RefCell<DeviceStatus>>,
    dice: &mut u64,
) -> Option<u64> {
    let f = opts.faults;
    if status.borrow().cuts >= f.max_cuts || roll(dice) >= f.cut_probability {
        return None;
    }
    let mut p = part.borrow_mut();
    let at = p.stats().mutating() + 1 + (next(dice) % 400);
    let mode = [CutMode::Before, CutMode::TearPrefix, CutMode::TearBits][(next(dice) % 3) as usize];
    p.seed(next(dice));
    p.cut_at(at, mode);
    status.borrow_mut().cuts += 1;
    Some(at)
}

/// The fault dice: xorshift64 over `dice` (never 0), for faults a seed replays.
pub fn next(dice: &mut u64) -> u64 {
    *dice ^= *dice << 13;
    *dice ^= *dice >> 7;
    *dice ^= *dice << 17;
    *dice
}

/// A number in [0, 1) from the dice.
pub fn roll(dice: &mut u64) -> f64 {
    (next(dice) >> 11) as f64 / (1u64 << 53) as f64
}

enum Ended {
    PowerCut,
    Disconnected,
}

/// One MQTT connection's life.
async fn session(
    opts: &DeviceOptions,
    agent: &mut SimAgent<'_>,
    status: &Rc<RefCell<DeviceStatus>>,
    dice: &mut u64,
) -> Ended {
    let mut mqtt = MqttOptions::new(opts.id.clone(), opts.host.clone(), opts.port);
    mqtt.set_keep_alive(opts.keep_alive);
    mqtt.set_max_packet_size(64 * 1024, 64 * 1024);
    if let Some(password) = &opts.password {
        mqtt.set_credentials(opts.id.clone(), password.clone());
    }
    let offline = Hello::OFFLINE.to_vec().unwrap_or_default();
    mqtt.set_last_will(LastWill::new(
        Topic::new(&opts.id, Kind::Hello).map(|t| t.to_string()).unwrap_or_default(),
        offline,
        QoS::AtLeastOnce,
        false,
    ));
    let (client, mut events) = AsyncClient::new(mqtt, 64);
    let mut net = Net { client: client.clone(), id: opts.id.clone() };
    let clock = SimClock(tokio::time::Instant::now());
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    let drop_after = opts.faults.disconnect_every.map(|d| d.mul_f64(0.5 + roll(dice)));
    let drop_at = tokio::time::sleep(drop_after.unwrap_or(Duration::from_secs(u64::from(u32::MAX))));
    tokio::pin!(drop_at);
    loop {
        let step = tokio::select! {
            event = events.poll() => match event {
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    status.borrow_mut().connects += 1;
                    for kind in SUBSCRIPTIONS {
                        if let Ok(topic) = Topic::new(&opts.id, kind) {
                            let _ = client.try_subscribe(topic.to_string(), QoS::AtLeastOnce);
                        }
                    }
                    agent.hello(&mut net, &clock)
                }
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    if !opts.faults.message_delay.is_zero() {
                        tokio::time::sleep(opts.faults.message_delay).await;
                    }
                    match Topic::parse(&p.topic) {
                        Ok(t) if t.device() == opts.id => agent.handle(t.kind(), &p.payload, &mut net, &clock),
                        _ => Ok(()),
                    }
                }
                Ok(_) => Ok(()),
                Err(e) => {
                    tracing::debug!(device = %opts.id, "mqtt: {e}");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    Ok(())
                }
            },
            _ = tick.tick() => agent.poll(&mut net, &clock),
            () = &mut drop_at => {
                let _ = client.try_disconnect();
                return Ended::Disconnected;
            }
        };
        observe(agent, &mut status.borrow_mut());
        if step.is_err() {
            // The flash lost power (a scheduled cut) or failed: the device reboots.
            return Ended::PowerCut;
        }
    }
}

/// The agent's MQTT side: publishes on the device's own topics, QoS 1.
struct Net {
    client: AsyncClient,
    id: String,
}

impl Transport for Net {
    type Error = ();

    fn publish(&mut self, kind: Kind, payload: &[u8]) -> Result<(), ()> {
        let topic = Topic::new(&self.id, kind).map_err(|_| ())?.to_string();
        self.client.try_publish(topic, QoS::AtLeastOnce, false, payload.to_vec()).map_err(|_| ())
    }
}

struct SimClock(tokio::time::Instant);

impl Clock for SimClock {
    fn now_ms(&self) -> u64 {
        self.0.elapsed().as_millis() as u64
    }

    fn unix_time(&self) -> Option<u64> {
        unix_now()
    }
}

/// The host's Unix time, what a simulated device's RTC says.
pub(crate) fn unix_now() -> Option<u64> {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).ok().map(|d| d.as_secs())
}

/// Latency timer for the validator.
pub struct UsClock;

impl mota_runtime::validation::Clock for UsClock {
    fn now_us(&self) -> u64 {
        std::time::UNIX_EPOCH.elapsed().map_or(0, |d| d.as_micros() as u64)
    }
}

/// Both slots, read straight from the part (memory-mapped flash on a real device).
pub struct MappedSlots(Rc<RefCell<Part>>);

impl SlotMemory for MappedSlots {
    fn with_slots<R>(&mut self, f: impl FnOnce([&[u8]; 2]) -> R) -> R {
        let part = self.0.borrow();
        let bytes = part.contents();
        let (a, b) = (STATE_LEN as usize, (STATE_LEN + SLOT_LEN) as usize);
        f([&bytes[a..a + SLOT_LEN as usize], &bytes[b..b + SLOT_LEN as usize]])
    }
}
