//! The delta worker: computes patches from recent versions to each new one, in the
//! background, on every replica.
//!
//! Jobs are rows (`delta_jobs`), queued in the upload's transaction, so none is lost to a
//! crash; a replica claims one with a conditional update (only if unclaimed or its claim
//! is stale), so two replicas never compute the same patch at once, and a job whose
//! replica died is taken up again. A patch is `mota_delta::encode::best` (never larger
//! than the full image) and is applied back onto its base before it is stored: a patch
//! the backend offers always rebuilds exactly the image the manifest names.

use std::time::{Duration, Instant};

use mota_delta::format::{HEADER, Header};
use sqlx::Row;

use super::{Registry, RegistryError, blocking, insert_artifact};
use crate::blobs::{BlobStore, parse_digest};
use crate::db::now_ms;
use crate::events;

/// A claim older than this is presumed dead and the job is taken up again.
const STALE_MS: i64 = 10 * 60 * 1000;
/// How often an idle worker looks for jobs queued by other replicas.
const POLL: Duration = Duration::from_secs(30);

/// What a job found.
enum Outcome {
    /// A patch smaller than the full image, checked.
    Patch(Vec<u8>),
    /// The full image is as small: offers against this base carry the full image.
    NotSmaller,
}

/// Runs jobs until the task is dropped: whenever woken, and every [`POLL`].
pub async fn worker(registry: Registry) {
    loop {
        match registry.run_delta_jobs().await {
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "delta jobs"),
        }
        let _ = tokio::time::timeout(POLL, registry.wake.notified()).await;
    }
}

impl Registry {
    /// Runs every job this replica can claim; returns how many it ran.
    pub async fn run_delta_jobs(&self) -> Result<usize, RegistryError> {
        let mut ran = 0;
        while let Some((base_id, version_id)) = self.claim().await? {
            let started = Instant::now();
            let result = self.compute(base_id, version_id).await;
            let (state, detail) = match &result {
                Ok((Outcome::Patch(p), base_size, size)) => (
                    "done",
                    serde_json::json!({ "patch_size": p.len(), "base_size": base_size, "image_size": size,
                                        "ms": started.elapsed().as_millis() as u64 }),
                ),
                Ok((Outcome::NotSmaller, _, size)) => ("not_smaller", serde_json::json!({ "image_size": size })),
                Err(e) => ("failed", serde_json::json!({ "error": e.to_string() })),
            };
            let mut tx = self.db.begin().await?;
            if let Ok((Outcome::Patch(patch), _, _)) = &result {
                let (digest, size) = self.blobs.put(&patch[..], None, self.max_model_bytes).await?;
                insert_artifact(&mut tx, &digest, "patch", size).await?;
                sqlx::query(
                    "INSERT INTO deltas (base_sha256, version_id, patch_sha256, codec, created_at) \
                     SELECT image_sha256, $1, $2, $3, $4 FROM model_versions WHERE id = $5 \
                     ON CONFLICT (base_sha256, version_id) DO NOTHING",
                )
                .bind(version_id)
                .bind(crate::blobs::hex(&digest))
                .bind(i32::from(mota_delta::format::CODEC))
                .bind(now_ms())
                .bind(base_id)
                .execute(&mut *tx)
                .await?;
            }
            sqlx::query(
                "UPDATE delta_jobs SET state = $1, detail = $2, updated_at = $3 \
                 WHERE base_version_id = $4 AND version_id = $5",
            )
            .bind(state)
            .bind(detail.to_string())
            .bind(now_ms())
            .bind(base_id)
            .bind(version_id)
            .execute(&mut *tx)
            .await?;
            let subject = format!("delta:{base_id}->{version_id}");
            events::record(&mut tx, "backend", &format!("delta.{state}"), &subject, &detail).await?;
            tx.commit().await?;
            ran += 1;
        }
        Ok(ran)
    }

    /// Claims the oldest claimable job.
    async fn claim(&self) -> Result<Option<(i64, i64)>, RegistryError> {
        loop {
            let stale = now_ms() - STALE_MS;
            let next: Option<(i64, i64)> = sqlx::query_as(
                "SELECT base_version_id, version_id FROM delta_jobs \
                 WHERE state = 'pending' AND (claimed_at IS NULL OR claimed_at < $1) ORDER BY updated_at LIMIT 1",
            )
            .bind(stale)
            .fetch_optional(&self.db.pool)
            .await?;
            let Some((base, version)) = next else { return Ok(None) };
            let claimed = sqlx::query(
                "UPDATE delta_jobs SET claimed_at = $1 WHERE base_version_id = $2 AND version_id = $3 \
                 AND state = 'pending' AND (claimed_at IS NULL OR claimed_at < $4)",
            )
            .bind(now_ms())
            .bind(base)
            .bind(version)
            .bind(stale)
            .execute(&self.db.pool)
            .await?
            .rows_affected();
            if claimed == 1 {
                return Ok(Some((base, version)));
            }
            // Another replica took it between the two statements: look again.
        }
    }

    /// The patch from `base_id`'s image to `version_id`'s, with both sizes.
    async fn compute(&self, base_id: i64, version_id: i64) -> Result<(Outcome, u64, u64), RegistryError> {
        let row = sqlx::query(
            "SELECT b.image_sha256, v.image_sha256 FROM model_versions b, model_versions v WHERE b.id = $1 AND v.id = $2",
        )
        .bind(base_id)
        .bind(version_id)
        .fetch_optional(&self.db.pool)
        .await?
        .ok_or_else(|| RegistryError::NotFound(format!("versions {base_id} and {version_id}")))?;
        let mut images = Vec::with_capacity(2);
        for i in 0..2 {
            let hex: String = row.try_get(i)?;
            let digest = parse_digest(&hex).ok_or_else(|| RegistryError::Invalid(format!("stored digest {hex}")))?;
            let size = self.blobs.size(&digest).await?;
            images.push(self.blobs.read_range(&digest, 0, size).await?);
        }
        let target = images.pop().unwrap_or_default();
        let base = images.pop().unwrap_or_default();
        let sizes = (base.len() as u64, target.len() as u64);
        let outcome = blocking(move || {
            let patch = mota_delta::encode::best(&base, &target);
            let header = patch.first_chunk::<HEADER>().and_then(|h| Header::parse(h).ok());
            match header {
                Some(h) if h.base_size == 0 => Ok(Outcome::NotSmaller),
                Some(_) if mota_delta::encode::apply(&base, &patch).is_ok_and(|rebuilt| rebuilt == target) => {
                    Ok(Outcome::Patch(patch))
                }
                _ => Err(RegistryError::Invalid("the patch does not rebuild the image".into())),
            }
        })
        .await??;
        Ok((outcome, sizes.0, sizes.1))
    }
}
