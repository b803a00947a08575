//! The embedded broker (rumqttd, MQTT 3.1.1), so a single machine runs a fleet with
//! nothing else installed. Production points `--mqtt-url` at a broker cluster instead;
//! the client side is the same either way.
//!
//! Two modes, by the listen address. On a loopback address the broker is open (no login,
//! no topic ACL): only processes on this machine reach it, and they can read the data
//! directory anyway; the zero-setup demo and simulated fleets connect so. On any other
//! address it is closed: devices reach it through the authorizing front (mqtt::front:
//! provisioned credentials, each device only under its own id), rumqttd itself listens on
//! a loopback port and checks every login too (`external_auth`), and the backend's
//! client logs in there with a secret made at start-up. There is no switch that opens a
//! non-loopback broker.
//!
//! rumqttd has no stop: the broker lives on its own threads until the process exits.
//! mota-sim starts its own rumqttd the same way for fleets run on their own: the two
//! crates may not depend on each other (ARCHITECTURE.md, dependency rules), and a crate
//! for thirty lines of broker settings would cost more than it saves.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use rumqttd::{Broker, Config, ConnectionSettings, RouterConfig, ServerSettings};

use super::auth::{self, Authenticator};
use crate::db::Db;

/// Why the embedded broker could not start.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    /// Its thread could not be spawned.
    #[error("embedded MQTT broker: spawning its thread: {0}")]
    Thread(#[source] std::io::Error),
    /// It did not start listening (address in use, no permission, ...).
    #[error("embedded MQTT broker: not listening on {0} (see the log for why)")]
    NotListening(SocketAddr),
    /// The front's or the broker's port could not be bound.
    #[error("embedded MQTT broker: binding {0}: {1}")]
    Bind(SocketAddr, #[source] std::io::Error),
    /// No secret could be made for the backend's own login.
    #[error("embedded MQTT broker: {0}")]
    Random(#[from] auth::RandomError),
}

/// Where the backend's own client connects to the running broker, and how it logs in.
#[derive(Debug)]
pub struct Embedded {
    /// The broker's address (rumqttd itself, not the front).
    pub addr: SocketAddr,
    /// The backend's username and password, when the broker is closed.
    pub login: Option<(String, String)>,
}

/// Starts the broker for devices on `listen`: open on a loopback address, else closed
/// behind the front, with logins checked against `db`'s devices.
pub async fn start(listen: SocketAddr, db: &Db) -> Result<Embedded, BrokerError> {
    let open = listen.ip().is_loopback();
    if open {
        start_rumqttd(listen, None).await?;
        return Ok(Embedded { addr: listen, login: None });
    }
    let authenticator = Authenticator::new(db.clone())?;
    // The front binds first, so an address in use fails before the broker's threads start.
    let front = tokio::net::TcpListener::bind(listen).await.map_err(|e| BrokerError::Bind(listen, e))?;
    let free = SocketAddr::from(([127, 0, 0, 1], 0));
    let inner =
        std::net::TcpListener::bind(free).and_then(|l| l.local_addr()).map_err(|e| BrokerError::Bind(free, e))?;
    start_rumqttd(inner, Some(authenticator.clone())).await?;
    let login = Some((auth::BACKEND_USER.to_owned(), authenticator.backend_secret().to_owned()));
    tokio::spawn(super::front::serve(front, authenticator, inner));
    tracing::info!(%listen, "embedded MQTT broker: devices log in with provisioned credentials");
    Ok(Embedded { addr: inner, login })
}

/// Largest MQTT packet the broker accepts: a chunk with its envelope fits.
pub const MAX_PACKET: usize = 64 * 1024;

/// Starts rumqttd on `addr`, checking logins with `auth` if given; returns once it
/// accepts connections.
async fn start_rumqttd(addr: SocketAddr, auth: Option<Authenticator>) -> Result<(), BrokerError> {
    let mut connections = ConnectionSettings {
        connection_timeout_ms: 60_000,
        max_payload_size: MAX_PACKET,
        max_inflight_count: 500,
        auth: None,
        external_auth: None,
        dynamic_filters: true,
    };
    if let Some(auth) = auth {
        // rumqttd runs its own runtimes; the check runs on this one, where the pool lives.
        let runtime = tokio::runtime::Handle::current();
        connections.set_auth_handler(move |client_id: String, username: String, password: String| {
            let auth = auth.clone();
            let check = runtime.spawn(async move { auth.check(&client_id, &username, &password).await.is_some() });
            async move { check.await.unwrap_or(false) }
        });
    }
    let server = ServerSettings {
        name: "mota-backend".into(),
        listen: addr,
        tls: None,
        next_connection_delay_ms: 0,
        connections,
    };
    let config = Config {
        id: 0,
        router: RouterConfig {
            max_connections: 100_000,
            max_outgoing_packet_count: 500,
            max_segment_size: 64 * 1024 * 1024,
            max_segment_count: 10,
            custom_segment: None,
            initialized_filters: None,
            shared_subscriptions_strategy: Default::default(),
        },
        v4: Some(HashMap::from([("mota".to_owned(), server)])),
        v5: None,
        ws: None,
        cluster: None,
        console: None,
        bridge: None,
        prometheus: None,
        metrics: None,
    };
    let mut broker = Broker::new(config);
    std::thread::Builder::new()
        .name("rumqttd".into())
        .spawn(move || {
            if let Err(e) = broker.start() {
                tracing::error!("embedded MQTT broker stopped: {e}");
            }
        })
        .map_err(BrokerError::Thread)?;
    for _ in 0..500 {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            tracing::info!(%addr, "embedded MQTT broker listening");
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Err(BrokerError::NotListening(addr))
}
