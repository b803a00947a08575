//! The authorizing front of the embedded broker: what rumqttd 0.20 cannot do itself.
//!
//! rumqttd checks a login (`ConnectionSettings::external_auth`) but has no topic ACL: any
//! client it lets in may publish and subscribe anywhere (`$share/...` included). So when
//! the embedded broker listens beyond loopback, devices connect here instead: the front
//! reads the client's MQTT 3.1.1 packets with rumqttc's own codec (`mqttbytes::v4`),
//! checks the CONNECT's login against the devices' credentials ([`Authenticator`]) and
//! every PUBLISH topic, SUBSCRIBE filter and the last will against the device's own
//! topics, and forwards each packet unchanged to rumqttd on a loopback port. The broker's
//! packets go back unread. A device may publish `mota/v1/dev/{id}/{k}` for the kinds a
//! device sends and subscribe to exactly `mota/v1/dev/{id}/{k}` for the kinds the backend
//! sends ([`Kind::from_device`]): no wildcard, no other id, no `$share/`. A packet outside
//! that ends the connection (MQTT 3.1.1 has no refusal for a PUBLISH); a refused login
//! gets its CONNACK code first.
//!
//! Why a front rather than a crate: no maintained crate offers an MQTT proxy with a topic
//! ACL (the brokers that have ACLs, rumqttd excepted, are whole brokers, and swapping
//! rumqttd for one is out of scope); the codec is the one rumqttc already brings, and the
//! front is a packet loop of its own, so the broker keeps its `external_auth` check
//! behind it (a local process that skips the front still needs a device's password).

use std::net::SocketAddr;
use std::time::Duration;

use bytes::BytesMut;
use mota_proto::topic::Topic;
use rumqttc::mqttbytes::v4::{ConnAck, ConnectReturnCode, Packet};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::auth::{Authenticator, Identity};
use super::broker::MAX_PACKET;

/// Why a connection through the front ended before its client closed it.
#[derive(Debug, thiserror::Error)]
pub enum FrontError {
    /// Reading or writing either side failed.
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
    /// The client's bytes are not MQTT 3.1.1.
    #[error("malformed packet: {0:?}")]
    Malformed(rumqttc::mqttbytes::Error),
    /// The first packet was not a CONNECT, or none came in time.
    #[error("no CONNECT")]
    NoConnect,
    /// The login was refused.
    #[error("login refused ({0:?})")]
    Refused(ConnectReturnCode),
    /// A device published or subscribed outside its own topics.
    #[error("{what} {topic:?} is not the device's own")]
    Forbidden {
        /// `publish`, `subscribe` or `will`.
        what: &'static str,
        /// The topic or filter.
        topic: String,
    },
}

/// Accepts devices on `listener` and relays each to the broker at `upstream`, forever.
pub async fn serve(listener: TcpListener, auth: Authenticator, upstream: SocketAddr) {
    loop {
        let (client, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                tracing::warn!("MQTT front: accept: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let auth = auth.clone();
        tokio::spawn(async move {
            match relay(client, &auth, upstream).await {
                Ok(()) => {}
                Err(e @ (FrontError::Forbidden { .. } | FrontError::Refused(_))) => {
                    tracing::warn!(%peer, "MQTT front: connection closed: {e}");
                }
                Err(e) => tracing::debug!(%peer, "MQTT front: connection ended: {e}"),
            }
        });
    }
}

/// Reads the next whole packet: its raw bytes and what they say; `None` at a clean end.
async fn next_packet(
    stream: &mut (impl AsyncReadExt + Unpin),
    buf: &mut BytesMut,
) -> Result<Option<(BytesMut, Packet)>, FrontError> {
    loop {
        match rumqttc::mqttbytes::check(buf.iter(), MAX_PACKET) {
            Ok(header) => {
                let frame = buf.split_to(header.frame_length());
                let packet = Packet::read(&mut frame.clone(), MAX_PACKET).map_err(FrontError::Malformed)?;
                return Ok(Some((frame, packet)));
            }
            Err(rumqttc::mqttbytes::Error::InsufficientBytes(_)) => {}
            Err(e) => return Err(FrontError::Malformed(e)),
        }
        if stream.read_buf(buf).await? == 0 {
            return Ok(None);
        }
    }
}

/// One client: login, then every packet it sends checked and forwarded.
async fn relay(mut client: TcpStream, auth: &Authenticator, upstream: SocketAddr) -> Result<(), FrontError> {
    let mut buf = BytesMut::with_capacity(4096);
    let first = tokio::time::timeout(Duration::from_secs(10), next_packet(&mut client, &mut buf))
        .await
        .map_err(|_| FrontError::NoConnect)??;
    let Some((connect_frame, Packet::Connect(connect))) = first else {
        return Err(FrontError::NoConnect);
    };
    let identity = match &connect.login {
        None => None,
        Some(login) => auth.check(&connect.client_id, &login.username, &login.password).await,
    };
    let refusal = match (&identity, &connect.login) {
        (Some(_), _) => None,
        (None, None) => Some(ConnectReturnCode::NotAuthorized),
        (None, Some(_)) => Some(ConnectReturnCode::BadUserNamePassword),
    };
    if let Some(code) = refusal {
        let mut out = BytesMut::new();
        let _ = Packet::ConnAck(ConnAck::new(code, false)).write(&mut out, MAX_PACKET);
        client.write_all(&out).await?;
        return Err(FrontError::Refused(code));
    }
    let device = match identity {
        Some(Identity::Device(id)) => Some(id),
        _ => None,
    };
    if let (Some(id), Some(will)) = (&device, &connect.last_will) {
        check(id, "will", &will.topic)?;
    }
    let upstream = TcpStream::connect(upstream).await?;
    let (mut from_broker, mut to_broker) = upstream.into_split();
    let (mut from_client, mut to_client) = client.into_split();
    to_broker.write_all(&connect_frame).await?;
    let down = async {
        tokio::io::copy(&mut from_broker, &mut to_client).await?;
        Ok::<_, FrontError>(())
    };
    let up = async {
        while let Some((frame, packet)) = next_packet(&mut from_client, &mut buf).await? {
            if let Some(id) = &device {
                match &packet {
                    Packet::Publish(publish) => check(id, "publish", &publish.topic)?,
                    Packet::Subscribe(subscribe) => {
                        for filter in &subscribe.filters {
                            check(id, "subscribe", &filter.path)?;
                        }
                    }
                    Packet::Connect(_) => return Err(FrontError::NoConnect),
                    _ => {}
                }
            }
            to_broker.write_all(&frame).await?;
        }
        Ok(())
    };
    tokio::select! {
        r = down => r,
        r = up => r,
    }
}

/// Whether device `id` may `what` (`publish`, `will`: device→backend; `subscribe`:
/// backend→device) `topic`: exactly one of its own topics of the right direction.
fn check(id: &str, what: &'static str, topic: &str) -> Result<(), FrontError> {
    let sends = what != "subscribe";
    match Topic::parse(topic) {
        Ok(t) if t.device() == id && t.kind().from_device() == sends => Ok(()),
        _ => Err(FrontError::Forbidden { what, topic: topic.to_owned() }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_device_is_confined_to_its_own_topics() {
        let ok = |what: &'static str, topic: &str| check("dev-a", what, topic).is_ok();
        for kind in ["hello", "get", "status"] {
            assert!(ok("publish", &format!("mota/v1/dev/dev-a/{kind}")));
            assert!(ok("will", &format!("mota/v1/dev/dev-a/{kind}")));
            assert!(!ok("subscribe", &format!("mota/v1/dev/dev-a/{kind}")), "its own {kind} is the backend's to read");
            assert!(!ok("publish", &format!("mota/v1/dev/dev-b/{kind}")));
        }
        for kind in ["offer", "chunk", "cmd"] {
            assert!(ok("subscribe", &format!("mota/v1/dev/dev-a/{kind}")));
            assert!(!ok("publish", &format!("mota/v1/dev/dev-a/{kind}")), "only the backend sends {kind}");
            assert!(!ok("subscribe", &format!("mota/v1/dev/dev-b/{kind}")));
        }
        for filter in [
            "mota/v1/dev/+/chunk",
            "mota/v1/dev/dev-a/+",
            "mota/v1/dev/dev-a/#",
            "#",
            "$share/mota-status/mota/v1/dev/+/status",
            "$share/g/mota/v1/dev/dev-a/offer",
            "mota/v1/dev/dev-a/chunk/x",
        ] {
            assert!(!ok("subscribe", filter), "{filter}");
        }
    }
}
