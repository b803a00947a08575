//! The world of the session's tests: a real MQTT broker (rumqttd in-process with a v5
//! listener, or the broker at `MOTA_TEST_BROKER`), an observer on the backend's side of
//! it (rumqttc, MQTT v5), and a device: the real agent on simulated flash, its session
//! over a real TCP connection to the broker. Nothing here stands in for the broker, the
//! agent or minimq; the one thing the tests control is the line between device and
//! broker ([`TcpLink`]): they can cut it and put bytes on it.
#![allow(dead_code)] // each test binary uses its own subset

use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use embedded_io::ErrorKind;
use mota_agent::{
    Agent, AgentError, Clock, Config, Factory, Located, MapStore, Measurement, Run, RuntimeValidator, SlotMemory,
    Validator, Work,
};
use mota_agent_mqtt::{Progress, Session, SessionConfig, buffer_len};
use mota_proto::message::{Chunk, ErrorCode, Get, Hello, Refusal, Status};
use mota_proto::topic::{Kind, Topic};
use mota_proto::{Digest, Envelope, Image, KeyId, Limits, Manifest, RootSigned, Validation, Wire};
use mota_simflash::{Geometry, Region, SimFlash};

pub type BoxError = Box<dyn std::error::Error>;
pub type TestResult = Result<(), BoxError>;

/// How long any one wait may take before the test fails (a stuck session, not a slow one).
pub const PATIENCE: Duration = Duration::from_secs(30);

// ---- the broker ------------------------------------------------------------------------

/// Where the broker listens.
#[derive(Debug, Clone)]
pub struct Broker {
    pub host: String,
    pub port: u16,
}

impl Broker {
    /// `host:port`.
    pub fn addr(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }
}

/// The broker of this test binary: the one at `MOTA_TEST_BROKER` (HOST:PORT; CI runs
/// Mosquitto 2.0 there), or rumqttd started once in-process with an MQTT v5 listener
/// (minimq speaks only v5).
pub fn broker() -> Result<Broker, BoxError> {
    static BROKER: OnceLock<Result<Broker, String>> = OnceLock::new();
    BROKER.get_or_init(|| start_broker().map_err(|e| e.to_string())).clone().map_err(Into::into)
}

fn start_broker() -> Result<Broker, BoxError> {
    if let Ok(addr) = std::env::var("MOTA_TEST_BROKER") {
        let (host, port) = addr.rsplit_once(':').ok_or("MOTA_TEST_BROKER must be HOST:PORT")?;
        return Ok(Broker { host: host.to_owned(), port: port.parse()? });
    }
    let port = mota_sim::broker::free_port()?;
    mota_sim::broker::start_v5(format!("127.0.0.1:{port}").parse()?)?;
    Ok(Broker { host: "127.0.0.1".into(), port })
}

/// A device id no other test (of this run, or of another run on a shared broker) uses.
pub fn device_id(test: &str) -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    format!("mqtt-{}-{}-{test}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed))
}

/// The topic `kind` of `device`.
pub fn topic(device: &str, kind: Kind) -> String {
    let mut buf = [0u8; mota_proto::topic::MAX_TOPIC_LEN];
    match Topic::new(device, kind).and_then(|t| t.write(&mut buf)) {
        Ok(topic) => topic.to_owned(),
        Err(e) => panic!("no topic for device {device:?}: {e:?}"),
    }
}

// ---- the observer ----------------------------------------------------------------------

/// A message the observer received.
#[derive(Debug, Clone)]
pub struct Heard {
    pub topic: String,
    pub payload: Vec<u8>,
}

/// The backend's side of the broker: subscribed to everything under one device's topics,
/// and publishing to any topic. MQTT v5 (rumqttc), which both rumqttd's v5 listener and
/// Mosquitto take.
pub struct Observer {
    client: rumqttc::v5::Client,
    heard: Arc<Mutex<Vec<Heard>>>,
    stop: Arc<AtomicBool>,
    device: String,
}

impl Observer {
    /// Connects and subscribes to `mota/v1/dev/{device}/#`; returns once the broker granted it.
    pub fn new(broker: &Broker, device: &str) -> Result<Self, BoxError> {
        use rumqttc::v5::mqttbytes::QoS;
        use rumqttc::v5::mqttbytes::v5::Packet;
        use rumqttc::v5::{Client, Event, MqttOptions};

        let mut options = MqttOptions::new(format!("observer-{device}"), broker.host.clone(), broker.port);
        options.set_keep_alive(Duration::from_secs(30));
        let (client, mut connection) = Client::new(options, 64);
        client.subscribe(format!("mota/v1/dev/{device}/#"), QoS::AtLeastOnce)?;
        let heard = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (granted_tx, granted) = std::sync::mpsc::channel();
        {
            let (heard, stop) = (Arc::clone(&heard), Arc::clone(&stop));
            std::thread::Builder::new().name(format!("observer-{device}")).spawn(move || {
                for event in connection.iter() {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    match event {
                        Ok(Event::Incoming(Packet::Publish(p))) => {
                            let topic = String::from_utf8_lossy(&p.topic).into_owned();
                            heard
                                .lock()
                                .unwrap_or_else(|e| e.into_inner())
                                .push(Heard { topic, payload: p.payload.to_vec() });
                        }
                        Ok(Event::Incoming(Packet::SubAck(_))) => {
                            let _ = granted_tx.send(());
                        }
                        Ok(_) => {}
                        // rumqttc reconnects on the next iteration; don't spin meanwhile.
                        Err(_) => std::thread::sleep(Duration::from_millis(50)),
                    }
                }
            })?;
        }
        granted.recv_timeout(PATIENCE).map_err(|_| "the observer's subscription was not granted")?;
        Ok(Self { client, heard, stop, device: device.to_owned() })
    }

    /// Publishes `payload` on `topic` (QoS 1).
    pub fn publish(&self, topic: &str, payload: &[u8], retain: bool) -> Result<(), BoxError> {
        self.client.publish(topic, rumqttc::v5::mqttbytes::QoS::AtLeastOnce, retain, payload.to_vec())?;
        Ok(())
    }

    /// Everything heard on the device's topic `kind`, in order.
    pub fn heard(&self, kind: Kind) -> Vec<Vec<u8>> {
        let topic = topic(&self.device, kind);
        let heard = self.heard.lock().unwrap_or_else(|e| e.into_inner());
        heard.iter().filter(|h| h.topic == topic).map(|h| h.payload.clone()).collect()
    }

    /// The device's hellos so far: `true` for online ones, `false` for its will.
    pub fn hellos(&self) -> Result<Vec<bool>, BoxError> {
        let mut hellos = Vec::new();
        for payload in self.heard(Kind::Hello) {
            let hello = Hello::parse(&payload)?;
            if hello.online != hello.info.is_some() {
                return Err(format!("a hello that is online exactly when it has no info: {hello:?}").into());
            }
            hellos.push(hello.online);
        }
        Ok(hellos)
    }

    /// The device's status reports so far, decoded: (rollout, seq, manifest, error code).
    pub fn statuses(&self) -> Result<Vec<Seen>, BoxError> {
        self.heard(Kind::Status)
            .iter()
            .map(|payload| {
                let s = Status::parse(payload)?;
                Ok(Seen { rollout: s.rollout_id, seq: s.seq, manifest: s.manifest, error: s.error.map(|e| e.0) })
            })
            .collect()
    }
}

impl Drop for Observer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.client.try_disconnect();
    }
}

/// A status report as the observer decoded it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    pub rollout: u64,
    pub seq: u32,
    pub manifest: Option<Digest>,
    pub error: Option<u16>,
}

/// An offer that decodes but whose signatures are zeros: the agent refuses it without
/// touching flash, naming `body`'s digest in its report (so a test can tell which of
/// several offers a report answers). Returns the offer and that digest.
pub fn forged_offer(body: &str) -> Result<(Vec<u8>, Digest), BoxError> {
    let certificate = RootSigned { body: b"not a certificate", issuer: KeyId([0; 8]), signature: [0; 64] };
    let envelope = Envelope { body: body.as_bytes(), key_id: KeyId([0; 8]), signature: [0; 64], certificate };
    Ok((envelope.to_vec()?, Digest::of(body.as_bytes())))
}

/// An MQTT v5 PUBLISH packet (QoS 0, no properties) as a broker sends it.
pub fn publish_packet(topic: &str, payload: &[u8]) -> Vec<u8> {
    let mut body = Vec::new();
    body.extend_from_slice(&(topic.len() as u16).to_be_bytes());
    body.extend_from_slice(topic.as_bytes());
    body.push(0); // property length
    body.extend_from_slice(payload);
    let mut packet = vec![0x30];
    let mut len = body.len();
    loop {
        let byte = (len % 128) as u8;
        len /= 128;
        packet.push(if len > 0 { byte | 0x80 } else { byte });
        if len == 0 {
            break;
        }
    }
    packet.extend_from_slice(&body);
    packet
}

// ---- a signed update -------------------------------------------------------------------

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../runtime/fixtures/models/");

/// A fixture model's bytes.
pub fn model(name: &str) -> Result<Vec<u8>, BoxError> {
    Ok(std::fs::read(format!("{FIXTURES}{name}.tflite"))?)
}

/// A validation set of every record the fixture `name` has (its inputs and labels);
/// returns the set and its record count.
pub fn full_set(name: &str) -> Result<(Vec<u8>, usize), BoxError> {
    let read = |suffix: &str| -> Result<mota_runtime::npy::Npy, BoxError> {
        let bytes = std::fs::read(format!("{FIXTURES}{name}.{suffix}.npy"))?;
        mota_runtime::npy::Npy::parse(&bytes).map_err(|e| format!("{e:?}").into())
    };
    let (x, y) = (read("inputs")?, read("labels")?);
    let labels: Vec<u16> = y.data.chunks_exact(4).map(|c| u16::from_le_bytes([c[0], c[1]])).collect();
    let records = x.rows().min(labels.len());
    let per = x.data.len() / x.rows().max(1);
    let set = mota_runtime::validation::build(
        mota_runtime::DType::Int8,
        &x.shape[1..],
        &x.data[..per * records],
        Some((&labels[..records], 10)),
        None,
    )
    .map_err(|e| format!("{e:?}"))?;
    Ok((set, records))
}

/// The release key the published test root certified (root seed 0x11 × 32,
/// `mota_proto::testkit::ROOT`; release seed 0x22 × 32), as agent/core's tests sign with.
pub fn release_key() -> Result<mota_proto::sign::ReleaseKey, BoxError> {
    use ed25519_dalek::SigningKey;
    let root = SigningKey::from_bytes(&[0x11; 32]);
    let release = SigningKey::from_bytes(&[0x22; 32]);
    let cert = mota_proto::sign::certify(&root, &release.verifying_key(), u64::MAX, 0..=99)?;
    Ok(mota_proto::sign::ReleaseKey::new(release, cert).map_err(|e| format!("{e:?}"))?)
}

/// An update as the backend holds it: the signed offer and the artifacts it names.
pub struct Update {
    /// The envelope to publish on the offer topic.
    pub envelope: Vec<u8>,
    /// The signed manifest's digest (what the device's reports name).
    pub manifest: Digest,
    pub rollout: u64,
    /// By digest: the image and the validation set.
    pub artifacts: HashMap<Digest, Vec<u8>>,
}

impl Update {
    /// A full image `image` (version 2.0.0, security counter 2: above the factory
    /// model's) validated on `set`, signed with [`release_key`].
    pub fn full(image: &[u8], set: &[u8], rollout: u64) -> Result<Self, BoxError> {
        let parsed = mota_runtime::Model::parse(image).map_err(|e| format!("{e:?}"))?;
        let arena_bytes = mota_runtime::arena_size(&parsed).map_err(|e| format!("{e:?}"))? as u32;
        let manifest = Manifest {
            format: mota_proto::manifest::FORMAT_VERSION,
            model: "digits_cnn",
            version: "2.0.0",
            security_counter: 2,
            device_class: CLASS,
            image: Image { size: image.len() as u32, sha256: Digest::of(image) },
            delta: None,
            validation: Some(Validation {
                set_sha256: Digest::of(set),
                set_size: set.len() as u32,
                min_accuracy_permille: 800,
                max_drop_permille: 50,
            }),
            arena_bytes,
            expires_at: None,
            rollout_id: rollout,
        };
        let envelope = release_key()?.sign(&manifest)?;
        let artifacts = [image, set].into_iter().map(|a| (Digest::of(a), a.to_vec())).collect();
        Ok(Self { envelope, manifest: Digest::of(&manifest.to_vec()?), rollout, artifacts })
    }

    /// The backend's answer to a chunk request (`Get`): the bytes asked for, or a
    /// refusal of an artifact it does not hold.
    pub fn answer(&self, get: &[u8]) -> Result<Vec<u8>, BoxError> {
        let get = Get::parse(get)?;
        let chunk = match self.artifacts.get(&get.artifact) {
            Some(data) => {
                let start = (get.offset as usize).min(data.len());
                let end = start.saturating_add(get.length as usize).min(data.len());
                Chunk::data(get.artifact, get.offset, &data[start..end]).to_vec()?
            }
            None => Chunk::refused(get.artifact, get.offset, Refusal::NOT_OFFERED).to_vec()?,
        };
        Ok(chunk)
    }
}

// ---- the line between device and broker ------------------------------------------------

/// What carries the device's bytes to the broker, and so how a connection the broker
/// closed looks to the firmware.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Carrier {
    /// A socket as embedded-io describes one (lwIP, embassy-net, a modem's socket API):
    /// a closed connection reads as end of file (`read` returns 0), writes to it fail,
    /// and the next write after the end was read opens a new connection.
    Socket,
    /// A serial line the host carries over TCP, as QEMU's `-serial tcp:HOST:PORT,reconnect=1`
    /// does for the QEMU firmware: the firmware is never told; bytes written while the line
    /// is down are lost, and it reconnects by itself a moment later.
    Serial,
}

/// How long a serial line stays down before it reconnects (QEMU: `reconnect=1`, a second).
const SERIAL_RECONNECT: Duration = Duration::from_millis(100);

/// The device's byte stream: a real TCP connection to the broker, reconnected underneath
/// when the broker closes it, as its [`Carrier`] does. Clones share the line: the session
/// owns one, the test keeps another to cut the line or put bytes on it.
#[derive(Clone)]
pub struct TcpLink(Rc<RefCell<Line>>);

struct Line {
    addr: String,
    carrier: Carrier,
    stream: Option<TcpStream>,
    /// Socket: the end of the connection was read; the next write opens a new one.
    ended: bool,
    /// Serial: when the line went down.
    down_since: Option<Instant>,
    /// Bytes to deliver before the broker's next packet.
    noise: VecDeque<u8>,
    frames: Frames,
    connects: u32,
}

impl TcpLink {
    /// A line connected to `broker`.
    pub fn connect(broker: &Broker, carrier: Carrier) -> Result<Self, BoxError> {
        let mut line = Line {
            addr: broker.addr(),
            carrier,
            stream: None,
            ended: false,
            down_since: None,
            noise: VecDeque::new(),
            frames: Frames::default(),
            connects: 0,
        };
        line.open().map_err(|e| format!("connect to {}: {e}", line.addr))?;
        Ok(Self(Rc::new(RefCell::new(line))))
    }

    /// Closes the TCP connection without a word to the broker (no DISCONNECT), as a cable
    /// pulled or a NAT entry forgotten: the broker publishes the device's will. The line
    /// then behaves as its carrier does when the broker closes it.
    pub fn cut(&self) {
        self.0.borrow_mut().lost();
    }

    /// Puts `bytes` on the line towards the device, before the broker's next packet (at a
    /// packet boundary, so the broker's packets stay whole).
    pub fn inject(&self, bytes: &[u8]) {
        self.0.borrow_mut().noise.extend(bytes);
    }

    /// Whether injected bytes are still waiting to be read.
    pub fn injecting(&self) -> bool {
        !self.0.borrow().noise.is_empty()
    }

    /// TCP connections opened so far.
    pub fn connects(&self) -> u32 {
        self.0.borrow().connects
    }
}

impl Line {
    fn open(&mut self) -> std::io::Result<()> {
        let stream = TcpStream::connect(&self.addr)?;
        stream.set_nodelay(true)?;
        self.stream = Some(stream);
        self.frames = Frames::default();
        self.ended = false;
        self.down_since = None;
        self.connects += 1;
        Ok(())
    }

    /// The connection ended (closed by the broker or cut).
    fn lost(&mut self) {
        if let Some(stream) = self.stream.take() {
            let _ = stream.shutdown(std::net::Shutdown::Both);
        }
        match self.carrier {
            Carrier::Socket => self.ended = true,
            Carrier::Serial => self.down_since = Some(Instant::now()),
        }
    }

    /// The connection to read from: `None` while there is none (a socket whose end was
    /// read and not yet reopened, a serial line that is down).
    fn reading(&mut self) -> Option<&mut TcpStream> {
        if self.stream.is_none() && self.carrier == Carrier::Serial {
            self.serial_reconnect();
        }
        self.stream.as_mut()
    }

    fn serial_reconnect(&mut self) {
        if self.down_since.is_some_and(|t| t.elapsed() >= SERIAL_RECONNECT) && self.open().is_err() {
            self.down_since = Some(Instant::now());
        }
    }

    /// Whether a read would return without blocking: bytes waiting, or the end of the
    /// connection (which a socket reports by a read of 0).
    fn ready(&mut self) -> bool {
        if !self.noise.is_empty() && self.frames.at_boundary() {
            return true;
        }
        if self.ended {
            return true;
        }
        let Some(stream) = self.reading() else { return false };
        let peeked = stream.set_nonblocking(true).and_then(|()| stream.peek(&mut [0u8]));
        let restored = stream.set_nonblocking(false).is_ok();
        match peeked {
            Ok(n) if n > 0 && restored => true,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock && restored => false,
            // The end of the connection: a socket reads it (as 0 bytes); a serial line
            // has nothing to read until it is back.
            _ => {
                self.lost();
                self.carrier == Carrier::Socket
            }
        }
    }
}

impl embedded_io::ErrorType for TcpLink {
    type Error = ErrorKind;
}

impl embedded_io::ReadReady for TcpLink {
    fn read_ready(&mut self) -> Result<bool, ErrorKind> {
        Ok(self.0.borrow_mut().ready())
    }
}

impl embedded_io::Read for TcpLink {
    fn read(&mut self, buf: &mut [u8]) -> Result<usize, ErrorKind> {
        let mut line = self.0.borrow_mut();
        if buf.is_empty() {
            return Ok(0);
        }
        if !line.noise.is_empty() && line.frames.at_boundary() {
            let n = buf.len().min(line.noise.len());
            for (b, noise) in buf.iter_mut().zip(line.noise.drain(..n)) {
                *b = noise;
            }
            return Ok(n);
        }
        if line.ended {
            return Ok(0); // end of file, until the next write reopens the socket
        }
        let Some(stream) = line.reading() else { return Ok(0) };
        match stream.read(buf) {
            Ok(0) | Err(_) => {
                line.lost();
                Ok(0)
            }
            Ok(n) => {
                line.frames.feed(&buf[..n]);
                Ok(n)
            }
        }
    }
}

impl embedded_io::Write for TcpLink {
    fn write(&mut self, buf: &[u8]) -> Result<usize, ErrorKind> {
        let mut line = self.0.borrow_mut();
        if line.stream.is_none() {
            match line.carrier {
                // The firmware opens a new socket for what it sends next.
                Carrier::Socket => line.open().map_err(|_| ErrorKind::NotConnected)?,
                Carrier::Serial => line.serial_reconnect(),
            }
        }
        let Some(stream) = line.stream.as_mut() else {
            return Ok(buf.len()); // a serial line that is down: the bytes are lost
        };
        match stream.write(buf) {
            Ok(n) => Ok(n),
            Err(e) => {
                line.lost();
                match line.carrier {
                    Carrier::Socket => Err(io_kind(e.kind())),
                    Carrier::Serial => Ok(buf.len()),
                }
            }
        }
    }

    fn flush(&mut self) -> Result<(), ErrorKind> {
        Ok(())
    }
}

/// std's error kind as embedded-io's.
fn io_kind(kind: std::io::ErrorKind) -> ErrorKind {
    use std::io::ErrorKind as Std;
    match kind {
        Std::BrokenPipe => ErrorKind::BrokenPipe,
        Std::ConnectionReset => ErrorKind::ConnectionReset,
        Std::ConnectionAborted => ErrorKind::ConnectionAborted,
        Std::NotConnected => ErrorKind::NotConnected,
        _ => ErrorKind::Other,
    }
}

/// Where the broker's stream stands in MQTT's framing (fixed header: a type byte, then
/// the remaining length as a varint), so injected bytes land between packets.
#[derive(Default)]
struct Frames {
    header: Vec<u8>,
    body_left: usize,
}

impl Frames {
    fn at_boundary(&self) -> bool {
        self.header.is_empty() && self.body_left == 0
    }

    fn feed(&mut self, mut bytes: &[u8]) {
        while let Some((&b, rest)) = bytes.split_first() {
            if self.body_left > 0 {
                let n = self.body_left.min(bytes.len());
                self.body_left -= n;
                bytes = &bytes[n..];
                continue;
            }
            self.header.push(b);
            bytes = rest;
            if self.header.len() >= 2 && b & 0x80 == 0 {
                self.body_left =
                    self.header[1..].iter().enumerate().map(|(i, v)| usize::from(v & 0x7f) << (7 * i)).sum();
                self.header.clear();
            }
        }
    }
}

// ---- the device ------------------------------------------------------------------------

pub const CLASS: &str = "stm32f4-kws";
pub const CHUNK: u32 = 1024;
const ARENA: usize = 16 * 1024;
const WRITE: usize = 4;
const SECTOR: usize = 4096;
const STATE_LEN: u32 = 3 * SECTOR as u32;
const SLOT_LEN: u32 = 16 * SECTOR as u32;

type Part = SimFlash<WRITE, SECTOR, true>;
pub type Slot = Region<Part>;
pub type TestAgent = Agent<'static, Slot, MapStore<Slot>, Paced<RuntimeValidator<Slots, UsClock>>>;

const FACTORY: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../runtime/fixtures/models/digits_cnn_v1.tflite");

/// The model flashed at the factory.
pub fn factory_model() -> Result<Vec<u8>, BoxError> {
    Ok(std::fs::read(FACTORY)?)
}

/// Boots the agent on a fresh simulated part (state region, then two slots) with the
/// factory model in slot 0, trusting the published test root.
pub fn boot_agent(device: &str) -> Result<TestAgent, BoxError> {
    boot_agent_with(device, Work::default())
}

/// [`boot_agent`] with bounds on the work of each poll.
pub fn boot_agent_with(device: &str, work: Work) -> Result<TestAgent, BoxError> {
    boot_agent_paced(device, work, Duration::ZERO)
}

/// [`boot_agent_with`], its validator taking `per_record` longer for each record (see
/// [`Paced`]).
pub fn boot_agent_paced(device: &str, work: Work, per_record: Duration) -> Result<TestAgent, BoxError> {
    let model = factory_model()?;
    let parsed = mota_runtime::Model::parse(&model).map_err(|e| format!("{e:?}"))?;
    let arena_bytes = mota_runtime::arena_size(&parsed).map_err(|e| format!("{e:?}"))? as u32;
    let config: &'static Config<'static> = Box::leak(Box::new(Config {
        device_id: String::leak(device.to_owned()),
        device_class: CLASS,
        agent_version: "mqtt-test",
        roots: &[mota_proto::testkit::ROOT],
        crypto: &mota_proto::Software,
        limits: Limits {
            max_image_bytes: 0,
            max_patch_bytes: 32 * 1024,
            max_arena_bytes: ARENA as u32,
            max_validation_bytes: 32 * 1024,
        },
        erased: 0xFF,
        chunk_bytes: CHUNK,
        retry_ms: 1000,
        max_trials: 2,
        trial_boots: 0,
        work,
        leases: None,
        factory: Some(Factory {
            size: model.len() as u32,
            name: "digits_cnn",
            version: "1.0.0",
            counter: 1,
            arena_bytes,
        }),
    }));
    let geometry =
        Geometry::uniform(((STATE_LEN + 2 * SLOT_LEN) / SECTOR as u32) as usize, SECTOR as u32, WRITE, 0xFF)?;
    let part = Rc::new(RefCell::new(Part::new(geometry)));
    let slot_at = [STATE_LEN, STATE_LEN + SLOT_LEN];
    {
        use embedded_storage::nor_flash::NorFlash;
        let mut image = model.clone();
        image.resize(model.len().next_multiple_of(WRITE), 0xFF);
        Region::new(&part, slot_at[0], SLOT_LEN).write(0, &image).map_err(|e| format!("{e:?}"))?;
    }
    let slots = slot_at.map(|at| Region::new(&part, at, SLOT_LEN));
    let state = MapStore::new(Region::new(&part, 0, STATE_LEN), 0xFF)?;
    let validator = Paced {
        inner: RuntimeValidator { memory: Slots { part: Rc::clone(&part), at: slot_at }, clock: UsClock },
        per_record,
    };
    let arena: &'static mut [u8] = Box::leak(vec![0u8; ARENA].into_boxed_slice());
    Ok(Agent::boot(config, slots, state, validator, arena)?)
}

/// Both slots as mapped memory, read from the part.
pub struct Slots {
    part: Rc<RefCell<Part>>,
    at: [u32; 2],
}

impl SlotMemory for Slots {
    fn with_slots<R>(&mut self, f: impl FnOnce([&[u8]; 2]) -> R) -> R {
        let part = self.part.borrow();
        let bytes = part.contents();
        let slot = |i: usize| &bytes[self.at[i] as usize..(self.at[i] + SLOT_LEN) as usize];
        f([slot(0), slot(1)])
    }
}

/// The validator's latency timer.
pub struct UsClock;

impl mota_runtime::validation::Clock for UsClock {
    fn now_us(&self) -> u64 {
        std::time::UNIX_EPOCH.elapsed().map_or(0, |d| d.as_micros() as u64)
    }
}

/// A validator that takes `per_record` longer for every record it runs: the host runs
/// the fixtures' models in microseconds, a microcontroller in milliseconds.
pub struct Paced<V> {
    pub inner: V,
    pub per_record: Duration,
}

impl<V: Validator> Validator for Paced<V> {
    fn validate(
        &mut self,
        model: Located,
        arena_bytes: u32,
        set: Option<Located>,
        arena: &mut [u8],
        run: &mut Run,
        budget: u32,
    ) -> Result<Option<Measurement>, ErrorCode> {
        let before = run.done;
        let measured = self.inner.validate(model, arena_bytes, set, arena, run, budget);
        std::thread::sleep(self.per_record.saturating_mul(run.done.saturating_sub(before)));
        measured
    }
}

/// The device's clock: host time since the device started; trusted unix time is the
/// test vectors' `NOW`.
#[derive(Debug, Clone)]
pub struct HostClock(Instant);

impl Clock for HostClock {
    fn now_ms(&self) -> u64 {
        self.0.elapsed().as_millis() as u64
    }

    fn unix_time(&self) -> Option<u64> {
        Some(mota_proto::testkit::NOW)
    }
}

// ---- the device's main loop ------------------------------------------------------------

/// What the session reported over all polls so far.
#[derive(Debug, Default, Clone, Copy)]
pub struct Tally {
    /// `Progress::connected` seen.
    pub connected: u32,
    /// `Progress::messages`, summed.
    pub messages: u32,
}

/// How a test device connects.
#[derive(Debug, Clone, Copy)]
pub struct Setup {
    pub carrier: Carrier,
    pub keep_alive_s: u16,
    pub password: Option<&'static str>,
}

impl Default for Setup {
    /// A socket and the QEMU firmware's keep-alive.
    fn default() -> Self {
        Self { carrier: Carrier::Socket, keep_alive_s: 30, password: None }
    }
}

/// A device: the agent, its session over a [`TcpLink`], and the test's end of that link.
pub struct Device {
    pub id: String,
    pub agent: TestAgent,
    pub session: Session<'static, TcpLink, HostClock>,
    pub link: TcpLink,
    pub tally: Tally,
}

impl Device {
    /// Boots a device `id` and opens its session to `broker` as `setup` says.
    pub fn start(broker: &Broker, id: &str, setup: Setup) -> Result<Self, BoxError> {
        Self::start_with(broker, id, setup, boot_agent(id)?)
    }

    /// [`Device::start`] with an agent booted for `id` (bounded work, a paced validator).
    pub fn start_with(broker: &Broker, id: &str, setup: Setup, agent: TestAgent) -> Result<Self, BoxError> {
        let link = TcpLink::connect(broker, setup.carrier)?;
        let settings = SessionConfig {
            device_id: String::leak(id.to_owned()),
            password: setup.password,
            keep_alive_s: setup.keep_alive_s,
            tick_ms: 100,
        };
        let buffer: &'static mut [u8] = Box::leak(vec![0u8; buffer_len(CHUNK)].into_boxed_slice());
        let session = Session::new(link.clone(), HostClock(Instant::now()), &settings, CHUNK, buffer)
            .map_err(|e| format!("Session::new: {e}"))?;
        Ok(Self { id: id.to_owned(), agent, session, link, tally: Tally::default() })
    }

    /// One turn of the firmware's main loop.
    pub fn poll(&mut self) -> Result<Progress, AgentError> {
        let progress = self.session.poll(&mut self.agent)?;
        self.tally.connected += u32::from(progress.connected);
        self.tally.messages += progress.messages;
        Ok(progress)
    }

    /// Runs the main loop until `done` says so; fails after [`PATIENCE`], naming `what`.
    pub fn run_until(&mut self, what: &str, mut done: impl FnMut(&Self) -> Result<bool, BoxError>) -> TestResult {
        let deadline = Instant::now() + PATIENCE;
        loop {
            self.poll()?;
            if done(self)? {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!("{}: {what} did not happen within {PATIENCE:?} ({:?})", self.id, self.tally).into());
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// The device's own topic `kind`.
    pub fn topic(&self, kind: Kind) -> String {
        topic(&self.id, kind)
    }
}
