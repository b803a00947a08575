#!/usr/bin/env python3
"""Anchor patch sizes for the old -> new model pairs made by make_pairs.py.

For every pair (pairs/<family>/<variant>/{old,new}.tflite) this makes a
patch with each method below, applies it back, checks the result is exactly
new.tflite, and records the patch size in bytes:

  bsdiff          bsdiff old new patch            (BSDIFF40, bzip2 inside)
                  bspatch old out patch
  xdelta3         xdelta3 -9 -e -s old new patch
                  xdelta3 -d -s old patch out
  zstd-patch      zstd -19 --patch-from=old new -o patch
                  zstd -d --patch-from=old patch -o out
  detools-hs      python -m detools create_patch -c heatshrink old new patch
                  (sequential, bsdiff algorithm, heatshrink w8 l7 defaults)
                  python -m detools apply_patch old patch out
  detools-lzma    the same with -c lzma
  full-xz         xz -9 of new alone (no old), checked with xz -d
  full-zstd       zstd -19 of new alone, checked with zstd -d
  mota            only with --mota CMD (see below)

Only the standard library is needed; detools runs through a Python that has
it (--detools-python, default: the fixtures venv if it has detools, else
this interpreter). A tool that is not installed gives null / "n/a"; a patch
that does not apply back to exactly new gives null / "FAIL" and exit code 3.

Output:
  results/anchors.json         {pair: {method: bytes or null}}
  results/anchors_detail.json  sizes, statuses, timings, errors, tool versions
  results/anchors.md           the Markdown table, also printed

The --mota hook takes command templates with {old} {new} {patch} {out}
placeholders (each token of the template is formatted separately, so paths
with spaces are safe):
  anchors.py --mota "mota delta make {old} {new} -o {patch}" \\
             [--mota-apply "mota delta apply {old} {patch} -o {out}"]
"""

import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
FIXTURES_PY = os.path.expanduser("~/.cache/mota/fixtures-venv/bin/python")
TIMEOUT = 300

# key, table header, kind ("delta" uses old; "full" compresses new alone)
METHODS = [
    ("bsdiff", "bsdiff", "delta"),
    ("xdelta3", "xdelta3 -9", "delta"),
    ("zstd-patch", "zstd -19 --patch-from", "delta"),
    ("detools-hs", "detools seq heatshrink", "delta"),
    ("detools-lzma", "detools seq lzma", "delta"),
    ("full-xz", "full xz -9", "full"),
    ("full-zstd", "full zstd -19", "full"),
]


class Missing(Exception):
    """The tool for a method is not installed."""


def run(argv, stdout_path=None):
    """Runs argv; raises RuntimeError with stderr on a non-zero exit."""
    out = open(stdout_path, "wb") if stdout_path else subprocess.DEVNULL
    try:
        r = subprocess.run(argv, stdout=out, stderr=subprocess.PIPE, timeout=TIMEOUT)
    finally:
        if stdout_path:
            out.close()
    if r.returncode != 0:
        raise RuntimeError(f"{shlex.join(argv)} exited {r.returncode}: "
                           f"{r.stderr.decode(errors='replace').strip()[-400:]}")


def need(*tools):
    for t in tools:
        if shutil.which(t) is None:
            raise Missing(t)


class Methods:
    def __init__(self, detools_python, mota_make=None, mota_apply=None):
        self.py = detools_python
        self.mota_make = mota_make
        self.mota_apply = mota_apply

    # Each method: make(old, new, patch) then apply(old, patch, out).

    def make(self, key, old, new, patch):
        if key == "bsdiff":
            need("bsdiff", "bspatch")
            run(["bsdiff", old, new, patch])
        elif key == "xdelta3":
            need("xdelta3")
            run(["xdelta3", "-9", "-e", "-f", "-s", old, new, patch])
        elif key == "zstd-patch":
            need("zstd")
            run(["zstd", "-19", "-q", "-f", f"--patch-from={old}", new, "-o", patch])
        elif key in ("detools-hs", "detools-lzma"):
            if self.py is None:
                raise Missing("detools")
            comp = "heatshrink" if key == "detools-hs" else "lzma"
            run([self.py, "-m", "detools", "create_patch", "-c", comp, old, new, patch])
        elif key == "full-xz":
            need("xz")
            run(["xz", "-9", "-c", new], stdout_path=patch)
        elif key == "full-zstd":
            need("zstd")
            run(["zstd", "-19", "-q", "-c", new], stdout_path=patch)
        elif key == "mota":
            run(fill(self.mota_make, old=old, new=new, patch=patch))
        else:
            raise KeyError(key)

    def apply(self, key, old, patch, out):
        if key == "bsdiff":
            run(["bspatch", old, out, patch])
        elif key == "xdelta3":
            run(["xdelta3", "-d", "-f", "-s", old, patch, out])
        elif key == "zstd-patch":
            run(["zstd", "-d", "-q", "-f", f"--patch-from={old}", patch, "-o", out])
        elif key in ("detools-hs", "detools-lzma"):
            run([self.py, "-m", "detools", "apply_patch", old, patch, out])
        elif key == "full-xz":
            run(["xz", "-d", "-c", patch], stdout_path=out)
        elif key == "full-zstd":
            run(["zstd", "-d", "-q", "-c", patch], stdout_path=out)
        elif key == "mota":
            run(fill(self.mota_apply, old=old, patch=patch, out=out))
        else:
            raise KeyError(key)


def fill(template, **paths):
    return [tok.format(**paths) for tok in shlex.split(template)]


def find_detools_python(explicit):
    cands = [explicit] if explicit else [os.environ.get("DETOOLS_PYTHON"), FIXTURES_PY, sys.executable]
    for c in cands:
        if not c or not os.path.exists(c):
            continue
        r = subprocess.run([c, "-c", "import detools"], capture_output=True)
        if r.returncode == 0:
            return c
    return None


def tool_versions(detools_py):
    def first_line(argv, stream="stdout"):
        try:
            r = subprocess.run(argv, capture_output=True, text=True, timeout=30)
            txt = (r.stdout if stream == "stdout" else r.stderr) or r.stdout or r.stderr
            return txt.strip().splitlines()[0] if txt.strip() else None
        except (OSError, subprocess.SubprocessError):
            return None

    def deb(pkg):
        return first_line(["dpkg-query", "-W", "-f=${Version}", pkg])

    v = {
        "bsdiff": f"bsdiff (Debian package {deb('bsdiff')})" if shutil.which("bsdiff") else None,
        "xdelta3": first_line(["xdelta3", "-V"], "stderr") if shutil.which("xdelta3") else None,
        "zstd": first_line(["zstd", "--version"]) if shutil.which("zstd") else None,
        "xz": first_line(["xz", "--version"]) if shutil.which("xz") else None,
        "detools": None,
    }
    if detools_py:
        v["detools"] = first_line([detools_py, "-c", "import detools; print(detools.__version__)"])
    return v


def discover(pairs_dir):
    """[(name, old, new, finetune)] from index.json, else from the tree."""
    idx = os.path.join(pairs_dir, "index.json")
    out = []
    if os.path.exists(idx):
        with open(idx) as f:
            for p in json.load(f)["pairs"]:
                d = os.path.join(pairs_dir, p["pair"])
                out.append((p["pair"], os.path.join(d, "old.tflite"), os.path.join(d, "new.tflite"),
                            bool(p.get("finetune"))))
        return out
    for root, _, files in sorted(os.walk(pairs_dir)):
        if "old.tflite" in files and "new.tflite" in files:
            name = os.path.relpath(root, pairs_dir)
            out.append((name, os.path.join(root, "old.tflite"), os.path.join(root, "new.tflite"),
                        name.split("/")[-1] in ("finetune", "finetune_last")))
    return sorted(out)


def fmt_cell(b, new_size):
    if b is None:
        return "n/a"
    return f"{b:,} ({100.0 * b / new_size:.1f}%)"


def markdown(results, pairs, methods):
    heads = [h for k, h, _ in methods]
    lines = ["| pair | new (B) | " + " | ".join(heads) + " |",
             "|---|---:|" + "---:|" * len(methods)]
    for name, _, new, ft in pairs:
        r = results[name]
        cells = []
        for k, _, _ in methods:
            st = r["methods"][k]["status"]
            cells.append(fmt_cell(r["methods"][k]["bytes"], r["new_bytes"]) if st == "ok" else st)
        lines.append(f"| {name}{' (ft)' if ft else ''} | {r['new_bytes']:,} | " + " | ".join(cells) + " |")

    best = {}
    for label, sel in (("fine-tune pairs", [p for p in pairs if p[3]]), ("all pairs", pairs)):
        if not sel:
            continue
        new_total = sum(results[p[0]]["new_bytes"] for p in sel)
        sums = {}
        for k, _, _ in methods:
            vals = [results[p[0]]["methods"][k]["bytes"] for p in sel]
            sums[k] = None if any(v is None for v in vals) else sum(vals)
        ok = {k: v for k, v in sums.items() if v is not None}
        win = min(ok, key=ok.get) if ok else None
        best[label] = (win, sums, new_total)
        cells = []
        for k, _, _ in methods:
            c = fmt_cell(sums[k], new_total)
            cells.append(f"**{c}**" if k == win else c)
        lines.append(f"| **Σ {label} ({len(sel)})** | {new_total:,} | " + " | ".join(cells) + " |")
    return "\n".join(lines), best


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pairs", default=os.path.join(HERE, "pairs"), help="pairs directory (default: ./pairs)")
    ap.add_argument("--out", default=os.path.join(HERE, "results"), help="results directory (default: ./results)")
    ap.add_argument("--only", nargs="*", help="only pairs whose name contains one of these substrings")
    ap.add_argument("--detools-python", help="Python with detools installed")
    ap.add_argument("--mota", metavar="CMD", help='patch-making template, e.g. "mota delta make {old} {new} -o {patch}"')
    ap.add_argument("--mota-apply", metavar="CMD", default="mota delta apply {old} {patch} -o {out}",
                    help="patch-applying template (default: %(default)s)")
    ap.add_argument("--keep-patches", metavar="DIR", help="also copy every patch to DIR/<pair>/<method>.patch")
    args = ap.parse_args()

    pairs = discover(args.pairs)
    if args.only:
        pairs = [p for p in pairs if any(s in p[0] for s in args.only)]
    if not pairs:
        sys.exit(f"no pairs under {args.pairs}: run make_pairs.py first")

    methods = list(METHODS)
    if args.mota:
        methods.append(("mota", "mota", "delta"))
    detools_py = find_detools_python(args.detools_python)
    m = Methods(detools_py, args.mota, args.mota_apply)
    versions = tool_versions(detools_py)

    results, failures = {}, 0
    with tempfile.TemporaryDirectory(prefix="mota_anchors_") as tmp:
        for name, old, new, ft in pairs:
            with open(new, "rb") as f:
                new_bytes = f.read()
            r = {"old_bytes": os.path.getsize(old), "new_bytes": len(new_bytes), "finetune": ft, "methods": {}}
            for k, _, _ in methods:
                patch = os.path.join(tmp, f"{k}.patch")
                out = os.path.join(tmp, f"{k}.out")
                for p in (patch, out):
                    if os.path.exists(p):
                        os.remove(p)
                e = {"bytes": None, "status": "ok", "make_s": None, "apply_s": None}
                try:
                    t0 = time.perf_counter()
                    m.make(k, old, new, patch)
                    e["make_s"] = round(time.perf_counter() - t0, 3)
                    size = os.path.getsize(patch)
                    t0 = time.perf_counter()
                    m.apply(k, old, patch, out)
                    e["apply_s"] = round(time.perf_counter() - t0, 3)
                    with open(out, "rb") as f:
                        if f.read() != new_bytes:
                            raise ValueError("applied patch does not reproduce new.tflite")
                    e["bytes"] = size
                    if args.keep_patches:
                        d = os.path.join(args.keep_patches, name)
                        os.makedirs(d, exist_ok=True)
                        shutil.copyfile(patch, os.path.join(d, f"{k}.patch"))
                except Missing as ex:
                    e["status"] = "n/a"
                    e["error"] = f"not installed: {ex}"
                except (RuntimeError, ValueError, OSError, subprocess.SubprocessError) as ex:
                    e["status"] = "FAIL"
                    e["error"] = str(ex)
                    failures += 1
                r["methods"][k] = e
            results[name] = r
            print(f"{name}: " + ", ".join(
                f"{k}={e['bytes'] if e['status'] == 'ok' else e['status']}" for k, e in r["methods"].items()),
                file=sys.stderr, flush=True)

    table, best = markdown(results, pairs, methods)
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "anchors.json"), "w") as f:
        json.dump({n: {k: e["bytes"] for k, e in r["methods"].items()} for n, r in results.items()}, f, indent=1)
        f.write("\n")
    detail = {
        "tools": versions,
        "detools_python": detools_py,
        "mota_make": args.mota,
        "mota_apply": args.mota_apply if args.mota else None,
        "methods": {k: {"header": h, "kind": kind} for k, h, kind in methods},
        "best": {label: {"method": w, "sums": s, "new_bytes": n} for label, (w, s, n) in best.items()},
        "pairs": results,
    }
    with open(os.path.join(args.out, "anchors_detail.json"), "w") as f:
        json.dump(detail, f, indent=1)
        f.write("\n")
    notes = []
    for label, (w, s, n) in best.items():
        if w:
            notes.append(f"Best over {label}: {dict((k, h) for k, h, _ in methods)[w]} "
                         f"({s[w]:,} B, {100.0 * s[w] / n:.1f}% of {n:,} B).")
    md = table + "\n\n" + "\n".join(notes) + "\n"
    with open(os.path.join(args.out, "anchors.md"), "w") as f:
        f.write(md)
    print(md)
    print("tools: " + "; ".join(f"{k}: {v or 'not found'}" for k, v in versions.items()))
    if failures:
        print(f"{failures} patch(es) FAILED to make or to reproduce new.tflite", file=sys.stderr)
        sys.exit(3)


if __name__ == "__main__":
    main()
