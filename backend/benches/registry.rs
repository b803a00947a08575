//! Registry costs on the host, each next to an anchor measured in the same run.
//!
//! - `upload`: one iteration registers a new version of the ~1 MB int8 MLP
//!   (`bench/large_mlp.tflite`) through the in-memory router on the embedded defaults
//!   (SQLite, local blobs in a temporary directory on disk) and signs its manifest:
//!   `POST /v1/models/large/versions?version=V` (checked with mota-runtime, blob stored
//!   and fsynced, rows, delta jobs and audit event in one transaction) then
//!   `POST .../versions/V/manifests {}`. Anchor: the storage floor, SHA-256 of the bytes
//!   plus `LocalBlobs::put` of them (which hashes again while it writes, fsyncs and
//!   renames). `upload-parts` times the pieces alone (hash, mota-runtime check, put).
//! - `delta`: per pair of `agent/delta/bench/pairs/*/*/`, what the delta worker runs for
//!   one job: `mota_delta::encode::best(old, new)` and the apply-back check
//!   (`encode::apply` compared with the target). Anchor: `encode::full(new)`, the
//!   full-image patch `best` also builds. Plus the 1 MB pair `bench/large_mlp.tflite` ->
//!   `bench/large_mlp_ft.tflite` when the fine-tune was generated
//!   (`make_large_model.py --finetune bench/large_mlp_ft.tflite`).
//!
//! After criterion's own report, a table of medians per sample (ms, MB/s, ratio to the
//! anchor) is printed from the very samples criterion took.
//!
//! Run: `cargo bench -p mota-backend --bench registry` (filters work:
//! `-- upload`, `-- delta/kws`).

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use criterion::{Criterion, SamplingMode, Throughput};
use mota_backend::Config;
use mota_backend::blobs::{BlobStore, LocalBlobs};
use mota_backend::server::{open, router};
use mota_backend::tokens::{self, Role};
use sha2::{Digest, Sha256};
use tower::ServiceExt;

const MANIFEST_DIR: &str = env!("CARGO_MANIFEST_DIR");

thread_local! {
    /// Per benchmark id: (iterations, elapsed) of every call criterion made (warm-up first).
    static SAMPLES: RefCell<BTreeMap<String, Vec<(u64, Duration)>>> = const { RefCell::new(BTreeMap::new()) };
}

/// Times `iters` runs of `f` for criterion and keeps the sample for the summary table.
fn timed(id: &str, iters: u64, mut f: impl FnMut()) -> Duration {
    let start = Instant::now();
    for _ in 0..iters {
        f();
    }
    let elapsed = start.elapsed();
    SAMPLES.with(|s| s.borrow_mut().entry(id.to_owned()).or_default().push((iters, elapsed)));
    elapsed
}

/// Median seconds per iteration over the last `n` samples (criterion's measurement; the
/// calls before them were its warm-up).
fn median_s(id: &str, n: usize) -> Option<f64> {
    SAMPLES.with(|s| {
        let s = s.borrow();
        let all = s.get(id)?;
        let mut per: Vec<f64> =
            all[all.len().saturating_sub(n)..].iter().map(|(i, d)| d.as_secs_f64() / *i as f64).collect();
        per.sort_by(f64::total_cmp);
        per.get(per.len() / 2).copied()
    })
}

/// Iterations run in all (warm-up included), to divide whole-run counts by (strace -c).
fn iterations(id: &str) -> u64 {
    SAMPLES.with(|s| s.borrow().get(id).map_or(0, |all| all.iter().map(|(i, _)| i).sum()))
}

struct Server {
    router: Router,
    operator: String,
    runtime: tokio::runtime::Runtime,
    _dir: tempfile::TempDir,
}

impl Server {
    fn new() -> Self {
        // As the binary runs: a multi-threaded runtime (2 workers on this machine).
        let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let config = Config::embedded(dir.path().join("data"));
        std::fs::create_dir_all(&config.data_dir).unwrap();
        let (router, operator) = runtime.block_on(async {
            let state = open(&config).await.unwrap();
            let operator = tokens::create(&state.db, "bench", Role::Operator, 0).await.unwrap();
            (router(state, config.max_body_bytes), operator)
        });
        Self { router, operator, runtime, _dir: dir }
    }

    async fn post(&self, uri: &str, content_type: &str, body: Body) -> (StatusCode, Vec<u8>) {
        let request = Request::post(uri)
            .header(header::AUTHORIZATION, format!("Bearer {}", self.operator))
            .header(header::CONTENT_TYPE, content_type)
            .body(body)
            .unwrap();
        let response = self.router.clone().oneshot(request).await.unwrap();
        let status = response.status();
        (status, axum::body::to_bytes(response.into_body(), usize::MAX).await.unwrap().to_vec())
    }

    /// Registers `image` as version `version` of model `large`.
    fn upload(&self, image: &bytes::Bytes, version: &str) {
        self.runtime.block_on(async {
            let uri = format!("/v1/models/large/versions?version={version}&device_class=mcu");
            let (status, body) = self.post(&uri, "application/octet-stream", Body::from(image.clone())).await;
            assert_eq!(status, StatusCode::CREATED, "{}", String::from_utf8_lossy(&body));
        });
    }

    /// Signs a manifest of `version` of model `large`.
    fn sign(&self, version: &str, request: &str) {
        self.runtime.block_on(async {
            let uri = format!("/v1/models/large/versions/{version}/manifests");
            let (status, body) = self.post(&uri, "application/json", Body::from(request.to_owned())).await;
            assert_eq!(status, StatusCode::CREATED, "{}", String::from_utf8_lossy(&body));
        });
    }

    /// Registers `image` as version `version` of model `large`, then signs its manifest.
    fn upload_and_sign(&self, image: &bytes::Bytes, version: &str) {
        self.upload(image, version);
        self.sign(version, "{}");
    }
}

fn large_model() -> Vec<u8> {
    let path = Path::new(MANIFEST_DIR).join("bench/large_mlp.tflite");
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e} (made by bench/make_large_model.py)", path.display()))
}

fn upload(c: &mut Criterion) {
    let image = large_model();
    let size = image.len() as u64;
    let shared = bytes::Bytes::from(image.clone());
    let server = Server::new();
    let floor_dir = tempfile::tempdir().unwrap();
    let floor = LocalBlobs::new(floor_dir.path().join("blobs"));

    let mut group = c.benchmark_group("upload");
    group.sample_size(20).warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(5));
    group.sampling_mode(SamplingMode::Flat).throughput(Throughput::BytesDecimal(size));
    group.bench_function("anchor: sha256 + LocalBlobs put", |b| {
        b.iter_custom(|iters| {
            timed("upload/anchor", iters, || {
                server.runtime.block_on(async {
                    let digest: [u8; 32] = Sha256::digest(&image).into();
                    let stored = floor.put(&image[..], Some(digest), u64::MAX).await.unwrap();
                    black_box(stored);
                })
            })
        })
    });
    let mut next = 0u64;
    group.bench_function("POST version + POST manifest", |b| {
        b.iter_custom(|iters| {
            timed("upload/api", iters, || {
                next += 1;
                server.upload_and_sign(&shared, &format!("1.0.{next}"));
            })
        })
    });
    // The two requests apart: a version alone, and a manifest alone for a version that
    // exists (a new expiry each time, so each is a new offer row, as a first signing is).
    group.bench_function("POST version", |b| {
        b.iter_custom(|iters| {
            timed("upload/version", iters, || {
                next += 1;
                server.upload(&shared, &format!("1.0.{next}"));
            })
        })
    });
    let version = format!("1.0.{next}");
    let mut expiry = 4_000_000_000u64;
    group.bench_function("POST manifest", |b| {
        b.iter_custom(|iters| {
            timed("upload/manifest", iters, || {
                expiry += 1;
                server.sign(&version, &format!(r#"{{"expires_at": {expiry}}}"#));
            })
        })
    });
    group.finish();

    let mut group = c.benchmark_group("upload-parts");
    group.sample_size(20).warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(3));
    group.sampling_mode(SamplingMode::Flat).throughput(Throughput::BytesDecimal(size));
    group.bench_function("sha256", |b| {
        b.iter_custom(|iters| {
            timed("parts/sha256", iters, || {
                let _ = black_box(Sha256::digest(black_box(&image)));
            })
        })
    });
    group.bench_function("mota-runtime check (registry::inspect::model)", |b| {
        b.iter_custom(|iters| {
            timed("parts/inspect", iters, || {
                let _ = black_box(mota_backend::registry::inspect::model(&image).unwrap());
            })
        })
    });
    group.bench_function("LocalBlobs put (hash, write, fsync, rename)", |b| {
        b.iter_custom(|iters| {
            timed("parts/put", iters, || {
                let _ = black_box(server.runtime.block_on(floor.put(&image[..], None, u64::MAX)).unwrap());
            })
        })
    });
    group.finish();
}

/// `(name, old, new)` of every pair, sorted, then the 1 MB pair when generated.
fn pairs() -> Vec<(String, Vec<u8>, Vec<u8>)> {
    let root = Path::new(MANIFEST_DIR).join("../agent/delta/bench/pairs");
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(&root)
        .unwrap()
        .filter_map(Result::ok)
        .filter(|family| family.path().is_dir())
        .flat_map(|family| std::fs::read_dir(family.path()).unwrap().filter_map(Result::ok).map(|v| v.path()))
        .filter(|dir| dir.join("old.tflite").is_file() && dir.join("new.tflite").is_file())
        .collect();
    dirs.sort();
    let mut out: Vec<_> = dirs
        .iter()
        .map(|dir| {
            let name = dir.strip_prefix(&root).unwrap().to_string_lossy().into_owned();
            (name, std::fs::read(dir.join("old.tflite")).unwrap(), std::fs::read(dir.join("new.tflite")).unwrap())
        })
        .collect();
    let ft = Path::new(MANIFEST_DIR).join("bench/large_mlp_ft.tflite");
    match std::fs::read(&ft) {
        Ok(new) => out.push(("large_mlp/finetune".into(), large_model(), new)),
        Err(_) => eprintln!(
            "note: {} absent, the 1 MB pair is skipped (make_large_model.py --finetune makes it)",
            ft.display()
        ),
    }
    out
}

/// What a delta job computes: the best patch, applied back and compared.
fn worker_job(old: &[u8], new: &[u8]) -> usize {
    let patch = mota_delta::encode::best(old, new);
    let rebuilt = mota_delta::encode::apply(old, &patch).unwrap();
    assert!(rebuilt == new, "the patch does not rebuild the target");
    patch.len()
}

fn delta(c: &mut Criterion, pairs: &[(String, Vec<u8>, Vec<u8>)]) {
    let mut group = c.benchmark_group("delta");
    for (name, old, new) in pairs {
        let big = new.len() > 256 * 1024;
        group.sample_size(10).sampling_mode(SamplingMode::Flat).throughput(Throughput::BytesDecimal(new.len() as u64));
        group.warm_up_time(Duration::from_millis(if big { 1 } else { 300 }));
        group.measurement_time(Duration::from_secs(if big { 30 } else { 1 }));
        group.bench_function(format!("{name}/best+apply"), |b| {
            b.iter_custom(|iters| {
                timed(&format!("delta/{name}/best"), iters, || {
                    let _ = black_box(worker_job(old, new));
                })
            })
        });
        group.bench_function(format!("{name}/anchor full"), |b| {
            b.iter_custom(|iters| {
                timed(&format!("delta/{name}/full"), iters, || {
                    let _ = black_box(mota_delta::encode::full(new));
                })
            })
        });
    }
    group.finish();
}

fn summary(pairs: &[(String, Vec<u8>, Vec<u8>)], model_bytes: usize) {
    let mb_s = |s: f64| model_bytes as f64 / s / 1e6;
    println!("\n== summary (median per sample) ==");
    if let (Some(api), Some(floor)) = (median_s("upload/api", 20), median_s("upload/anchor", 20)) {
        println!(
            "upload of {model_bytes} B: POST version + POST manifest {:.2} ms ({:.1} MB/s), {} iterations in all",
            api * 1e3,
            mb_s(api),
            iterations("upload/api")
        );
        println!(
            "  anchor sha256 + LocalBlobs put {:.2} ms ({:.1} MB/s); ratio {:.2}x",
            floor * 1e3,
            mb_s(floor),
            api / floor
        );
        for (id, what) in [
            ("upload/version", "POST version alone"),
            ("upload/manifest", "POST manifest alone"),
            ("parts/sha256", "sha256"),
            ("parts/inspect", "mota-runtime check"),
            ("parts/put", "put"),
        ] {
            if let Some(s) = median_s(id, 20) {
                println!("  {what}: {:.3} ms ({:.1} MB/s), {} iterations in all", s * 1e3, mb_s(s), iterations(id));
            }
        }
    }
    let rows: Vec<_> = pairs
        .iter()
        .filter_map(|(name, old, new)| {
            let best = median_s(&format!("delta/{name}/best"), 10)?;
            let full = median_s(&format!("delta/{name}/full"), 10)?;
            Some((name, old.len(), new.len(), mota_delta::encode::best(old, new).len(), best, full))
        })
        .collect();
    if rows.is_empty() {
        return;
    }
    println!("\n| pair | old B | new B | patch B | best+apply ms | anchor full ms | ratio |");
    println!("|---|---:|---:|---:|---:|---:|---:|");
    let (mut sum_best, mut sum_full) = (0.0, 0.0);
    for (name, old, new, patch, best, full) in &rows {
        println!("| {name} | {old} | {new} | {patch} | {:.2} | {:.2} | {:.1} |", best * 1e3, full * 1e3, best / full);
        if new < &(256 * 1024) {
            (sum_best, sum_full) = (sum_best + best, sum_full + full);
        }
    }
    println!(
        "| Σ pairs under 256 KiB | | | | {:.1} | {:.1} | {:.1} |",
        sum_best * 1e3,
        sum_full * 1e3,
        sum_best / sum_full
    );
}

fn trace() {
    let image = bytes::Bytes::from(large_model());
    let server = Server::new();
    for i in 0..40 {
        let t0 = Instant::now();
        server.upload(&image, &format!("2.0.{i}"));
        let t1 = Instant::now();
        if std::env::var("TRACE_MODE").as_deref() == Ok("sign") {
            server.sign(&format!("2.0.{i}"), "{}");
        }
        let t2 = Instant::now();
        println!("{i} version {:.2} ms sign {:.2} ms", (t1 - t0).as_secs_f64() * 1e3, (t2 - t1).as_secs_f64() * 1e3);
    }
}

fn main() {
    if std::env::var("TRACE").is_ok() {
        return trace();
    }
    let mut c = Criterion::default().configure_from_args();
    let model_bytes = large_model().len();
    upload(&mut c);
    let pairs = pairs();
    delta(&mut c, &pairs);
    c.final_summary();
    summary(&pairs, model_bytes);
}
