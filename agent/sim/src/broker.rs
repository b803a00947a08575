//! The embedded MQTT broker (rumqttd), for a fleet that needs no external broker and for
//! tests. Production fleets talk to Mosquitto, EMQX or VerneMQ instead.

use std::collections::HashMap;
use std::net::SocketAddr;

use rumqttd::{Broker, Config, ConnectionSettings, RouterConfig, ServerSettings};

/// Why the broker could not start.
#[derive(Debug, thiserror::Error)]
#[error("embedded broker: {0}")]
pub struct BrokerError(String);

/// Starts rumqttd (MQTT 3.1.1) on `addr` in a thread of its own; returns once it
/// accepts connections.
pub fn start(addr: SocketAddr) -> Result<(), BrokerError> {
    run(addr, false)
}

/// [`start`] with an MQTT 5 listener instead (for clients that speak only v5, as the
/// device's bundled session does).
pub fn start_v5(addr: SocketAddr) -> Result<(), BrokerError> {
    run(addr, true)
}

fn run(addr: SocketAddr, v5: bool) -> Result<(), BrokerError> {
    let server = ServerSettings {
        name: "mota-sim".into(),
        listen: addr,
        tls: None,
        next_connection_delay_ms: 0,
        connections: ConnectionSettings {
            connection_timeout_ms: 60_000,
            max_payload_size: 64 * 1024,
            max_inflight_count: 500,
            auth: None,
            external_auth: None,
            dynamic_filters: true,
        },
    };
    let config = Config {
        id: 0,
        router: RouterConfig {
            max_connections: 20_000,
            max_outgoing_packet_count: 500,
            max_segment_size: 64 * 1024 * 1024,
            max_segment_count: 10,
            custom_segment: None,
            initialized_filters: None,
            shared_subscriptions_strategy: Default::default(),
        },
        v4: (!v5).then(|| HashMap::from([("1".to_string(), server.clone())])),
        v5: v5.then(|| HashMap::from([("1".to_string(), server)])),
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
                tracing::error!("embedded broker stopped: {e}");
            }
        })
        .map_err(|e| BrokerError(e.to_string()))?;
    for _ in 0..200 {
        if std::net::TcpStream::connect(addr).is_ok() {
            return Ok(());
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    Err(BrokerError(format!("not listening on {addr}")))
}

/// A free local port (bound and released; good enough for tests and demos).
pub fn free_port() -> Result<u16, BrokerError> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| BrokerError(e.to_string()))?;
    Ok(listener.local_addr().map_err(|e| BrokerError(e.to_string()))?.port())
}
