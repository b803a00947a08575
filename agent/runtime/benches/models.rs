//! Host latency of one inference per fixture model, averaged over its recorded inputs:
//! `infer` prepares every operator at each invoke (`Interpreter::new`, as devices run),
//! `infer_cached` keeps them prepared (`Interpreter::with_cache`, as host tools run).
//! `bench.sh` runs this next to TFLM's interpreter on the same inputs and prints ratios.
//!
//! Run: `cargo bench -p mota-runtime --bench models`

use std::hint::black_box;
use std::path::PathBuf;

use criterion::{Criterion, criterion_group, criterion_main};
use mota_runtime::npy::Npy;
use mota_runtime::{Interpreter, Model, PreparedOp};

fn bench(c: &mut Criterion) {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/models");
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok()?.strip_suffix(".tflite").map(str::to_owned))
        .collect();
    names.sort();
    for (group_name, cached) in [("infer", false), ("infer_cached", true)] {
        let mut group = c.benchmark_group(group_name);
        for name in &names {
            let bytes = std::fs::read(dir.join(format!("{name}.tflite"))).unwrap();
            let Ok(model) = Model::parse(&bytes) else { continue };
            let inputs = Npy::parse(&std::fs::read(dir.join(format!("{name}.inputs.npy"))).unwrap()).unwrap();
            let mut arena = vec![0u8; mota_runtime::arena_size(&model).unwrap()];
            let mut cache = vec![PreparedOp::EMPTY; if cached { model.operator_count() } else { 0 }];
            let mut interp = Interpreter::with_cache(model, &mut arena, &mut cache).unwrap();
            let mut row = 0;
            group.bench_function(name, |b| {
                b.iter(|| {
                    interp.input(0).unwrap().copy_from_slice(inputs.row(row).unwrap());
                    interp.invoke().unwrap();
                    row = (row + 1) % inputs.rows();
                    black_box(interp.output(0).unwrap()[0])
                })
            });
        }
        group.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
