//! Registry costs on the host, each next to an anchor measured in the same run.
//!
//! - `upload`: one iteration registers a new version of the ~1 MB int8 MLP
//!   (`bench/large_mlp.tflite`) through the in-memory router on the embedded defaults
//!   (SQLite, local blobs) and signs its manifest: `POST /v1/models/large/versions?version=V`
//!   (checked with mota-runtime, blob stored and fsynced, rows, delta jobs and audit event
//!   in one transaction) then `POST .../versions/V/manifests {}`. Anchor, timed in the same
//!   iteration just before: the storage floor, SHA-256 of the bytes plus `LocalBlobs::put`
//!   of them (which hashes again while it writes, fsyncs and renames) on the same file
//!   system. Two data dirs: the disk (the default) and tmpfs (no fsync reaches a disk: the
//!   backend's own work). `upload-parts` times the requests apart on tmpfs, `LocalBlobs::put` next to the
//!   same steps as one blocking call, SHA-256 and the mota-runtime check. Neither the
//!   delta worker nor a validation set is involved.
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

/// Keeps a sample for the summary table.
fn record(id: &str, iters: u64, elapsed: Duration) {
    SAMPLES.with(|s| s.borrow_mut().entry(id.to_owned()).or_default().push((iters, elapsed)));
}

/// Times `iters` runs of `f` for criterion and keeps the sample for the summary table.
fn timed(id: &str, iters: u64, mut f: impl FnMut()) -> Duration {
    let start = Instant::now();
    for _ in 0..iters {
        f();
    }
    let elapsed = start.elapsed();
    record(id, iters, elapsed);
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

/// Where a server keeps its data directory.
#[derive(Clone, Copy)]
enum Storage {
    /// The temporary directory on the machine's disk, as the embedded default is used.
    Disk,
    /// `/dev/shm`: no fsync reaches a disk, so what is left is the backend's own work.
    Tmpfs,
}

impl Storage {
    fn name(self) -> &'static str {
        match self {
            Self::Disk => "disk",
            Self::Tmpfs => "tmpfs",
        }
    }

    fn tempdir(self) -> Option<tempfile::TempDir> {
        match self {
            Self::Disk => Some(tempfile::tempdir().unwrap()),
            Self::Tmpfs => tempfile::Builder::new().tempdir_in("/dev/shm").ok(),
        }
    }
}

struct Server {
    router: Router,
    operator: String,
    /// The storage floor's own store, beside the server's data dir on the same file system.
    floor: LocalBlobs,
    runtime: tokio::runtime::Runtime,
    _dir: tempfile::TempDir,
}

impl Server {
    fn new(storage: Storage) -> Option<Self> {
        // As the binary runs: a multi-threaded runtime (2 workers on this machine).
        let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
        let dir = storage.tempdir()?;
        let config = Config::embedded(dir.path().join("data"));
        std::fs::create_dir_all(&config.data_dir).unwrap();
        let (router, operator) = runtime.block_on(async {
            let state = open(&config).await.unwrap();
            let operator = tokens::create(&state.db, "bench", Role::Operator, 0).await.unwrap();
            (router(state, config.max_body_bytes), operator)
        });
        let floor = LocalBlobs::new(dir.path().join("floor"));
        Some(Self { router, operator, floor, runtime, _dir: dir })
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

    /// The storage floor: SHA-256 of `image`, then `LocalBlobs::put` of it.
    fn floor_put(&self, image: &[u8]) {
        self.runtime.block_on(async {
            let digest: [u8; 32] = Sha256::digest(image).into();
            black_box(self.floor.put(image, Some(digest), u64::MAX).await.unwrap());
        });
    }
}

fn large_model() -> Vec<u8> {
    let path = Path::new(MANIFEST_DIR).join("bench/large_mlp.tflite");
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e} (made by bench/make_large_model.py)", path.display()))
}

const STORAGES: [Storage; 2] = [Storage::Disk, Storage::Tmpfs];

fn upload(c: &mut Criterion) {
    let image = bytes::Bytes::from(large_model());
    let size = image.len() as u64;
    let mut next = 0u64;

    // Anchor and API alternate within every sample, so both see the same state of the
    // disk (fsync latency on this VM varies several-fold over seconds after bulk writes);
    // criterion reports the API time, the summary both and their ratio.
    let mut group = c.benchmark_group("upload");
    group.sample_size(20).warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(6));
    group.sampling_mode(SamplingMode::Flat).throughput(Throughput::BytesDecimal(size));
    for storage in STORAGES {
        let Some(server) = Server::new(storage) else {
            eprintln!("note: no /dev/shm, the tmpfs case is skipped");
            continue;
        };
        let name = storage.name();
        group.bench_function(format!("{name}: POST version + POST manifest"), |b| {
            b.iter_custom(|iters| {
                let (mut api, mut floor) = (Duration::ZERO, Duration::ZERO);
                for _ in 0..iters {
                    let start = Instant::now();
                    server.floor_put(&image);
                    floor += start.elapsed();
                    next += 1;
                    let version = format!("1.0.{next}");
                    let start = Instant::now();
                    server.upload(&image, &version);
                    server.sign(&version, "{}");
                    api += start.elapsed();
                }
                record(&format!("upload/{name}/anchor"), iters, floor);
                record(&format!("upload/{name}/api"), iters, api);
                api
            })
        });
    }
    group.finish();

    // What the two requests cost apart, on tmpfs (the backend's own work): a version
    // alone, and a manifest alone for a version that exists (a new expiry each time, so
    // each is a new offer row, as a first signing is); and the pieces of the upload.
    let mut group = c.benchmark_group("upload-parts");
    group.sample_size(20).warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(3));
    group.sampling_mode(SamplingMode::Flat).throughput(Throughput::BytesDecimal(size));
    if let Some(server) = Server::new(Storage::Tmpfs) {
        group.bench_function("tmpfs: POST version", |b| {
            b.iter_custom(|iters| {
                timed("parts/version", iters, || {
                    next += 1;
                    server.upload(&image, &format!("1.0.{next}"));
                })
            })
        });
        let version = format!("1.0.{next}");
        let mut expiry = 4_000_000_000u64;
        group.bench_function("tmpfs: POST manifest", |b| {
            b.iter_custom(|iters| {
                timed("parts/manifest", iters, || {
                    expiry += 1;
                    server.sign(&version, &format!(r#"{{"expires_at": {expiry}}}"#));
                })
            })
        });
    }
    if let Some(dir) = Storage::Tmpfs.tempdir() {
        let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
        let store = LocalBlobs::new(dir.path().join("blobs"));
        group.bench_function("tmpfs: LocalBlobs put", |b| {
            b.iter_custom(|iters| {
                timed("parts/put", iters, || {
                    black_box(runtime.block_on(store.put(&image[..], None, u64::MAX)).unwrap());
                })
            })
        });
        // What put does, as one blocking call: hash, write, fsync, rename.
        let (tmp, path) = (dir.path().join("raw.tmp"), dir.path().join("raw"));
        group.bench_function("tmpfs: std::fs write + fsync + rename", |b| {
            b.iter_custom(|iters| {
                timed("parts/raw", iters, || {
                    let (tmp, path, image) = (tmp.clone(), path.clone(), image.clone());
                    runtime
                        .block_on(runtime.spawn_blocking(move || {
                            black_box(Sha256::digest(&image));
                            let mut file = std::fs::File::create(&tmp)?;
                            std::io::Write::write_all(&mut file, &image)?;
                            file.sync_all()?;
                            std::fs::rename(&tmp, &path)
                        }))
                        .unwrap()
                        .unwrap();
                })
            })
        });
    }
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
    println!(
        "\n| upload of {model_bytes} B | POST version + POST manifest ms | MB/s | anchor sha256 + put ms | MB/s | ratio | iterations |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|");
    for storage in STORAGES {
        let name = storage.name();
        let (api, floor) = (format!("upload/{name}/api"), format!("upload/{name}/anchor"));
        if let (Some(a), Some(f)) = (median_s(&api, 20), median_s(&floor, 20)) {
            let (ms_a, mb_a, ms_f, mb_f) = (a * 1e3, mb_s(a), f * 1e3, mb_s(f));
            println!(
                "| {name} | {ms_a:.2} | {mb_a:.1} | {ms_f:.2} | {mb_f:.1} | {:.2} | {} |",
                a / f,
                iterations(&api)
            );
        }
    }
    for (id, what) in [
        ("parts/version", "tmpfs: POST version alone"),
        ("parts/manifest", "tmpfs: POST manifest alone"),
        ("parts/put", "tmpfs: LocalBlobs put"),
        ("parts/raw", "tmpfs: std::fs write + fsync + rename, one blocking call"),
        ("parts/sha256", "sha256"),
        ("parts/inspect", "mota-runtime check"),
    ] {
        if let Some(s) = median_s(id, 20) {
            println!("  {what}: {:.3} ms ({:.1} MB/s), {} iterations", s * 1e3, mb_s(s), iterations(id));
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

fn main() {
    let mut c = Criterion::default().configure_from_args();
    let model_bytes = large_model().len();
    upload(&mut c);
    let pairs = pairs();
    delta(&mut c, &pairs);
    c.final_summary();
    summary(&pairs, model_bytes);
}
