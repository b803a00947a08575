//! The backend's side of MQTT: one client per replica, on the external broker named by
//! `--mqtt-url` or on the embedded one.
//!
//! Device→backend topics are consumed through `$share/{group}-{kind}/...` subscriptions,
//! so the replicas of a deployment split the load and each message is handled once.
//! Messages are acknowledged only after they are handled, and on an external broker the
//! session is persistent (`clean_session = false`, a stable client id): what arrives
//! while a replica restarts, or while its database write fails, is delivered again rather
//! than lost. Anything malformed a device sends is logged and dropped; the loop never
//! ends because of what is on the wire.

pub mod auth;
pub mod broker;
pub mod chunks;
pub mod front;
pub mod offers;
pub mod publish;
pub mod registry;
pub mod reports;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use mota_proto::message::{Hello, Payload};
use mota_proto::topic::{Kind, Topic};
use rumqttc::{AsyncClient, Event, EventLoop, MqttOptions, Packet, Publish, QoS};
use tokio::sync::{Notify, oneshot};
use tokio::task::JoinHandle;

use crate::config::Config;
use crate::db::Db;
use crate::server::AppState;

/// Why the MQTT side could not start.
#[derive(Debug, thiserror::Error)]
pub enum MqttError {
    /// `--mqtt-url` is not `mqtt://HOST[:PORT]` or `mqtts://HOST[:PORT]`.
    #[error("MQTT URL {0:?}: expected mqtt://HOST[:PORT] or mqtts://HOST[:PORT]")]
    Url(String),
    /// `mqtts://` without `--mqtt-ca-file`.
    #[error("mqtts:// needs --mqtt-ca-file: the CA certificates that sign the broker's certificate")]
    NoCa,
    /// A TLS file cannot be read.
    #[error("reading {0}: {1}")]
    TlsFile(std::path::PathBuf, #[source] std::io::Error),
    /// The embedded broker did not start.
    #[error(transparent)]
    Broker(#[from] broker::BrokerError),
}

/// The running client; [`Mqtt::stop`] disconnects it.
#[derive(Debug)]
pub struct Mqtt {
    client: AsyncClient,
    fresh_sessions: Arc<AtomicU64>,
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
    writers: Arc<reports::Writers>,
}

impl Mqtt {
    /// A handle to publish with (offers, commands); clones share the connection.
    pub fn client(&self) -> AsyncClient {
        self.client.clone()
    }

    /// How many times the broker has answered a connection without the session (a new
    /// or restarted broker, an expired session): retained offers and commands may be
    /// gone, so the rollout engine publishes them again when this changes.
    pub fn fresh_sessions(&self) -> Arc<AtomicU64> {
        self.fresh_sessions.clone()
    }

    /// Disconnects cleanly (waiting at most a second) and ends the client task.
    pub async fn stop(self) {
        self.writers.abort();
        let _ = self.stop.send(());
        let abort = self.task.abort_handle();
        if tokio::time::timeout(Duration::from_secs(2), self.task).await.is_err() {
            abort.abort();
        }
    }
}

/// Longest pause between two connection attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(30);
const FIRST_BACKOFF: Duration = Duration::from_millis(250);

/// Starts the embedded broker unless `--mqtt-url` names one, then the client task.
pub async fn start(config: &Config, state: &AppState) -> Result<Mqtt, MqttError> {
    let mut login = config.mqtt_username.clone().zip(config.mqtt_password.clone());
    let (host, port, tls) = match &config.mqtt_url {
        Some(url) => parse_url(url)?,
        None => {
            let embedded = broker::start(config.mqtt_listen, &state.db).await?;
            login = embedded.login;
            (embedded.addr.ip().to_string(), embedded.addr.port(), false)
        }
    };
    let mut options = MqttOptions::new(config.mqtt_client_id.clone(), host.clone(), port);
    // A persistent session only on an external broker: the embedded one lives and dies
    // with this process, so its sessions outlive nothing, and rumqttd 0.20 panics
    // ("group must exists") saving a persistent session's shared-subscription state
    // when such a client disconnects.
    options
        .set_clean_session(config.mqtt_url.is_none())
        .set_manual_acks(true)
        .set_keep_alive(Duration::from_secs(30))
        .set_max_packet_size(broker::MAX_PACKET, broker::MAX_PACKET)
        .set_request_channel_capacity(1024);
    if tls {
        options.set_transport(rumqttc::Transport::tls_with_config(tls_config(config)?));
    }
    if let Some((user, password)) = login {
        options.set_credentials(user, password);
    }
    let (client, events) = AsyncClient::new(options, 1024);
    let (stop, stopped) = oneshot::channel();
    tracing::info!(%host, port, client_id = %config.mqtt_client_id, "MQTT client starting");
    let fresh_sessions = Arc::new(AtomicU64::new(0));
    let limits =
        chunks::Limits { cache_bytes: config.chunk_cache_bytes, rate: config.chunk_rate, burst: config.chunk_burst };
    let writers = Arc::new(reports::Writers::start(&state.db, &state.metrics, &state.engine_wake));
    let registration =
        if config.auto_register { registry::Registration::Auto } else { registry::Registration::ProvisionedOnly };
    let handler = Handler {
        db: state.db.clone(),
        metrics: state.metrics.clone(),
        registration,
        chunks: chunks::ChunkService::new(state.db.clone(), state.blobs.clone(), state.metrics.clone(), limits),
        reports: writers.clone(),
    };
    let session = Session {
        group: config.mqtt_share_group.clone(),
        fresh_sessions: fresh_sessions.clone(),
        wake: state.engine_wake.clone(),
    };
    let task = tokio::spawn(run(client.clone(), events, handler, session, stopped));
    Ok(Mqtt { client, fresh_sessions, stop, task, writers })
}

/// The TLS settings of an `mqtts://` connection: the CA bundle, and the client
/// certificate when one is configured.
fn tls_config(config: &Config) -> Result<rumqttc::TlsConfiguration, MqttError> {
    let read = |path: &std::path::PathBuf| std::fs::read(path).map_err(|e| MqttError::TlsFile(path.clone(), e));
    let ca = read(config.mqtt_ca_file.as_ref().ok_or(MqttError::NoCa)?)?;
    let client_auth = match (&config.mqtt_client_cert, &config.mqtt_client_key) {
        (Some(cert), Some(key)) => Some((read(cert)?, read(key)?)),
        _ => None,
    };
    Ok(rumqttc::TlsConfiguration::Simple { ca, alpn: None, client_auth })
}

/// `mqtt://HOST[:PORT]` (or `tcp://`), or `mqtts://HOST[:PORT]` (or `ssl://`), as host,
/// port and whether TLS is on.
fn parse_url(url: &str) -> Result<(String, u16, bool), MqttError> {
    let bad = || MqttError::Url(url.to_owned());
    let (rest, tls) = match url.split_once("://") {
        Some(("mqtt" | "tcp", rest)) => (rest, false),
        Some(("mqtts" | "ssl", rest)) => (rest, true),
        _ => return Err(bad()),
    };
    let default_port = if tls { 8883 } else { 1883 };
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    if rest.is_empty() || rest.contains(['/', '@', '?']) {
        return Err(bad());
    }
    // `[v6]:port`, `host:port`, or a bare host.
    let (host, port) = match rest.rsplit_once(':') {
        Some((host, port)) if !port.contains(']') => (host, port.parse().map_err(|_| bad())?),
        _ => (rest, default_port),
    };
    let host = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
    if host.is_empty() {
        return Err(bad());
    }
    Ok((host.to_owned(), port, tls))
}

/// The client loop: (re)connects with backoff, subscribes on every connection (the
/// broker may have lost the session), and hands each message to the handler task.
///
/// This task only polls: anything that publishes (chunks, acknowledgements, the engine's
/// offers) waits for room in the client's request queue, which only this task empties,
/// so handling a message here would deadlock under load (a benchmark found it: a burst
/// of chunk requests filled the queue and the loop waited on itself until the broker
/// dropped the connection). Handling and acknowledging run in tasks of their own; what
/// they are handed is bounded by the broker's in-flight window (nothing is acknowledged
/// before it is handled).
async fn run(
    client: AsyncClient,
    mut events: EventLoop,
    handler: Handler,
    session: Session,
    mut stopped: oneshot::Receiver<()>,
) {
    // Acknowledgements go out in the order messages came in (MQTT 3.1.1 §4.6; rumqttd
    // drops out-of-order ones), each once its message is handled.
    let (acks, pending) = tokio::sync::mpsc::unbounded_channel();
    let acker = tokio::spawn(acknowledge(client.clone(), pending));
    let (work, inbox) = tokio::sync::mpsc::unbounded_channel();
    let worker = tokio::spawn(handler.run(client.clone(), inbox));
    let mut backoff = FIRST_BACKOFF;
    loop {
        let event = tokio::select! {
            event = events.poll() => event,
            _ = &mut stopped => break,
        };
        match event {
            Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                backoff = FIRST_BACKOFF;
                tracing::info!(session_present = ack.session_present, "MQTT connected");
                if !ack.session_present {
                    session.fresh_sessions.fetch_add(1, Ordering::SeqCst);
                    session.wake.notify_one();
                }
                let subscriptions: Vec<_> = share_filters(&session.group)
                    .into_iter()
                    .map(|f| rumqttc::SubscribeFilter::new(f, QoS::AtLeastOnce))
                    .collect();
                let subscriber = client.clone();
                tokio::spawn(async move {
                    if let Err(e) = subscriber.subscribe_many(subscriptions).await {
                        tracing::error!("MQTT subscribe: {e}");
                    }
                });
            }
            Ok(Event::Incoming(Packet::Publish(publish))) => {
                let (done, handled) = oneshot::channel();
                let _ = acks.send((publish.clone(), handled));
                let _ = work.send((publish, done));
            }
            Ok(Event::Incoming(Packet::SubAck(ack))) => {
                tracing::debug!(codes = ?ack.return_codes, "MQTT subscribed");
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(retry_in = ?backoff, "MQTT connection: {e}");
                tokio::select! {
                    () = tokio::time::sleep(backoff) => {}
                    _ = &mut stopped => break,
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
    worker.abort();
    acker.abort();
    // Stopping on purpose (a rolling restart, a scale-down): leave the share groups, so
    // the broker hands this replica's share of device messages to the others instead of
    // queueing it in this session until it comes back, which after a scale-down is never
    // (brokers keep feeding a disconnected persistent session its share: mosquitto#2662,
    // emqx#3243). A crash skips this; the session then holds its share until the replica
    // returns under the same client id. Then a DISCONNECT, so the broker keeps the
    // session (and anything in flight) for the next start, which subscribes again.
    let filters = share_filters(&session.group);
    let sent = filters.iter().filter(|f| client.try_unsubscribe(f.as_str()).is_ok()).count();
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        let mut acked = 0;
        while acked < sent {
            match events.poll().await {
                Ok(Event::Incoming(Packet::UnsubAck(_))) => acked += 1,
                Ok(_) => {}
                Err(_) => break,
            }
        }
    })
    .await;
    if client.try_disconnect().is_ok() {
        let _ = tokio::time::timeout(Duration::from_secs(1), async {
            while let Ok(event) = events.poll().await {
                if matches!(event, Event::Outgoing(rumqttc::Outgoing::Disconnect)) {
                    break;
                }
            }
        })
        .await;
    }
    tracing::info!("MQTT client stopped");
}

/// The subscriptions of a replica in share group `group`: one group per device→backend
/// kind (see [`Kind::shared_filter`], the default group's filters, for why).
fn share_filters(group: &str) -> Vec<String> {
    let from_device = Kind::ALL.into_iter().filter(|k| k.from_device());
    from_device.map(|k| format!("$share/{group}-{0}/{1}+/{0}", k.as_str(), mota_proto::topic::PREFIX)).collect()
}

/// Sends the acknowledgements in arrival order, each once its handler says the message
/// was handled. A message the database could not take (`false`) is left unacknowledged:
/// on an external broker (persistent session) it is delivered again after the next
/// reconnect. Until then it holds a slot of the broker's in-flight window, so a long
/// database outage pauses delivery to this replica (its `/readyz` fails meanwhile) rather
/// than losing messages; devices re-send their terminal report after every reconnect.
/// (rumqttd takes the next acknowledgement for the skipped one and logs an error: it
/// keeps no out-of-order acknowledgements.)
async fn acknowledge(
    client: AsyncClient,
    mut pending: tokio::sync::mpsc::UnboundedReceiver<(Publish, oneshot::Receiver<bool>)>,
) {
    while let Some((publish, handled)) = pending.recv().await {
        if handled.await.unwrap_or(false)
            && let Err(e) = client.ack(&publish).await
        {
            tracing::warn!("MQTT ack: {e}");
        }
    }
}

/// What the polling loop needs of its connection.
struct Session {
    /// The share-group prefix to subscribe with.
    group: String,
    /// See [`Mqtt::fresh_sessions`].
    fresh_sessions: Arc<AtomicU64>,
    /// The rollout engine, told when the broker had no session.
    wake: Arc<Notify>,
}

/// What handling a device's message needs.
struct Handler {
    db: Db,
    metrics: Arc<crate::metrics::Metrics>,
    /// Whether unknown devices' hellos register them.
    registration: registry::Registration,
    chunks: chunks::ChunkService,
    /// The report writers.
    reports: Arc<reports::Writers>,
}

impl Handler {
    /// Handles messages in arrival order until the loop ends.
    async fn run(
        self,
        client: AsyncClient,
        mut inbox: tokio::sync::mpsc::UnboundedReceiver<(Publish, oneshot::Sender<bool>)>,
    ) {
        while let Some((publish, done)) = inbox.recv().await {
            self.handle(&client, publish, done).await;
        }
    }

    /// Handles one message and says whether it was (malformed topics and payloads are
    /// dropped: handled); a status report goes to the writer, which says it.
    async fn handle(&self, client: &AsyncClient, publish: Publish, done: oneshot::Sender<bool>) {
        match self.handled(client, &publish).await {
            Outcome::Handled(handled) => {
                let _ = done.send(handled);
            }
            Outcome::Report(device) => {
                if self.reports.send((device, publish, done)).await.is_err() {
                    tracing::error!("the report writer has stopped");
                }
            }
        }
    }

    /// Handles what is not a status report; a status report is left to the writers.
    async fn handled(&self, client: &AsyncClient, publish: &Publish) -> Outcome {
        let db = &self.db;
        let topic = match Topic::parse(&publish.topic) {
            Ok(topic) if topic.kind().from_device() => topic,
            Ok(_) | Err(_) => {
                tracing::warn!(topic = %publish.topic.escape_debug(), "MQTT: dropped a message on an invalid topic");
                return Outcome::Handled(true);
            }
        };
        let device = topic.device();
        let payload = match Payload::parse(topic.kind(), &publish.payload) {
            Ok(payload) => payload,
            Err(e) => {
                tracing::warn!(device, kind = topic.kind().as_str(), "MQTT: dropped a malformed payload: {e}");
                return Outcome::Handled(true);
            }
        };
        match payload {
            Payload::Hello(hello) => {
                // A few quick retries ride out a busy SQLite file or a PostgreSQL fail-over
                // while staying well inside the keep-alive.
                let mut pause = Duration::from_millis(100);
                loop {
                    match registry::hello(db, device, &hello, self.registration).await {
                        Ok(seen) => {
                            self.metrics.hello(seen.as_str());
                            if seen == registry::Seen::Unknown {
                                tracing::warn!(device, "MQTT: dropped the hello of a device that is not provisioned");
                            } else {
                                tracing::debug!(device, ?seen, "hello");
                                self.send_revocation(client, device, &hello).await;
                            }
                            return Outcome::Handled(true);
                        }
                        Err(e) if pause > Duration::from_secs(1) => {
                            tracing::error!(device, "recording a hello: {e}; left unacknowledged");
                            return Outcome::Handled(false);
                        }
                        Err(e) => tracing::warn!(device, retry_in = ?pause, "recording a hello: {e}"),
                    }
                    tokio::time::sleep(pause).await;
                    pause *= 4;
                }
            }
            Payload::Get(get) => {
                if let Err(e) = self.chunks.serve(client, device, &get).await {
                    tracing::warn!(device, "answering a chunk request: {e}");
                }
                Outcome::Handled(true)
            }
            Payload::Status(status) => {
                tracing::debug!(device, event = ?status.event, seq = status.seq, "status");
                Outcome::Report(device.to_owned())
            }
            other => {
                tracing::debug!(device, kind = topic.kind().as_str(), "not handled: {other:?}");
                Outcome::Handled(true)
            }
        }
    }

    /// Sends the newest revocation list to a device whose hello declares an older one
    /// (one that registered after the list was published to every device).
    async fn send_revocation(&self, client: &AsyncClient, device: &str, hello: &Hello<'_>) {
        let Some(held) = hello.info.and_then(|i| i.revocation_seq) else { return };
        match crate::revocations::newer_than(&self.db, held).await {
            Ok(Some(statement)) => {
                if let Ok(topic) = Topic::new(device, Kind::Trust)
                    && let Err(e) = client.publish(topic.to_string(), QoS::AtLeastOnce, true, statement).await
                {
                    tracing::warn!(device, "sending the revocation list: {e}");
                }
            }
            Ok(None) => {}
            Err(e) => tracing::warn!(device, "reading the revocation list: {e}"),
        }
    }
}

/// What became of a device's message.
enum Outcome {
    /// Handled here: whether it may be acknowledged.
    Handled(bool),
    /// A status report from this device, for the writers (which say when it is stored).
    Report(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_group_subscribes_to_the_contracts_filters() {
        let contract: Vec<String> = Kind::ALL.into_iter().filter_map(Kind::shared_filter).map(str::to_owned).collect();
        assert_eq!(share_filters(mota_proto::topic::SHARE_GROUP), contract);
        assert_eq!(share_filters("staging")[0], "$share/staging-hello/mota/v1/dev/+/hello");
    }

    #[test]
    fn broker_urls() {
        let ok = |url: &str| parse_url(url).ok();
        assert_eq!(ok("mqtt://broker:1884"), Some(("broker".into(), 1884, false)));
        assert_eq!(ok("mqtt://broker"), Some(("broker".into(), 1883, false)));
        assert_eq!(ok("tcp://10.0.0.1:1883/"), Some(("10.0.0.1".into(), 1883, false)));
        assert_eq!(ok("mqtt://[::1]:1885"), Some(("::1".into(), 1885, false)));
        assert_eq!(ok("mqtt://[::1]"), Some(("::1".into(), 1883, false)));
        assert_eq!(ok("mqtts://broker"), Some(("broker".into(), 8883, true)));
        assert_eq!(ok("ssl://broker:9883"), Some(("broker".into(), 9883, true)));
        for bad in ["broker:1883", "http://broker", "mqtt://", "mqtt://:1883", "mqtt://b:x", "mqtt://u:p@b"] {
            assert!(parse_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn tls_needs_a_readable_ca() {
        let mut config = Config::embedded(std::env::temp_dir());
        config.mqtt_url = Some("mqtts://broker".into());
        assert!(matches!(tls_config(&config), Err(MqttError::NoCa)));
        config.mqtt_ca_file = Some("/nonexistent/ca.pem".into());
        assert!(matches!(tls_config(&config), Err(MqttError::TlsFile(..))));
    }
}
