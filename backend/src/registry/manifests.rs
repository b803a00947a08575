//! Signed manifests: one per (version, optional base, rollout), made on demand.
//!
//! The security counter is the version's, fixed when it was registered (the model's
//! counter, raised by one only when the upload asked), so every manifest of a version
//! carries the same counter, and a device that committed a raised counter can never be
//! moved back to a version from before the raise. With a base, the
//! manifest carries the computed patch when there is one; otherwise (delta still pending,
//! not smaller, or an unknown base) it carries the full image and says why. Ed25519 is
//! deterministic, so the same request signs to the same envelope: offers are stored once,
//! under the manifest's SHA-256.

use mota_proto::{Delta, Digest, Image, Manifest, Validation, Wire};
use serde::{Deserialize, Serialize};
use sqlx::Row;
use utoipa::ToSchema;

use super::{Registry, RegistryError};
use crate::blobs::{hex, parse_digest};
use crate::db::now_ms;
use crate::events;
use crate::signing::Signer;

/// What to sign.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ManifestRequest {
    /// SHA-256 (hex) of the image the devices run now: the manifest then carries a patch
    /// from it when one is computed.
    #[serde(default)]
    #[schema(pattern = "^[0-9a-fA-F]{64}$")]
    pub base_sha256: Option<String>,
    /// The rollout the offer belongs to (0 or absent: none).
    #[serde(default, deserialize_with = "crate::api::extract::opt_integral")]
    #[schema(minimum = 0, maximum = 9007199254740991_i64)] // 2^53 - 1: exact in every JSON parser
    pub rollout_id: Option<u64>,
    /// Unix seconds after which devices must not act on the offer (in the future).
    #[serde(default, deserialize_with = "crate::api::extract::opt_integral")]
    #[schema(minimum = 0, maximum = 9007199254740991_i64)] // 2^53 - 1: exact in every JSON parser
    pub expires_at: Option<u64>,
}

/// A signed manifest and what it says.
#[derive(Debug, Serialize, ToSchema)]
pub struct SignedManifest {
    /// SHA-256 (hex) of the manifest bytes.
    pub manifest_sha256: String,
    /// The envelope devices receive (hex of its CBOR bytes).
    pub envelope_hex: String,
    /// Id of the release key that signed it.
    pub key_id: String,
    /// Model name.
    pub model: String,
    /// Version string.
    pub version: String,
    /// Anti-rollback counter.
    pub security_counter: u32,
    /// Device class.
    pub device_class: String,
    /// The image devices end up with.
    pub image: ArtifactRef,
    /// The patch, when the manifest carries one.
    pub delta: Option<DeltaRef>,
    /// Why there is no patch although a base was given: `pending`, `not_smaller`,
    /// `failed`, `unknown_base`.
    pub delta_state: Option<String>,
    /// The acceptance rule.
    pub validation: Option<RuleView>,
    /// Tensor arena bytes.
    pub arena_bytes: u32,
    /// Rollout id (0: none).
    pub rollout_id: u64,
    /// Expiry, Unix seconds.
    pub expires_at: Option<u64>,
}

/// A blob by digest and size.
#[derive(Debug, Serialize, ToSchema)]
pub struct ArtifactRef {
    /// SHA-256 (hex).
    pub sha256: String,
    /// Bytes.
    pub size: u64,
}

/// A patch in a manifest.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeltaRef {
    /// The image it applies to.
    pub base_sha256: String,
    /// The patch.
    pub patch: ArtifactRef,
    /// mota-delta codec.
    pub codec: u16,
}

/// An acceptance rule.
#[derive(Debug, Serialize, ToSchema)]
pub struct RuleView {
    /// The set.
    pub set: ArtifactRef,
    /// Minimum accuracy, permille.
    pub min_accuracy_permille: u16,
    /// Largest drop below the running model, permille.
    pub max_drop_permille: u16,
}

/// The largest integer every JSON parser reads exactly (2^53 - 1).
const MAX_SAFE: u64 = (1 << 53) - 1;

fn digest(hex: &str) -> Result<[u8; 32], RegistryError> {
    parse_digest(hex).ok_or_else(|| RegistryError::Invalid(format!("not a SHA-256 in hex: {hex:?}")))
}

fn narrow<T: TryFrom<i64>>(what: &str, v: i64) -> Result<T, RegistryError> {
    T::try_from(v).map_err(|_| RegistryError::Invalid(format!("{what} {v} out of range")))
}

impl Registry {
    /// Signs a manifest for `model` `version`.
    pub async fn sign(
        &self,
        signer: &Signer,
        model: &str,
        version: &str,
        req: &ManifestRequest,
        actor: &str,
    ) -> Result<SignedManifest, RegistryError> {
        let now_s = (now_ms() / 1000) as u64;
        if [req.rollout_id, req.expires_at].into_iter().flatten().any(|v| v > MAX_SAFE) {
            return Err(RegistryError::Invalid(format!("rollout_id and expires_at are at most {MAX_SAFE}")));
        }
        if req.expires_at.is_some_and(|t| t <= now_s) {
            return Err(RegistryError::Invalid("expires_at is in the past".into()));
        }
        let row = sqlx::query(
            "SELECT v.id, m.device_class, v.security_counter, v.image_sha256, a.size, v.arena_bytes, \
             v.validation_sha256, s.size, v.min_accuracy_permille, v.max_drop_permille \
             FROM model_versions v JOIN models m ON m.id = v.model_id JOIN artifacts a ON a.sha256 = v.image_sha256 \
             LEFT JOIN artifacts s ON s.sha256 = v.validation_sha256 WHERE m.name = $1 AND v.version = $2",
        )
        .bind(model)
        .bind(version)
        .fetch_optional(&self.db.pool)
        .await?
        .ok_or_else(|| RegistryError::NotFound(format!("version {version} of model {model}")))?;
        let version_id: i64 = row.try_get(0)?;
        let class: String = row.try_get(1)?;
        let counter: u32 = narrow("security counter", row.try_get(2)?)?;
        let image_hex: String = row.try_get(3)?;
        let image = Image { size: narrow("image size", row.try_get(4)?)?, sha256: Digest(digest(&image_hex)?) };
        let arena_bytes: u32 = narrow("arena", row.try_get(5)?)?;
        let set_hex: Option<String> = row.try_get(6)?;
        let validation = match set_hex {
            Some(set_hex) => Some(Validation {
                set_sha256: Digest(digest(&set_hex)?),
                set_size: narrow("set size", row.try_get::<Option<i64>, _>(7)?.unwrap_or(0))?,
                min_accuracy_permille: narrow("min accuracy", row.try_get::<Option<i32>, _>(8)?.map_or(0, i64::from))?,
                max_drop_permille: narrow("max drop", row.try_get::<Option<i32>, _>(9)?.map_or(1000, i64::from))?,
            }),
            None => None,
        };
        let rollout_id = req.rollout_id.unwrap_or(0);
        if rollout_id != 0 {
            let known: Option<i64> = sqlx::query_scalar("SELECT id FROM rollouts WHERE id = $1")
                .bind(rollout_id as i64)
                .fetch_optional(&self.db.pool)
                .await?;
            if known.is_none() {
                return Err(RegistryError::NotFound(format!("rollout {rollout_id}")));
            }
        }
        let (delta, delta_state) = match &req.base_sha256 {
            None => (None, None),
            Some(base) => {
                let base = hex(&digest(&base.to_ascii_lowercase())?);
                if base == image_hex {
                    return Err(RegistryError::Invalid("base_sha256 is this version's own image".into()));
                }
                self.delta_for(&base, version_id).await?
            }
        };
        if !signer.counters.contains(&counter) {
            return Err(RegistryError::Invalid(format!(
                "security counter {counter} is outside the range {}..={} the root certified the release key \
                 for (devices would refuse it): certify a release key for it (mota keys release-new --min-counter)",
                signer.counters.start(),
                signer.counters.end()
            )));
        }
        let manifest = Manifest {
            format: mota_proto::manifest::FORMAT_VERSION,
            model,
            version,
            security_counter: counter,
            device_class: &class,
            image,
            delta,
            validation,
            arena_bytes,
            expires_at: req.expires_at,
            rollout_id,
        };
        let invalid = |e: mota_proto::EncodeError| RegistryError::Invalid(format!("manifest: {e}"));
        let manifest_bytes = manifest.to_vec().map_err(invalid)?;
        let envelope = signer.release.sign(&manifest).map_err(invalid)?;
        let manifest_sha256 = hex(&Digest::of(&manifest_bytes).0);
        let key_id = signer.release.key_id().to_string();
        let mut tx = self.db.begin().await?;
        let stored = sqlx::query(
            "INSERT INTO offers (manifest_sha256, rollout_id, version_id, base_sha256, envelope, key_id, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (manifest_sha256) DO NOTHING",
        )
        .bind(&manifest_sha256)
        .bind((rollout_id != 0).then_some(rollout_id as i64))
        .bind(version_id)
        .bind(delta.map(|d| hex(&d.base_sha256.0)))
        .bind(envelope.clone())
        .bind(&key_id)
        .bind(now_ms())
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if stored == 1 {
            let detail = serde_json::json!({ "manifest_sha256": manifest_sha256, "base_sha256": req.base_sha256,
                                             "delta": delta.is_some(), "rollout_id": rollout_id });
            events::record(&mut tx, actor, "manifest.signed", &format!("model:{model}/{version}"), &detail).await?;
        }
        tx.commit().await?;
        Ok(SignedManifest {
            manifest_sha256,
            envelope_hex: hex(&envelope),
            key_id,
            model: model.to_owned(),
            version: version.to_owned(),
            security_counter: counter,
            device_class: class.clone(),
            image: ArtifactRef { sha256: image_hex, size: u64::from(image.size) },
            delta: delta.map(|d| DeltaRef {
                base_sha256: hex(&d.base_sha256.0),
                patch: ArtifactRef { sha256: hex(&d.patch_sha256.0), size: u64::from(d.patch_size) },
                codec: d.codec,
            }),
            delta_state,
            validation: validation.map(|v| RuleView {
                set: ArtifactRef { sha256: hex(&v.set_sha256.0), size: u64::from(v.set_size) },
                min_accuracy_permille: v.min_accuracy_permille,
                max_drop_permille: v.max_drop_permille,
            }),
            arena_bytes,
            rollout_id,
            expires_at: req.expires_at,
        })
    }

    /// The patch from image `base` to the version, or why there is none.
    async fn delta_for(&self, base: &str, version_id: i64) -> Result<(Option<Delta>, Option<String>), RegistryError> {
        let found = sqlx::query(
            "SELECT d.patch_sha256, a.size, d.codec FROM deltas d JOIN artifacts a ON a.sha256 = d.patch_sha256 \
             WHERE d.base_sha256 = $1 AND d.version_id = $2",
        )
        .bind(base)
        .bind(version_id)
        .fetch_optional(&self.db.pool)
        .await?;
        if let Some(r) = found {
            let patch: String = r.try_get(0)?;
            let delta = Delta {
                base_sha256: Digest(digest(base)?),
                patch_size: narrow("patch size", r.try_get(1)?)?,
                patch_sha256: Digest(digest(&patch)?),
                codec: narrow("codec", i64::from(r.try_get::<i32, _>(2)?))?,
            };
            return Ok((Some(delta), None));
        }
        let state: Option<String> = sqlx::query_scalar(
            "SELECT j.state FROM delta_jobs j JOIN model_versions b ON b.id = j.base_version_id \
             WHERE b.image_sha256 = $1 AND j.version_id = $2",
        )
        .bind(base)
        .bind(version_id)
        .fetch_optional(&self.db.pool)
        .await?;
        Ok((None, Some(state.unwrap_or_else(|| "unknown_base".into()))))
    }
}
