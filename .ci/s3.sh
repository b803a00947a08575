#!/usr/bin/env bash
# Starts s3s-fs, an S3-compatible server that enforces SigV4, for the S3 blob-store tests
# (backend/tests/blobs.rs). It is installed once into ~/.cache/mota/bin, pinned: later
# releases need a newer rustc than the project's.
#
# Usage: .ci/s3.sh [ENV_FILE]
# Writes to ENV_FILE (or prints, without one) lines to source:
#   export MOTA_TEST_S3_ENDPOINT=... MOTA_TEST_S3_ACCESS_KEY=... MOTA_TEST_S3_SECRET_KEY=...
#   s3_pid=...   (the server; kill it when done)
#   s3_dir=...   (its temporary directory; remove it when done)
# The server keeps running after this script exits.
set -euo pipefail

version=0.14.1
root="$HOME/.cache/mota"
bin="$root/bin/s3s-fs"
access_key=MOTATESTACCESSKEY
secret_key=mota-test-secret-key-0123456789

if [ ! -x "$bin" ] || ! grep -q "s3s-fs $version " "$root/.crates.toml" 2>/dev/null; then
  echo "installing s3s-fs $version into $root/bin" >&2
  # Its own target dir, so the project's build stays untouched; not needed afterwards (385 MB).
  CARGO_TARGET_DIR="$root/target-s3s-fs" cargo install s3s-fs --version "$version" --features binary \
    --locked --root "$root" --quiet
  rm -rf "$root/target-s3s-fs"
fi

dir=$(mktemp -d /tmp/mota-s3.XXXXXX)
mkdir "$dir/data" # s3s-fs panics when its root does not exist
# The address (port 0: any free one) is only logged at info level.
RUST_LOG=info NO_COLOR=1 "$bin" --host 127.0.0.1 --port 0 --access-key "$access_key" --secret-key "$secret_key" \
  "$dir/data" </dev/null >"$dir/server.log" 2>&1 &
pid=$!

endpoint=
for _ in $(seq 100); do
  endpoint=$(sed 's/\x1b\[[0-9;]*m//g' "$dir/server.log" | grep -o 'server is running at http://[0-9.:]*' | head -n 1 |
    sed 's/.* at //') || true
  [ -n "$endpoint" ] && break
  if ! kill -0 "$pid" 2>/dev/null; then
    break
  fi
  sleep 0.1
done
if [ -z "$endpoint" ]; then
  echo "s3s-fs did not start; its log:" >&2
  cat "$dir/server.log" >&2
  kill "$pid" 2>/dev/null || true
  exit 1
fi
echo "s3s-fs $version (pid $pid) serving $endpoint from $dir/data" >&2

lines="export MOTA_TEST_S3_ENDPOINT=$endpoint MOTA_TEST_S3_ACCESS_KEY=$access_key MOTA_TEST_S3_SECRET_KEY=$secret_key
s3_pid=$pid
s3_dir=$dir"
if [ $# -ge 1 ]; then
  printf '%s\n' "$lines" >"$1"
else
  printf '%s\n' "$lines"
fi
