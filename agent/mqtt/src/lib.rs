//! The device's MQTT session: an MQTT v5 client over any byte stream (a UART, a socket
//! of lwIP or embassy-net, a modem's transparent mode), wired to [`mota_agent::Agent`].
//!
//! The firmware owns the stream and the agent and calls [`Session::poll`] from its main
//! loop. The session connects (client id and username are the device id, the last will
//! is the `offline` hello the backend expects), subscribes to the device's topics
//! ([`mota_agent::SUBSCRIPTIONS`]), announces the device with [`Agent::hello`] once the
//! broker has granted them, hands every message on those topics to [`Agent::handle`],
//! gives the agent its timer tick ([`Agent::poll`]), keeps the connection alive with
//! pings, and starts again with `CONNECT` when a ping or a `CONNECT` goes unanswered or
//! the stream ends (the link dropped: whoever carries the stream reconnects it
//! underneath).
//!
//! The protocol is [minimq](https://docs.rs/minimq) 0.10's, not ours. Candidates looked
//! at: minimq (MQTT v5, `no_std` without alloc, synchronous and poll-driven over
//! embedded-nal, will, keep-alive, reconnection and QoS 1 republication, maintained by
//! QUARTIQ and used in their shipping instruments); rust-mqtt (v5, `no_std`, but async
//! only: firmware without an executor would need one for it, and the C API could not
//! drive it from a plain `poll()`); mqttrs (a v3.1.1 packet codec only, no session, last
//! released in 2021). minimq's one cost is that it speaks only v5: Mosquitto, EMQX,
//! HiveMQ and AWS IoT Core take it; the backend's embedded broker listens for v4 only,
//! so QEMU devices use Mosquitto (docs/production.md names it as the production broker).
//!
//! No panics on input: a malformed packet is minimq's protocol error (it drops the
//! connection and reconnects), a message on a topic that is not the device's is
//! ignored, and the agent itself never panics on a payload.
#![no_std]

mod guard;

use core::net::{IpAddr, Ipv4Addr, SocketAddr};

use embedded_io::{ErrorKind, Read, ReadReady, Write};
use embedded_nal::{TcpClientStack, TcpError, TcpErrorKind, nb};
use embedded_storage::nor_flash::NorFlash;
use guard::Guard;
use minimq::broker::IpBroker;
use minimq::mqtt_client::MqttClient;
use minimq::types::{SubscriptionOptions, TopicFilter};
use minimq::{ConfigBuilder, Minimq, Publication, QoS, Will};
use mota_agent::{Agent, AgentError, Clock, SUBSCRIPTIONS, StateStore, Transport, Validator};
use mota_proto::Wire;
use mota_proto::message::Hello;
use mota_proto::topic::{Kind, MAX_TOPIC_LEN, Topic};

/// How the session identifies itself and paces the agent.
#[derive(Debug, Clone, Copy)]
pub struct SessionConfig<'a> {
    /// The device id: MQTT client id, username and the `{device}` topic level.
    pub device_id: &'a str,
    /// The MQTT password from provisioning (`mota device provision`), or `None` for a
    /// broker that lets the device in without one.
    pub password: Option<&'a str>,
    /// Seconds of silence after which the broker drops the device (and publishes its
    /// will); the session pings at half of it and reconnects when a ping goes unanswered.
    pub keep_alive_s: u16,
    /// Milliseconds between the agent's timer ticks ([`Agent::poll`]).
    pub tick_ms: u64,
}

/// The transmit buffer: the largest packet the device sends (a hello or a report is at
/// most 512 bytes and its topic; the `CONNECT` with the longest id, password and will is
/// under 400).
const TX: usize = 1008;
/// QoS 1 messages kept until the broker acknowledges them: minimq needs room for a
/// whole transmit buffer, and two let a report and a chunk request be in flight at once.
const KEPT: usize = 2 * TX;
/// The will and the login (device id and password), which minimq takes off the buffer
/// first: what is left must hold the rest, or minimq panics while splitting it.
const LOGIN: usize = 304;
/// The longest password the session takes.
const MAX_PASSWORD_LEN: usize = 128;
/// The offline hello, encoded.
const MAX_OFFLINE_LEN: usize = 16;
// The longest will (property length, then topic and payload with their 2-byte lengths)
// and login fit.
const _: () = assert!(
    1 + 2 + MAX_TOPIC_LEN + 2 + MAX_OFFLINE_LEN + mota_proto::limits::MAX_DEVICE_ID_LEN + MAX_PASSWORD_LEN <= LOGIN
);
/// Bytes the session needs besides the receive buffer.
pub const OVERHEAD: usize = TX + KEPT + LOGIN;

/// Why a session could not start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionError {
    /// The device id cannot be a topic level.
    DeviceId,
    /// The buffer is smaller than [`buffer_len`] for the agent's chunk size.
    Buffer,
    /// The id, password or will did not fit minimq's limits (an id of at most 64 bytes,
    /// a password of at most 128).
    Settings,
}

impl core::fmt::Display for SessionError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            Self::DeviceId => "the device id cannot be a topic level",
            Self::Buffer => "the session buffer is too small for the agent's chunk size",
            Self::Settings => "client id, password or will rejected by the MQTT client",
        })
    }
}

impl core::error::Error for SessionError {}

/// The buffer a session needs when the agent asks for `chunk_bytes` per chunk: the
/// largest message it receives (a chunk, or an envelope of at most 1,536 bytes) with
/// its topic and MQTT header, plus [`OVERHEAD`].
pub const fn buffer_len(chunk_bytes: u32) -> usize {
    let chunk = chunk_bytes as usize + 64;
    let largest =
        if chunk > mota_proto::limits::MAX_ENVELOPE_LEN { chunk } else { mota_proto::limits::MAX_ENVELOPE_LEN };
    largest + MAX_TOPIC_LEN + 32 + OVERHEAD
}

/// What a call to [`Session::poll`] saw.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Progress {
    /// The broker granted the subscriptions and the agent said hello: a new connection.
    pub connected: bool,
    /// Messages received (those on the device's own topics were handed to the agent):
    /// none means the firmware may sleep until the stream has bytes or time passes.
    pub messages: u32,
}

/// An MQTT session over `S` for one agent.
pub struct Session<'a, S: Read + Write + ReadReady, C: Clock + Clone> {
    mqtt: Minimq<'a, Link<S, C>, Millis<C>, IpBroker>,
    clock: C,
    device: &'a str,
    phase: Phase,
    tick_ms: u64,
    next_tick: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// No MQTT connection.
    Offline,
    /// Connected; the subscriptions are not granted yet.
    Subscribing,
    /// Subscribed, and the agent said hello.
    Online,
}

/// Messages handled per [`Session::poll`] before the agent's tick gets its turn.
const MESSAGES_PER_POLL: u32 = 8;

impl<'a, S: Read + Write + ReadReady, C: Clock + Clone> Session<'a, S, C> {
    /// A session over `stream` (already connected to the broker, or reconnected
    /// underneath by whoever carries it). `buffer` holds everything the client keeps:
    /// at least [`buffer_len`] of the agent's `chunk_bytes`.
    pub fn new(
        stream: S,
        clock: C,
        config: &SessionConfig<'a>,
        chunk_bytes: u32,
        buffer: &'a mut [u8],
    ) -> Result<Self, SessionError> {
        let mut will_topic = [0u8; MAX_TOPIC_LEN];
        let will_topic = Topic::new(config.device_id, Kind::Hello)
            .and_then(|t| t.write(&mut will_topic))
            .map_err(|_| SessionError::DeviceId)?;
        let mut offline = [0u8; MAX_OFFLINE_LEN];
        let n = Hello::OFFLINE.encode_into(&mut offline).map_err(|_| SessionError::Settings)?;
        let offline = offline.get(..n).unwrap_or_default();
        if buffer.len() < buffer_len(chunk_bytes) {
            return Err(SessionError::Buffer);
        }
        if config.password.is_some_and(|p| p.len() > MAX_PASSWORD_LEN) {
            return Err(SessionError::Settings);
        }
        let rx = buffer_len(chunk_bytes) - OVERHEAD;
        let will = Will::new(will_topic, offline, &[]).map_err(|_| SessionError::Settings)?.qos(QoS::AtLeastOnce);
        let mut settings = ConfigBuilder::new(IpBroker::new(IpAddr::V4(Ipv4Addr::LOCALHOST)), buffer)
            .client_id(config.device_id)
            .map_err(|_| SessionError::Settings)?
            .keepalive_interval(config.keep_alive_s)
            .rx_buffer(minimq::config::BufferConfig::Exactly(rx))
            .tx_buffer(minimq::config::BufferConfig::Exactly(TX))
            .session_state(minimq::config::BufferConfig::Minimum(KEPT))
            .will(will)
            .map_err(|_| SessionError::Settings)?;
        if let Some(password) = config.password {
            settings = settings.set_auth(config.device_id, password).map_err(|_| SessionError::Settings)?;
        }
        let millis = Millis(clock.clone());
        Ok(Self {
            mqtt: Minimq::new(
                Link { stream, clock: clock.clone(), waiting_since: None, connect_left: None, guard: Guard::default() },
                millis,
                settings,
            ),
            clock,
            device: config.device_id,
            phase: Phase::Offline,
            tick_ms: config.tick_ms,
            next_tick: 0,
        })
    }

    /// Whether the session is connected, subscribed and has said hello.
    pub fn is_online(&self) -> bool {
        self.phase == Phase::Online
    }

    /// Does what is due: reads and handles messages, keeps the connection, ticks the
    /// agent. Call it from the main loop, often (every few milliseconds while bytes
    /// arrive). An `Err` is the agent's: the flash failed, and the device reboots.
    pub fn poll<F: NorFlash, St: StateStore, V: Validator>(
        &mut self,
        agent: &mut Agent<'_, F, St, V>,
    ) -> Result<Progress, AgentError> {
        let mut progress = Progress::default();
        let (clock, device) = (&self.clock, self.device);
        while progress.messages < MESSAGES_PER_POLL {
            let handled = self.mqtt.poll(|client, topic, payload, _| {
                let mut net = Publisher { client, device };
                match Topic::parse(topic) {
                    Ok(t) if t.device() == device => agent.handle(t.kind(), payload, &mut net, clock),
                    _ => Ok(()),
                }
            });
            match handled {
                Ok(Some(result)) => {
                    result?;
                    progress.messages += 1;
                }
                Ok(None) => break,
                // The broker forgot the session (or a protocol error dropped it):
                // subscribe and say hello again once reconnected.
                Err(_) => {
                    self.phase = Phase::Offline;
                    break;
                }
            }
        }
        let client = self.mqtt.client();
        if !client.is_connected() {
            self.phase = Phase::Offline;
        }
        match self.phase {
            Phase::Offline if client.is_connected() && subscribe(client, device) => self.phase = Phase::Subscribing,
            Phase::Subscribing if !client.subscriptions_pending() => {
                agent.hello(&mut Publisher { client, device }, clock)?;
                self.phase = Phase::Online;
                progress.connected = true;
                self.next_tick = clock.now_ms().saturating_add(self.tick_ms);
            }
            _ => {}
        }
        // Time passes for the agent whether or not the link is up: a validation that is
        // due runs offline, and its report waits for the next hello.
        let now = clock.now_ms();
        if now >= self.next_tick {
            self.next_tick = now.saturating_add(self.tick_ms);
            agent.poll(&mut Publisher { client: self.mqtt.client(), device }, clock)?;
        }
        Ok(progress)
    }
}

/// Asks for the device's topics at QoS 1; false if the client cannot send now.
fn subscribe<S: Read + Write + ReadReady, C: Clock + Clone>(
    client: &mut MqttClient<'_, Link<S, C>, Millis<C>, IpBroker>,
    device: &str,
) -> bool {
    let mut bufs = [[0u8; MAX_TOPIC_LEN]; SUBSCRIPTIONS.len()];
    let mut lens = [0usize; SUBSCRIPTIONS.len()];
    for ((buf, len), kind) in bufs.iter_mut().zip(lens.iter_mut()).zip(SUBSCRIPTIONS) {
        match Topic::new(device, kind).and_then(|t| t.write(buf)) {
            Ok(topic) => *len = topic.len(),
            Err(_) => return false,
        }
    }
    let options = SubscriptionOptions::default().maximum_qos(QoS::AtLeastOnce);
    let filters: [TopicFilter<'_>; SUBSCRIPTIONS.len()] = core::array::from_fn(|i| {
        let topic = bufs[i].get(..lens[i]).and_then(|b| core::str::from_utf8(b).ok()).unwrap_or_default();
        TopicFilter::new(topic).options(options)
    });
    client.subscribe(&filters, &[]).is_ok()
}

/// The agent's [`Transport`]: QoS 1 publishes on the device's own topics.
struct Publisher<'m, 'a, S: Read + Write + ReadReady, C: Clock + Clone> {
    client: &'m mut MqttClient<'a, Link<S, C>, Millis<C>, IpBroker>,
    device: &'m str,
}

/// Why the agent's publish was not queued (it tries again later).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PublishError {
    /// Not connected.
    Offline,
    /// The client cannot take another QoS 1 message now, or the topic is invalid.
    Busy,
}

impl<S: Read + Write + ReadReady, C: Clock + Clone> Transport for Publisher<'_, '_, S, C> {
    type Error = PublishError;

    fn publish(&mut self, kind: Kind, payload: &[u8]) -> Result<(), PublishError> {
        // minimq drops a publish silently while disconnected: say so, so the agent retries.
        if !self.client.is_connected() {
            return Err(PublishError::Offline);
        }
        let mut buf = [0u8; MAX_TOPIC_LEN];
        let topic = Topic::new(self.device, kind).and_then(|t| t.write(&mut buf)).map_err(|_| PublishError::Busy)?;
        self.client.publish(Publication::new(topic, payload).qos(QoS::AtLeastOnce)).map_err(|_| PublishError::Busy)
    }
}

/// The byte stream as minimq's network stack: one socket, always "connected" (the
/// stream's owner carries the connection). minimq notices a dead link by a ping that
/// goes unanswered or an error from the stream, and waits for the answer to a `CONNECT`
/// for ever; so two more things count as a closed socket, after which minimq starts
/// again with a new `CONNECT`:
/// - the stream's end: a read of 0 bytes (embedded-io's end of file, how a socket says
///   the broker closed the connection, as it does after a second `CONNECT`);
/// - a `CONNECT` the broker has not answered within [`CONNECT_TIMEOUT_MS`] of the last
///   byte heard: a link that dropped the bytes (QEMU's serial socket, for one, drops what
///   the UART sends while it is not connected and never says so).
///
/// Bytes that are not the answer can arrive first (the rest of line noise, the end of
/// the previous connection), so a byte heard restarts the wait rather than ending it.
/// minimq sends nothing else until it is connected: its first packet after the
/// `CONNECT` ends the wait.
struct Link<S, C> {
    stream: S,
    clock: C,
    /// While a `CONNECT` is unanswered: when it began, or the broker was last heard.
    waiting_since: Option<u64>,
    /// Bytes of that `CONNECT` still to go out; `None` before it began.
    connect_left: Option<usize>,
    /// What minimq must not read (guard.rs).
    guard: Guard,
}

/// Milliseconds the session waits for the broker's answer to `CONNECT`.
pub const CONNECT_TIMEOUT_MS: u64 = 5_000;

/// A stream error as minimq sees it.
#[derive(Debug)]
pub enum LinkError<E> {
    /// The stream failed.
    Stream(E),
    /// The broker did not answer `CONNECT` in time.
    Unanswered,
    /// The stream ended (a read of 0 bytes).
    Ended,
}

impl<E: embedded_io::Error> TcpError for LinkError<E> {
    fn kind(&self) -> TcpErrorKind {
        match self {
            Self::Stream(e) => match e.kind() {
                ErrorKind::BrokenPipe
                | ErrorKind::ConnectionReset
                | ErrorKind::ConnectionAborted
                | ErrorKind::NotConnected => TcpErrorKind::PipeClosed,
                _ => TcpErrorKind::Other,
            },
            Self::Unanswered | Self::Ended => TcpErrorKind::PipeClosed,
        }
    }
}

impl<S: Read + Write + ReadReady, C: Clock> TcpClientStack for Link<S, C> {
    type TcpSocket = ();
    type Error = LinkError<S::Error>;

    fn socket(&mut self) -> Result<(), Self::Error> {
        Ok(())
    }

    fn connect(&mut self, _: &mut (), _: SocketAddr) -> nb::Result<(), Self::Error> {
        // minimq sends its CONNECT next.
        self.waiting_since = Some(self.clock.now_ms());
        self.connect_left = None;
        self.guard.restart();
        Ok(())
    }

    fn send(&mut self, _: &mut (), buffer: &[u8]) -> nb::Result<usize, Self::Error> {
        let sent = self.stream.write(buffer).map_err(|e| nb::Error::Other(LinkError::Stream(e)))?;
        self.guard.sent(buffer.get(..sent).unwrap_or_default());
        if self.waiting_since.is_some() {
            match self.connect_left {
                // The CONNECT (minimq hands each packet over whole, then what is left of it).
                None => self.connect_left = Some(buffer.len().saturating_sub(sent)),
                Some(left) if left > 0 => self.connect_left = Some(left.saturating_sub(sent)),
                // A packet after the CONNECT: minimq is connected.
                Some(_) => self.waiting_since = None,
            }
        }
        Ok(sent)
    }

    fn receive(&mut self, _: &mut (), buffer: &mut [u8]) -> nb::Result<usize, Self::Error> {
        match self.stream.read_ready() {
            Ok(true) => match self.stream.read(buffer) {
                Ok(0) if !buffer.is_empty() => Err(nb::Error::Other(LinkError::Ended)),
                Ok(n) => {
                    if self.waiting_since.is_some() {
                        self.waiting_since = Some(self.clock.now_ms());
                    }
                    match buffer.get_mut(..n).map_or(0, |bytes| self.guard.received(bytes)) {
                        0 => Err(nb::Error::WouldBlock),
                        kept => Ok(kept),
                    }
                }
                Err(e) => Err(nb::Error::Other(LinkError::Stream(e))),
            },
            Ok(false) => match self.waiting_since {
                Some(at) if self.clock.now_ms().saturating_sub(at) > CONNECT_TIMEOUT_MS => {
                    self.waiting_since = None;
                    Err(nb::Error::Other(LinkError::Unanswered))
                }
                _ => Err(nb::Error::WouldBlock),
            },
            Err(e) => Err(nb::Error::Other(LinkError::Stream(e))),
        }
    }

    fn close(&mut self, _: ()) -> Result<(), Self::Error> {
        Ok(())
    }
}

/// The agent's clock as minimq's (milliseconds).
#[derive(Debug, Clone)]
struct Millis<C>(C);

impl<C: Clock> embedded_time::Clock for Millis<C> {
    type T = u64;
    const SCALING_FACTOR: embedded_time::fraction::Fraction = embedded_time::fraction::Fraction::new(1, 1000);

    fn try_now(&self) -> Result<embedded_time::Instant<Self>, embedded_time::clock::Error> {
        Ok(embedded_time::Instant::new(self.0.now_ms()))
    }
}
