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

use crate::cbor::{Decode, Decoder, Encode, Encoder, Malformed};
use crate::error::DecodeError;
use crate::ids::Digest;
use crate::limits::{self, MAX_CLASS_LEN, MAX_MANIFEST_LEN, MAX_MODEL_NAME_LEN};
use crate::wire::{Wire, precheck_format};

/// The manifest format this build reads and writes.
pub const FORMAT_VERSION: u16 = 1;
/// CBOR tag of a manifest ("mot" + 1; from the first-come-first-served range).
pub const TAG_MANIFEST: u64 = 0x6d6f_7401;

/// What an update is. Borrowed from the verified envelope bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Manifest<'a> {
    /// Always [`FORMAT_VERSION`] for values this build produces.
    pub format: u16,
    /// Model name, an identifier shared by all versions of one model.
    pub model: &'a str,
    /// Human version string (`1.4.0`); ordering is by `security_counter`, not by this.
    pub version: &'a str,
    /// Monotonic anti-rollback counter: a device takes only a strictly greater one.
    pub security_counter: u32,
    /// The class of devices this model is built for.
    pub device_class: &'a str,
    /// The model image the device must end up with.
    pub image: Image,
    /// Present when the offer carries a patch instead of the full image.
    pub delta: Option<Delta>,
    /// The acceptance rule the device checks before it commits.
    pub validation: Option<Validation>,
    /// Tensor arena bytes the model needs (computed by the backend with mota-runtime).
    pub arena_bytes: u32,
    /// Unix seconds after which the offer must not be acted on (needs trusted time).
    pub expires_at: Option<u64>,
    /// The rollout that made this offer; the first half of a status idempotency key.
    pub rollout_id: u64,
}

/// The full model image, as it must sit in the slot once rebuilt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Image {
    /// Exact size in bytes; the digest covers exactly these bytes, nothing after them.
    pub size: u32,
    /// SHA-256 of the image; also the artifact id to request its chunks by.
    pub sha256: Digest,
}

/// A patch from a base image the device already runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delta {
    /// SHA-256 of the base image; the device checks its active slot against it first.
    pub base_sha256: Digest,
    /// Patch size in bytes.
    pub patch_size: u32,
    /// SHA-256 of the patch; the artifact id to request its chunks by.
    pub patch_sha256: Digest,
    /// Patch codec, as numbered by mota-delta; proto does not interpret it.
    pub codec: u16,
}

/// The on-device acceptance rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Validation {
    /// SHA-256 of the validation set; the artifact id to request it by.
    pub set_sha256: Digest,
    /// Size of the validation set in bytes.
    pub set_size: u32,
    /// Minimum top-1 accuracy on the set, in permille.
    pub min_accuracy_permille: u16,
    /// Largest accepted drop below the accuracy of the running model on the same set,
    /// in permille.
    pub max_drop_permille: u16,
}

impl Encode for Manifest<'_> {
    fn encode(&self, e: &mut Encoder<'_>) {
        e.tag(TAG_MANIFEST);
        e.map(&[
            &self.format,
            &self.model,
            &self.version,
            &self.security_counter,
            &self.device_class,
            &self.image,
            &self.delta,
            &self.validation,
            &self.arena_bytes,
            &self.expires_at,
            &self.rollout_id,
        ]);
    }
}

impl<'a> Decode<'a> for Manifest<'a> {
    fn decode(d: &mut Decoder<'a>) -> Result<Self, Malformed> {
        d.tag(TAG_MANIFEST)?;
        let mut v = Self {
            format: 0,
            model: "",
            version: "",
            security_counter: 0,
            device_class: "",
            image: Image { size: 0, sha256: Digest([0; 32]) },
            delta: None,
            validation: None,
            arena_bytes: 0,
            expires_at: None,
            rollout_id: 0,
        };
        d.map(&mut [
            &mut v.format,
            &mut v.model,
            &mut v.version,
            &mut v.security_counter,
            &mut v.device_class,
            &mut v.image,
            &mut v.delta,
            &mut v.validation,
            &mut v.arena_bytes,
            &mut v.expires_at,
            &mut v.rollout_id,
        ])?;
        Ok(v)
    }
}

impl Encode for Image {
    fn encode(&self, e: &mut Encoder<'_>) {
        e.map(&[&self.size, &self.sha256]);
    }
}

impl Decode<'_> for Image {
    fn decode(d: &mut Decoder<'_>) -> Result<Self, Malformed> {
        let mut v = Self { size: 0, sha256: Digest([0; 32]) };
        d.map(&mut [&mut v.size, &mut v.sha256])?;
        Ok(v)
    }
}

impl Encode for Delta {
    fn encode(&self, e: &mut Encoder<'_>) {
        e.map(&[&self.base_sha256, &self.patch_size, &self.patch_sha256, &self.codec]);
    }
}

impl Decode<'_> for Delta {
    fn decode(d: &mut Decoder<'_>) -> Result<Self, Malformed> {
        let mut v = Self { base_sha256: Digest([0; 32]), patch_size: 0, patch_sha256: Digest([0; 32]), codec: 0 };
        d.map(&mut [&mut v.base_sha256, &mut v.patch_size, &mut v.patch_sha256, &mut v.codec])?;
        Ok(v)
    }
}

impl Encode for Validation {
    fn encode(&self, e: &mut Encoder<'_>) {
        e.map(&[&self.set_sha256, &self.set_size, &self.min_accuracy_permille, &self.max_drop_permille]);
    }
}

impl Decode<'_> for Validation {
    fn decode(d: &mut Decoder<'_>) -> Result<Self, Malformed> {
        let mut v = Self { set_sha256: Digest([0; 32]), set_size: 0, min_accuracy_permille: 0, max_drop_permille: 0 };
        d.map(&mut [&mut v.set_sha256, &mut v.set_size, &mut v.min_accuracy_permille, &mut v.max_drop_permille])?;
        Ok(v)
    }
}

impl<'a> Wire<'a> for Manifest<'a> {
    const MAX_LEN: usize = MAX_MANIFEST_LEN;
    const CANONICAL: bool = true;

    fn precheck(bytes: &[u8]) -> Result<(), DecodeError> {
        precheck_format(bytes, TAG_MANIFEST, FORMAT_VERSION)
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
    fn tag_matches_the_documented_number() {
        assert_eq!(TAG_MANIFEST, 1_836_020_737);
    }
}
