//! The manifest: everything a device needs to decide whether to take an update.
//!
//! Encoding (CBOR, canonical, tag [`TAG_MANIFEST`] around a map with integer keys;
//! optional fields are absent rather than null):
//!
//! | key | field | type |
//! |---|---|---|
//! | 0 | format version | uint, = [`FORMAT_VERSION`] |
//! | 1 | model name | text, identifier, ≤ 64 |
//! | 2 | version | text, ≤ 32 |
//! | 3 | security counter | uint32, anti-rollback |
//! | 4 | device class | text, identifier, ≤ 32 |
//! | 5 | image | map {0: size uint32 > 0, 1: sha256 bstr(32)} |
//! | 6 | delta (optional) | map {0: base sha256, 1: patch size uint32 > 0, 2: patch sha256, 3: codec uint16} |
//! | 7 | validation (optional) | map {0: set sha256, 1: set size uint32 > 0, 2: min accuracy ‰, 3: max drop ‰} |
//! | 8 | tensor arena bytes | uint32 |
//! | 9 | expiry (optional) | uint64 unix seconds |
//! | 10 | rollout id | uint64 |
//!
//! The tag makes the signed bytes self-describing: a signature over a manifest can never
//! be presented as a signature over a key certificate, which carries another tag.
//!
//! A manifest without a validation rule means "prove it loads and fits the arena";
//! the backend only omits it when the operator uploaded no validation set.

use minicbor::{Decode, Encode};

use crate::error::DecodeError;
use crate::ids::Digest;
use crate::limits::{self, MAX_CLASS_LEN, MAX_MANIFEST_LEN, MAX_MODEL_NAME_LEN};
use crate::wire::{Wire, precheck_format};

/// The manifest format this build reads and writes.
pub const FORMAT_VERSION: u16 = 1;
/// CBOR tag of a manifest ("mot" + 1; from the first-come-first-served range).
pub const TAG_MANIFEST: u64 = 0x6d6f_7401;

/// What an update is. Borrowed from the verified envelope bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Encode, Decode)]
#[cbor(map, tag(1836020737))]
pub struct Manifest<'a> {
    /// Always [`FORMAT_VERSION`] for values this build produces.
    #[n(0)]
    pub format: u16,
    /// Model name, an identifier shared by all versions of one model.
    #[b(1)]
    pub model: &'a str,
    /// Human version string (`1.4.0`); ordering is by `security_counter`, not by this.
    #[b(2)]
    pub version: &'a str,
    /// Monotonic anti-rollback counter: a device takes only a strictly greater one.
    #[n(3)]
    pub security_counter: u32,
    /// The class of devices this model is built for.
    #[b(4)]
    pub device_class: &'a str,
    /// The model image the device must end up with.
    #[n(5)]
    pub image: Image,
    /// Present when the offer carries a patch instead of the full image.
    #[n(6)]
    pub delta: Option<Delta>,
    /// The acceptance rule the device checks before it commits.
    #[n(7)]
    pub validation: Option<Validation>,
    /// Tensor arena bytes the model needs (computed by the backend with mota-runtime).
    #[n(8)]
    pub arena_bytes: u32,
    /// Unix seconds after which the offer must not be acted on (needs trusted time).
    #[n(9)]
    pub expires_at: Option<u64>,
    /// The rollout that made this offer; the first half of a status idempotency key.
    #[n(10)]
    pub rollout_id: u64,
}

/// The full model image, as it must sit in the slot once rebuilt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Encode, Decode)]
#[cbor(map)]
pub struct Image {
    /// Exact size in bytes; the digest covers exactly these bytes, nothing after them.
    #[n(0)]
    pub size: u32,
    /// SHA-256 of the image; also the artifact id to request its chunks by.
    #[n(1)]
    pub sha256: Digest,
}

/// A patch from a base image the device already runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Encode, Decode)]
#[cbor(map)]
pub struct Delta {
    /// SHA-256 of the base image; the device checks its active slot against it first.
    #[n(0)]
    pub base_sha256: Digest,
    /// Patch size in bytes.
    #[n(1)]
    pub patch_size: u32,
    /// SHA-256 of the patch; the artifact id to request its chunks by.
    #[n(2)]
    pub patch_sha256: Digest,
    /// Patch codec, as numbered by mota-delta; proto does not interpret it.
    #[n(3)]
    pub codec: u16,
}

/// The on-device acceptance rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Encode, Decode)]
#[cbor(map)]
pub struct Validation {
    /// SHA-256 of the validation set; the artifact id to request it by.
    #[n(0)]
    pub set_sha256: Digest,
    /// Size of the validation set in bytes.
    #[n(1)]
    pub set_size: u32,
    /// Minimum top-1 accuracy on the set, in permille.
    #[n(2)]
    pub min_accuracy_permille: u16,
    /// Largest accepted drop below the accuracy of the running model on the same set,
    /// in permille.
    #[n(3)]
    pub max_drop_permille: u16,
}

impl<'a> Wire<'a> for Manifest<'a> {
    const MAX_LEN: usize = MAX_MANIFEST_LEN;
    const CANONICAL: bool = true;

    fn precheck(bytes: &[u8]) -> Result<(), DecodeError> {
        precheck_format(bytes, Some(TAG_MANIFEST), FORMAT_VERSION)
    }

    fn check(&self) -> Result<(), DecodeError> {
        if self.format != FORMAT_VERSION {
            return Err(DecodeError::UnsupportedFormat { found: self.format });
        }
        limits::check_ident("model", self.model, MAX_MODEL_NAME_LEN)?;
        limits::check_version("version", self.version)?;
        limits::check_ident("device_class", self.device_class, MAX_CLASS_LEN)?;
        if self.image.size == 0 {
            return Err(DecodeError::InvalidValue { field: "image.size" });
        }
        if let Some(delta) = &self.delta
            && delta.patch_size == 0
        {
            return Err(DecodeError::InvalidValue { field: "delta.patch_size" });
        }
        if let Some(v) = &self.validation {
            if v.set_size == 0 {
                return Err(DecodeError::InvalidValue { field: "validation.set_size" });
            }
            limits::check_permille("validation.min_accuracy_permille", v.min_accuracy_permille)?;
            limits::check_permille("validation.max_drop_permille", v.max_drop_permille)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tag_attribute_matches_the_constant() {
        assert_eq!(TAG_MANIFEST, 1_836_020_737);
    }
}
