//! Host decode throughput (output bytes per second) of a fine-tune delta and of a
//! full-image patch, next to a plain copy of the same output as the anchor.
//!
//! Run: `cargo bench -p mota-delta --bench decode`

use std::hint::black_box;
use std::path::PathBuf;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use mota_delta::encode::{apply, full, make};

fn fixture(name: &str) -> Vec<u8> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../runtime/fixtures/models");
    std::fs::read(dir.join(format!("{name}.tflite"))).unwrap()
}

fn bench(c: &mut Criterion) {
    let (old, new) = (fixture("digits_cnn_v1"), fixture("digits_cnn_v2"));
    let delta = make(&old, &new);
    let image = full(&new);
    let mut group = c.benchmark_group("decode");
    group.throughput(Throughput::Bytes(new.len() as u64));
    group.bench_function("anchor: copy the output", |b| b.iter(|| black_box(new.to_vec())));
    group.bench_function("delta digits_cnn v1->v2", |b| b.iter(|| apply(black_box(&old), &delta).unwrap()));
    group.bench_function("full image digits_cnn v2", |b| b.iter(|| apply(black_box(&old), &image).unwrap()));
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
