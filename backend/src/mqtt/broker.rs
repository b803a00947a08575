//! The embedded broker (rumqttd, MQTT 3.1.1), so a single machine runs a fleet with
//! nothing else installed. Production points `--mqtt-url` at a broker cluster instead;
//! the client side is the same either way.
//!
//! rumqttd has no stop: the broker lives on its own threads until the process exits.
//! mota-sim starts its own rumqttd the same way for fleets run on their own: the two
//! crates may not depend on each other (ARCHITECTURE.md, dependency rules), and a crate
//! for thirty lines of broker settings would cost more than it saves.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use rumqttd::{Broker, Config, ConnectionSettings, RouterConfig, ServerSettings};

/// Why the embedded broker could not start.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    /// Its thread could not be spawned.
    #[error("embedded MQTT broker: spawning its thread: {0}")]
    Thread(#[source] std::io::Error),
    /// It did not start listening (address in use, no permission, ...).
    #[error("embedded MQTT broker: not listening on {0} (see the log for why)")]
    NotListening(SocketAddr),
}

/// Largest MQTT packet the broker accepts: a chunk with its envelope fits.
pub const MAX_PACKET: usize = 64 * 1024;

/// Starts the broker on `addr`; returns once it accepts connections.
pub async fn start(addr: SocketAddr) -> Result<(), BrokerError> {
    let server = ServerSettings {
        name: "mota-backend".into(),
        listen: addr,
        tls: None,
        next_connection_delay_ms: 0,
        connections: ConnectionSettings {
            connection_timeout_ms: 60_000,
            max_payload_size: MAX_PACKET,
            max_inflight_count: 500,
            auth: None,
            external_auth: None,
            dynamic_filters: true,
        },
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
