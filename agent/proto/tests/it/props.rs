//! Properties over generated values and bytes: round trips, canonical uniqueness, and
//! decoders that never panic whatever they are fed.

use mota_proto::message::{Chunk, DeviceInfo, ErrorCode, Event, Get, Hello, Refusal, RunningModel, Status};
use mota_proto::{
    Action, CertBody, CommandBody, Delta, Digest, Envelope, Image, KeyCertificate, KeyId, Manifest, RevocationBody,
    Target, Validation, Wire, verify, verify_command, verify_revocation,
};
use proptest::prelude::*;

use crate::fixtures;

const IDENT: &str = "[A-Za-z0-9._-]{1,32}";
const VERSION: &str = "[A-Za-z0-9.+_-]{1,32}";

fn digest() -> impl Strategy<Value = Digest> {
    any::<[u8; 32]>().prop_map(Digest)
}

/// Owned parts of a manifest (a `Manifest` borrows its strings).
#[derive(Debug, Clone)]
struct ManifestParts {
    model: String,
    version: String,
    class: String,
    counter: u32,
    image: Image,
    delta: Option<Delta>,
    validation: Option<Validation>,
    arena: u32,
    expires: Option<u64>,
    rollout: u64,
}

impl ManifestParts {
    fn manifest(&self) -> Manifest<'_> {
        Manifest {
            format: 1,
            model: &self.model,
            version: &self.version,
            security_counter: self.counter,
            device_class: &self.class,
            image: self.image,
            delta: self.delta,
            validation: self.validation,
            arena_bytes: self.arena,
            expires_at: self.expires,
            rollout_id: self.rollout,
        }
    }
}

fn manifest_parts() -> impl Strategy<Value = ManifestParts> {
    let image = (1..=u32::MAX, digest()).prop_map(|(size, sha256)| Image { size, sha256 });
    let delta =
        (digest(), 1..=u32::MAX, digest(), any::<u16>()).prop_map(|(base_sha256, patch_size, patch_sha256, codec)| {
            Delta { base_sha256, patch_size, patch_sha256, codec }
        });
    let validation =
        (digest(), 1..=u32::MAX, 0..=1000u16, 0..=1000u16).prop_map(|(set_sha256, set_size, min, drop)| Validation {
            set_sha256,
            set_size,
            min_accuracy_permille: min,
            max_drop_permille: drop,
        });
    (
        (IDENT, VERSION, IDENT, any::<u32>()),
        (image, proptest::option::of(delta), proptest::option::of(validation)),
        (any::<u32>(), proptest::option::of(any::<u64>()), any::<u64>()),
    )
        .prop_map(|((model, version, class, counter), (image, delta, validation), (arena, expires, rollout))| {
            ManifestParts { model, version, class, counter, image, delta, validation, arena, expires, rollout }
        })
}

/// Encodes, decodes, and checks the value and bytes survive unchanged.
fn round_trip<'a, T: Wire<'a> + PartialEq + std::fmt::Debug>(
    value: &T,
    buf: &'a mut Vec<u8>,
) -> Result<(), TestCaseError> {
    *buf = value.to_vec().map_err(|e| TestCaseError::fail(e.to_string()))?;
    prop_assert_eq!(buf.len(), value.encoded_len());
    let decoded = T::parse(buf).map_err(|e| TestCaseError::fail(e.to_string()))?;
    prop_assert_eq!(&decoded, value);
    Ok(())
}

/// Canonical types have one encoding per value: whatever decodes re-encodes identically.
fn canonical_if_decodes<'a, T: Wire<'a>>(bytes: &'a [u8]) -> Result<(), TestCaseError> {
    if let Ok(value) = T::parse(bytes) {
        prop_assert!(T::CANONICAL);
        prop_assert_eq!(value.to_vec().unwrap(), bytes);
    }
    Ok(())
}

/// Feeds bytes to every decoder and to `verify`; none may panic.
fn decode_everything(bytes: &[u8]) -> Result<(), TestCaseError> {
    canonical_if_decodes::<Manifest>(bytes)?;
    canonical_if_decodes::<Envelope>(bytes)?;
    canonical_if_decodes::<KeyCertificate>(bytes)?;
    canonical_if_decodes::<CertBody>(bytes)?;
    let _ = Hello::parse(bytes);
    let _ = Get::parse(bytes);
    let _ = Chunk::parse(bytes);
    let _ = Status::parse(bytes);
    canonical_if_decodes::<CommandBody>(bytes)?;
    canonical_if_decodes::<RevocationBody>(bytes)?;
    let _ = verify_command(bytes, &fixtures::roots(), &[], None, fixtures::DEVICE);
    let _ = verify_revocation(bytes, &fixtures::roots());
    let _ = verify(bytes, &fixtures::roots(), &fixtures::policy());
    Ok(())
}

/// Valid encodings of every type, to mutate.
fn seeds() -> Vec<Vec<u8>> {
    vec![
        fixtures::manifest().to_vec().unwrap(),
        fixtures::manifest_minimal().to_vec().unwrap(),
        fixtures::envelope(),
        fixtures::release().certificate().to_vec(),
        fixtures::hello_online().to_vec().unwrap(),
        fixtures::get().to_vec().unwrap(),
        fixtures::chunk_data().to_vec().unwrap(),
        fixtures::status_committed().to_vec().unwrap(),
        fixtures::status_rejected().to_vec().unwrap(),
        fixtures::cmd_rollback(),
        fixtures::command_cancel().to_vec().unwrap(),
        fixtures::revocation(),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn manifest_round_trips(parts in manifest_parts()) {
        let manifest = parts.manifest();
        round_trip(&manifest, &mut Vec::new())?;
    }

    #[test]
    fn signed_manifests_verify_and_round_trip(parts in manifest_parts(), not_after in any::<u64>()) {
        let manifest = parts.manifest();
        let release = fixtures::release_by(&fixtures::root(), not_after);
        let envelope = release.sign(&manifest).unwrap();
        let decoded = Envelope::parse(&envelope).unwrap();
        prop_assert_eq!(decoded.to_vec().unwrap(), envelope.clone());
        round_trip(&decoded.certificate, &mut Vec::new())?;
        let policy = mota_proto::DevicePolicy {
            device_class: manifest.device_class,
            security_counter: manifest.security_counter.wrapping_sub(1),
            now: None,
            revoked: &[],
            limits: mota_proto::Limits {
                max_image_bytes: u32::MAX,
                max_patch_bytes: u32::MAX,
                max_arena_bytes: u32::MAX,
                max_validation_bytes: u32::MAX,
            },
        };
        let result = verify(&envelope, &fixtures::roots(), &policy);
        if !fixtures::COUNTERS.contains(&manifest.security_counter) {
            let outside = matches!(result, Err(mota_proto::VerifyError::CounterOutsideCertificate { .. }));
            prop_assert!(outside);
        } else if manifest.security_counter == 0 {
            let downgrade = matches!(result, Err(mota_proto::VerifyError::Downgrade { .. }));
            prop_assert!(downgrade);
        } else {
            prop_assert_eq!(result.unwrap().manifest, manifest);
        }
    }

    #[test]
    fn cert_body_round_trips(
        key_id in any::<[u8; 8]>(), public_key in any::<[u8; 32]>(), not_after in any::<u64>(),
        min_counter in any::<u32>(), span in any::<u32>(),
    ) {
        let max_counter = min_counter.saturating_add(span);
        let body = CertBody { format: 2, key_id: KeyId(key_id), public_key, not_after, min_counter, max_counter };
        round_trip(&body, &mut Vec::new())?;
    }

    #[test]
    fn commands_and_revocations_round_trip(
        device in IDENT, rollout_id in any::<u64>(), subject in digest(), image in digest(),
        manifest in proptest::option::of(digest()), rollback in any::<bool>(), seq in any::<u32>(),
        keys in proptest::collection::vec(any::<[u8; 8]>(), 0..=8),
    ) {
        let (action, target) =
            if rollback { (Action::Rollback, Some(Target { image, manifest })) } else { (Action::Cancel, None) };
        round_trip(&CommandBody { format: 1, device: &device, rollout_id, action, subject, target }, &mut Vec::new())?;
        let revoked: Vec<u8> = keys.concat();
        round_trip(&RevocationBody { format: 1, seq, revoked: &revoked }, &mut Vec::new())?;
    }

    #[test]
    fn hello_round_trips(
        class in IDENT, agent in VERSION, model in proptest::option::of((IDENT, VERSION, digest())),
        counter in any::<u32>(), slot in any::<u32>(), arena in any::<u32>(), codecs in any::<u32>(),
        max_chunk in 1..=16384u32, next_seq in proptest::option::of(any::<u32>()), online in any::<bool>(),
        revocation_seq in proptest::option::of(any::<u32>()),
    ) {
        let running = model.as_ref().map(|(m, v, d)| RunningModel { model: m, version: v, sha256: *d });
        let info = DeviceInfo {
            device_class: &class, agent_version: &agent, running, security_counter: counter,
            slot_bytes: slot, arena_bytes: arena, codecs, max_chunk, next_seq, revocation_seq,
        };
        let hello = if online { Hello::online(info) } else { Hello::OFFLINE };
        round_trip(&hello, &mut Vec::new())?;
    }

    #[test]
    fn get_and_chunk_round_trip(
        artifact in digest(), offset in 0..=u32::MAX - 16384, length in 1..=16384u32,
        data in proptest::collection::vec(any::<u8>(), 1..=1024), refusal in any::<u16>(), refuse in any::<bool>(),
    ) {
        round_trip(&Get { artifact, offset, length }, &mut Vec::new())?;
        let chunk = if refuse {
            Chunk::refused(artifact, offset, Refusal(refusal))
        } else {
            Chunk::data(artifact, offset, &data)
        };
        round_trip(&chunk, &mut Vec::new())?;
    }

    #[test]
    fn status_round_trips(
        rollout_id in any::<u64>(), seq in any::<u32>(), event in 0..8u8, manifest in proptest::option::of(digest()),
        bytes_done in proptest::option::of(any::<u32>()), accuracy in proptest::option::of(0..=1000u16),
        previous in proptest::option::of(0..=1000u16), latency in proptest::option::of(any::<u32>()),
        arena in proptest::option::of(any::<u32>()), error in proptest::option::of(any::<u16>()),
        detail in proptest::option::of("[ -~]{0,96}"),
        target in proptest::option::of((digest(), proptest::option::of(digest()))),
    ) {
        let event = [
            Event::Accepted, Event::Downloading, Event::Verified, Event::Validated,
            Event::Committed, Event::Rejected, Event::RolledBack, Event::Cancelled,
        ][event as usize];
        let status = Status {
            rollout_id, seq, event, manifest, bytes_done, accuracy_permille: accuracy,
            previous_accuracy_permille: previous, latency_us: latency, previous_latency_us: latency,
            arena_used: arena, error: error.map(ErrorCode), detail: detail.as_deref(),
            rollback_target: target.map(|(image, manifest)| Target { image, manifest }),
        };
        round_trip(&status, &mut Vec::new())?;
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        decode_everything(&bytes)?;
    }

    #[test]
    fn mutated_encodings_never_panic(
        seed in 0..12usize,
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0..3u8), 1..8),
    ) {
        let mut bytes = seeds().swap_remove(seed);
        for (at, byte, op) in edits {
            if bytes.is_empty() { break; }
            let i = at.index(bytes.len());
            match op {
                0 => bytes[i] = byte,
                1 => { bytes.truncate(i); }
                _ => bytes.insert(i, byte),
            }
        }
        decode_everything(&bytes)?;
    }
}
