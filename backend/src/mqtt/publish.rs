//! The one way the backend sends a device anything: [`Publisher`]. The MQTT client is
//! one; the rollout control plane's model-based test routes through an in-memory bus
//! instead, so the engine, the chunk service and the report writer are exercised without
//! a broker (and deterministically).

use std::future::Future;
use std::pin::Pin;

use rumqttc::{AsyncClient, QoS};

/// A publish in progress.
pub type Publishing<'a> = Pin<Box<dyn Future<Output = Result<(), PublishError>> + Send + 'a>>;

/// Sends messages to devices, QoS 1.
pub trait Publisher: Send + Sync {
    /// Queues `payload` on `topic`; `retain` keeps it for a device that subscribes later
    /// (an empty retained payload clears what the broker kept). Returns once the message
    /// is queued in order behind everything published before through this publisher.
    fn publish(&self, topic: String, payload: Vec<u8>, retain: bool) -> Publishing<'_>;
}

/// Why a message could not be queued.
#[derive(Debug, thiserror::Error)]
#[error("MQTT publish: {0}")]
pub struct PublishError(pub String);

impl Publisher for AsyncClient {
    fn publish(&self, topic: String, payload: Vec<u8>, retain: bool) -> Publishing<'_> {
        Box::pin(async move {
            AsyncClient::publish(self, topic, QoS::AtLeastOnce, retain, payload)
                .await
                .map_err(|e| PublishError(e.to_string()))
        })
    }
}
