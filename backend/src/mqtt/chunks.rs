//! The chunk service: answers a device's `get` with the bytes it asked for, or a refusal.
//!
//! A device is served only artifacts of a manifest it was offered, so a device id cannot
//! pull arbitrary blobs. During a rollout every device of a cohort asks for the same
//! patch and validation set chunk by chunk, so three things keep that off the database
//! and the blob store: allowed (device, artifact) pairs are remembered (offers are never
//! withdrawn, so a yes stays a yes), hot artifacts are kept whole in a bounded memory
//! cache (least recently used out first), and each device has a token bucket so one
//! misbehaving device cannot take the service from the fleet (it is told `rate_limited`
//! and, like a device told `unavailable`, asks again later).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use mota_proto::Wire;
use mota_proto::limits::MAX_CHUNK_LEN;
use mota_proto::message::{Chunk, Get, Refusal};
use mota_proto::topic::{Kind, Topic};

use super::offers::OfferError;
use super::publish::Publisher;
use crate::blobs::{BlobError, BlobStore, Blobs, hex};
use crate::db::Db;
use crate::metrics::Metrics;

/// How the service is bounded.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Bytes of artifacts kept in memory.
    pub cache_bytes: u64,
    /// Requests per second one device may make (0: unlimited).
    pub rate: f64,
    /// Requests a device may make at once after being idle.
    pub burst: f64,
}

/// Entries kept of remembered pairs and buckets before they are dropped and rebuilt.
const MAX_ENTRIES: usize = 200_000;

/// Artifacts larger than this share of the cache are read by range, not cached.
const CACHEABLE_SHARE: u64 = 4;

/// One replica's chunk service.
pub struct ChunkService {
    db: Db,
    blobs: Blobs,
    metrics: Arc<Metrics>,
    limits: Limits,
    allowed: Mutex<HashSet<(String, [u8; 32])>>,
    cache: Mutex<Cache>,
    buckets: Mutex<HashMap<String, Bucket>>,
}

#[derive(Default)]
struct Cache {
    bytes: u64,
    tick: u64,
    entries: HashMap<[u8; 32], (Arc<Vec<u8>>, u64)>,
}

impl Cache {
    fn get(&mut self, digest: &[u8; 32]) -> Option<Arc<Vec<u8>>> {
        self.tick += 1;
        let tick = self.tick;
        self.entries.get_mut(digest).map(|(bytes, used)| {
            *used = tick;
            Arc::clone(bytes)
        })
    }

    fn put(&mut self, digest: [u8; 32], bytes: Arc<Vec<u8>>, capacity: u64) {
        let len = bytes.len() as u64;
        while self.bytes + len > capacity {
            let Some(oldest) = self.entries.iter().min_by_key(|(_, (_, used))| *used).map(|(d, _)| *d) else { break };
            if let Some((gone, _)) = self.entries.remove(&oldest) {
                self.bytes -= gone.len() as u64;
            }
        }
        self.tick += 1;
        if let Some((old, _)) = self.entries.insert(digest, (bytes, self.tick)) {
            self.bytes -= old.len() as u64;
        }
        self.bytes += len;
    }
}

struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Bucket {
    /// Refills at `rate` per second up to `burst`, then takes one token if there is one.
    fn take(&mut self, now: Instant, rate: f64, burst: f64) -> bool {
        let refill = now.saturating_duration_since(self.at).as_secs_f64() * rate;
        self.tokens = (self.tokens + refill).min(burst);
        self.at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

impl ChunkService {
    /// A service over `db` and `blobs`.
    pub fn new(db: Db, blobs: Blobs, metrics: Arc<Metrics>, limits: Limits) -> Self {
        Self {
            db,
            blobs,
            metrics,
            limits,
            allowed: Mutex::default(),
            cache: Mutex::default(),
            buckets: Mutex::default(),
        }
    }

    /// Answers a `get` from `device` on its chunk topic: the bytes, or a refusal.
    pub async fn serve(&self, client: &dyn Publisher, device: &str, get: &Get) -> Result<(), OfferError> {
        let topic = Topic::new(device, Kind::Chunk)?.to_string();
        let data = self.read(device, get).await;
        let chunk = match &data {
            Ok(bytes) => {
                self.metrics.chunk_bytes.inc_by(bytes.len() as u64);
                Chunk::data(get.artifact, get.offset, bytes)
            }
            Err(refusal) => {
                self.metrics.refused(refusal.name().unwrap_or("other"));
                Chunk::refused(get.artifact, get.offset, *refusal)
            }
        };
        client.publish(topic, chunk.to_vec()?, false).await?;
        Ok(())
    }

    /// Takes a token from the device's bucket; false when it is empty.
    fn admit(&self, device: &str) -> bool {
        if self.limits.rate <= 0.0 {
            return true;
        }
        let now = Instant::now();
        let Ok(mut buckets) = self.buckets.lock() else { return true };
        if buckets.len() >= MAX_ENTRIES && !buckets.contains_key(device) {
            // Idle devices' buckets are full anyway: forgetting them changes nothing.
            buckets.retain(|_, b| now.duration_since(b.at).as_secs_f64() * self.limits.rate < self.limits.burst);
        }
        let bucket = buckets.entry(device.to_owned()).or_insert(Bucket { tokens: self.limits.burst, at: now });
        bucket.take(now, self.limits.rate, self.limits.burst)
    }

    /// Whether `artifact` belongs to a manifest offered to `device`.
    async fn offered(&self, device: &str, artifact: &[u8; 32]) -> Result<bool, Refusal> {
        let key = (device.to_owned(), *artifact);
        if self.allowed.lock().is_ok_and(|a| a.contains(&key)) {
            return Ok(true);
        }
        let hex = hex(artifact);
        let found: Option<String> = sqlx::query_scalar(
            "SELECT manifest_sha256 FROM device_offers WHERE device_id = $1 \
             AND (image_sha256 = $2 OR patch_sha256 = $2 OR set_sha256 = $2) LIMIT 1",
        )
        .bind(device)
        .bind(&hex)
        .fetch_optional(&self.db.pool)
        .await
        .map_err(|e| {
            tracing::warn!(device, "chunk: looking up the offers: {e}");
            Refusal::UNAVAILABLE
        })?;
        if found.is_some()
            && let Ok(mut allowed) = self.allowed.lock()
        {
            if allowed.len() >= MAX_ENTRIES {
                allowed.clear();
            }
            allowed.insert(key);
        }
        Ok(found.is_some())
    }

    /// The whole artifact from the cache, or loaded into it when it fits; `None` when it
    /// is too large to cache.
    async fn whole(&self, artifact: &[u8; 32]) -> Result<Option<Arc<Vec<u8>>>, BlobError> {
        if let Some(bytes) = self.cache.lock().ok().and_then(|mut c| c.get(artifact)) {
            self.metrics.chunk_cache_hits.inc();
            return Ok(Some(bytes));
        }
        let size = self.blobs.size(artifact).await?;
        if size > self.limits.cache_bytes / CACHEABLE_SHARE {
            return Ok(None);
        }
        let bytes = Arc::new(self.blobs.read_range(artifact, 0, size).await?);
        if let Ok(mut cache) = self.cache.lock() {
            cache.put(*artifact, Arc::clone(&bytes), self.limits.cache_bytes);
        }
        Ok(Some(bytes))
    }

    /// The bytes a `get` may have, or why not.
    async fn read(&self, device: &str, get: &Get) -> Result<Vec<u8>, Refusal> {
        if !self.admit(device) {
            return Err(Refusal::RATE_LIMITED);
        }
        if !self.offered(device, &get.artifact.0).await? {
            tracing::info!(device, artifact = %get.artifact, "chunk refused: not offered to this device");
            return Err(Refusal::NOT_OFFERED);
        }
        let len = u64::from(get.length).min(MAX_CHUNK_LEN as u64);
        let offset = u64::from(get.offset);
        let read = match self.whole(&get.artifact.0).await {
            Ok(Some(bytes)) => {
                let start = usize::try_from(offset).unwrap_or(usize::MAX).min(bytes.len());
                let end = start + usize::try_from(len).unwrap_or(usize::MAX).min(bytes.len() - start);
                Ok(bytes[start..end].to_vec())
            }
            Ok(None) => self.blobs.read_range(&get.artifact.0, offset, len).await,
            Err(e) => Err(e),
        };
        match read {
            Ok(bytes) if bytes.is_empty() => Err(Refusal::OUT_OF_RANGE),
            Ok(bytes) => Ok(bytes),
            Err(BlobError::Range { .. }) => Err(Refusal::OUT_OF_RANGE),
            Err(e) => {
                tracing::warn!(device, artifact = %get.artifact, "chunk: reading the blob: {e}");
                Err(Refusal::UNAVAILABLE)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_admits_its_burst_then_its_rate() {
        let start = Instant::now();
        let mut bucket = Bucket { tokens: 3.0, at: start };
        let admitted = (0..5).filter(|_| bucket.take(start, 10.0, 3.0)).count();
        assert_eq!(admitted, 3);
        let later = start + std::time::Duration::from_millis(250);
        let admitted = (0..5).filter(|_| bucket.take(later, 10.0, 3.0)).count();
        assert_eq!(admitted, 2, "a quarter second at 10/s refills two and a half");
        let much_later = start + std::time::Duration::from_secs(60);
        assert_eq!((0..10).filter(|_| bucket.take(much_later, 10.0, 3.0)).count(), 3, "never above the burst");
    }

    #[test]
    fn the_cache_keeps_the_recently_used_within_its_bytes() {
        let mut cache = Cache::default();
        let blob = |n: usize| Arc::new(vec![0u8; n]);
        cache.put([1; 32], blob(40), 100);
        cache.put([2; 32], blob(40), 100);
        assert!(cache.get(&[1; 32]).is_some(), "1 is now the most recent");
        cache.put([3; 32], blob(40), 100);
        assert!(cache.get(&[2; 32]).is_none(), "2 was the least recently used");
        assert!(cache.get(&[1; 32]).is_some() && cache.get(&[3; 32]).is_some());
        assert_eq!(cache.bytes, 80);
    }
}
