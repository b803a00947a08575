#!/usr/bin/env bash
# Host latency per inference, mota-runtime (criterion) next to TFLM's interpreter (Python
# package tflite-micro, reference kernels) on the same models and inputs, in one run.
# Needs the fixtures venv (fixtures/README.md). Prints a Markdown table for BENCHMARKS.md.
set -euo pipefail
cd "$(dirname "$0")"
venv=${FIXTURES_VENV:-$HOME/.cache/mota/fixtures-venv}
target=${CARGO_TARGET_DIR:-../../target}
cargo bench -p mota-runtime --bench models -- --noplot >/dev/null
tflm=$("$venv/bin/python" fixtures/bench_tflm.py)
python3 - "$target" "$tflm" <<'PY'
import json, pathlib, sys
target, tflm = pathlib.Path(sys.argv[1]), json.loads(sys.argv[2])
print("| model | mota-runtime µs | cached µs | TFLM µs | ratio (mota / TFLM) | cached ratio |")
print("|---|---|---|---|---|---|")
def mean_us(group, name):
    est = target / "criterion" / group / name / "new" / "estimates.json"
    return json.loads(est.read_text())["mean"]["point_estimate"] / 1000 if est.exists() else None
for name, t in sorted(tflm.items()):
    ours, cached = mean_us("infer", name), mean_us("infer_cached", name)
    if ours is None or cached is None:
        print(f"| {name} | not supported yet | – | {t:.1f} | – | – |")
        continue
    print(f"| {name} | {ours:.1f} | {cached:.1f} | {t:.1f} | {ours / t:.2f} | {cached / t:.2f} |")
PY
