//! What accepting an offer costs on the host, next to its anchor: one plain Ed25519
//! verification of the same manifest bytes. `verify` checks two signatures (certificate
//! and manifest) and decodes three canonical structures, so its floor is about 2x.
//!
//! Run: `cargo bench -p mota-proto --bench verify`

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use ed25519_dalek::{Signature, SigningKey};
use mota_proto::message::{ErrorCode, Event, Status};
use mota_proto::sign::{ReleaseKey, certify};
use mota_proto::{DevicePolicy, Digest, Envelope, Image, Limits, Manifest, Wire, verify};

fn offer() -> (Vec<u8>, [u8; 32]) {
    let root = SigningKey::from_bytes(&[0x11; 32]);
    let release = SigningKey::from_bytes(&[0x33; 32]);
    let cert = certify(&root, &release.verifying_key(), u64::MAX, 0..=u32::MAX).unwrap();
    let manifest = Manifest {
        format: 1,
        model: "kws-dscnn",
        version: "1.4.0",
        security_counter: 7,
        device_class: "stm32f4-kws",
        image: Image { size: 52_344, sha256: Digest([0xa1; 32]) },
        delta: None,
        validation: None,
        arena_bytes: 23_552,
        expires_at: None,
        rollout_id: 42,
    };
    let envelope = ReleaseKey::new(release, cert).unwrap().sign(&manifest).unwrap();
    (envelope, root.verifying_key().to_bytes())
}

fn bench(c: &mut Criterion) {
    let (envelope, root) = offer();
    let policy = DevicePolicy {
        device_class: "stm32f4-kws",
        security_counter: 6,
        now: Some(1_800_000_000),
        revoked: &[],
        limits: Limits {
            max_image_bytes: 1 << 20,
            max_patch_bytes: 1 << 20,
            max_arena_bytes: 1 << 20,
            max_validation_bytes: 1 << 20,
        },
    };
    let env = Envelope::parse(&envelope).unwrap();
    let release = SigningKey::from_bytes(&[0x33; 32]).verifying_key();
    let signature = Signature::from_bytes(&env.signature);

    let mut group = c.benchmark_group("offer");
    group.bench_function("anchor: one ed25519 verify_strict of the manifest", |b| {
        b.iter(|| release.verify_strict(black_box(env.body), &signature).unwrap())
    });
    group.bench_function("mota_proto::verify (certificate + manifest)", |b| {
        b.iter(|| verify(black_box(&envelope), &[root], &policy).unwrap())
    });
    group.finish();

    let status = Status {
        rollout_id: 42,
        seq: 7,
        event: Event::Rejected,
        manifest: Some(Digest([0xe5; 32])),
        error: Some(ErrorCode::MODEL_INVALID),
        detail: Some("operator 17 (CUSTOM) unsupported"),
        ..Status::default()
    };
    let bytes = status.to_vec().unwrap();
    c.bench_function("status: parse one report", |b| b.iter(|| Status::parse(black_box(&bytes)).unwrap()));
}

criterion_group!(benches, bench);
criterion_main!(benches);
