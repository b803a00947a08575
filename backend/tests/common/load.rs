//! What the ingest benchmarks load the backend with: a device's `hello` and the reports
//! it sends for one update, and MQTT load clients (a QoS 1 publisher that times itself,
//! a subscriber that counts what arrives), plus the benches' environment knobs.

use std::sync::Arc;
use std::time::{Duration, Instant};

use mota_proto::message::{DeviceInfo, Event, Hello, RunningModel, Status};
use mota_proto::{Digest, Wire};
use rumqttc::{AsyncClient, MqttOptions, Packet, QoS};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::BoxError;

/// `name` from the environment, parsed, else `default`.
pub fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// A device's `hello`: running the factory image `running`, asking `max_chunk` bytes a chunk.
pub fn device_hello(running: Digest, max_chunk: u32) -> Result<Vec<u8>, BoxError> {
    Ok(Hello::online(DeviceInfo {
        device_class: "mcu",
        agent_version: "bench-1",
        running: Some(RunningModel { model: "factory", version: "factory", sha256: running }),
        security_counter: 1,
        slot_bytes: 128 * 1024,
        arena_bytes: 64 * 1024,
        // The delta codec the agent decodes (a device without it is sent full images).
        codecs: 1 << mota_delta::format::CODEC,
        max_chunk,
        next_seq: None,
        revocation_seq: None,
    })
    .to_vec()?)
}

/// The ten reports a device sends for one update of rollout `rollout` (accepted,
/// 7 × downloading, verified, committed with its measurements), distinct keys.
pub fn update_reports(rollout: u64, manifest: Digest, image: u32) -> Result<Vec<Vec<u8>>, BoxError> {
    let mut out = Vec::new();
    let base = Status { rollout_id: rollout, manifest: Some(manifest), ..Default::default() };
    out.push(Status { seq: 1, event: Event::Accepted, bytes_done: Some(0), ..base });
    for k in 1..=7u32 {
        out.push(Status { seq: 1 + k, event: Event::Downloading, bytes_done: Some(k * 8192), ..base });
    }
    out.push(Status { seq: 9, event: Event::Verified, bytes_done: Some(image), ..base });
    let measured = Status {
        accuracy_permille: Some(1000),
        previous_accuracy_permille: Some(980),
        latency_us: Some(1800),
        previous_latency_us: Some(1750),
        arena_used: Some(15_000),
        ..base
    };
    out.push(Status { seq: 10, event: Event::Committed, ..measured });
    Ok(out.into_iter().map(|s| s.to_vec()).collect::<Result<_, _>>()?)
}

/// A clean-session client of the broker on `port` with a request queue of `capacity`.
pub fn options(id: &str, port: u16, capacity: usize) -> (AsyncClient, rumqttc::EventLoop) {
    let mut o = MqttOptions::new(id, "127.0.0.1", port);
    o.set_keep_alive(Duration::from_secs(60)).set_max_packet_size(64 * 1024, 64 * 1024).set_clean_session(true);
    AsyncClient::new(o, capacity)
}

/// Publishes `messages` (QoS 1) once connected; resolves to (first publish, all acked).
pub fn publisher(
    id: &str,
    port: u16,
    messages: Arc<Vec<(String, Vec<u8>)>>,
) -> JoinHandle<Result<(Instant, Instant), BoxError>> {
    let (client, mut events) = options(id, port, 1024);
    let n = messages.len();
    let (connected, connack) = oneshot::channel();
    let acks = tokio::spawn(async move {
        let mut connected = Some(connected);
        let mut acked = 0;
        loop {
            match events.poll().await {
                Ok(rumqttc::Event::Incoming(Packet::ConnAck(_))) => {
                    if let Some(c) = connected.take() {
                        let _ = c.send(());
                    }
                }
                Ok(rumqttc::Event::Incoming(Packet::PubAck(_))) => {
                    acked += 1;
                    if acked == n {
                        return Ok::<_, String>(Instant::now());
                    }
                }
                Ok(_) => {}
                Err(e) => return Err(format!("load publisher: {e}")),
            }
        }
    });
    tokio::spawn(async move {
        connack.await?;
        let start = Instant::now();
        for (topic, payload) in messages.iter() {
            client.publish(topic.clone(), QoS::AtLeastOnce, false, payload.clone()).await?;
        }
        let done = acks.await??;
        let _ = client.try_disconnect();
        Ok((start, done))
    })
}

/// What a [`subscriber`] resolves to: when the last message came, Σ measured, refused.
pub type Received = (Instant, u64, usize);

/// A subscriber on `filter` (QoS 1): `ready` once subscribed; resolves at the `n`-th
/// message to (its time, Σ `measure(payload)`, messages `measure` refused).
pub fn subscriber(
    id: &str,
    port: u16,
    filter: &str,
    n: usize,
    measure: fn(&[u8]) -> Option<u64>,
) -> (oneshot::Receiver<()>, JoinHandle<Result<Received, BoxError>>) {
    let (client, mut events) = options(id, port, 64);
    let filter = filter.to_owned();
    let (ready, subscribed) = oneshot::channel();
    let task = tokio::spawn(async move {
        let mut ready = Some(ready);
        let (mut got, mut bytes, mut refused) = (0usize, 0u64, 0usize);
        loop {
            match events.poll().await {
                Ok(rumqttc::Event::Incoming(Packet::ConnAck(_))) => {
                    client.try_subscribe(filter.clone(), QoS::AtLeastOnce)?
                }
                Ok(rumqttc::Event::Incoming(Packet::SubAck(_))) => {
                    if let Some(r) = ready.take() {
                        let _ = r.send(());
                    }
                }
                Ok(rumqttc::Event::Incoming(Packet::Publish(p))) => {
                    got += 1;
                    match measure(&p.payload) {
                        Some(b) => bytes += b,
                        None => refused += 1,
                    }
                    if got == n {
                        let at = Instant::now();
                        let _ = client.try_disconnect();
                        return Ok((at, bytes, refused));
                    }
                }
                Ok(_) => {}
                Err(e) => return Err(format!("subscriber {filter}: {e}").into()),
            }
        }
    });
    (subscribed, task)
}
