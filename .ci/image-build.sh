#!/usr/bin/env bash
# The container image's build, without Docker: runs backend/Dockerfile's build command
# (the same cargo line, which this script first finds in the Dockerfile), lays the
# binary and the data directory out as its runtime stage does, and checks the result as
# the image would run it: as uid/gid 65532 (the Dockerfile's USER, the chart's runAsUser),
# linked only against what distroless/cc provides, answering --version, migrate --help,
# --print-config, and serving /healthz and /readyz from a data directory it owns.
#
#   .ci/image-build.sh     (CARGO_TARGET_DIR as usual; default ~/.cache/mota/target)
set -euo pipefail
cd "$(dirname "$0")/.."

dockerfile=backend/Dockerfile
build_line='cargo build --release --locked -p mota-backend'
uid=65532
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/mota/target}"

fail() { echo "image-build: $*" >&2; exit 1; }

# The Dockerfile says what this script does; refuse to drift from it.
grep -qF "$build_line" "$dockerfile" || fail "$dockerfile no longer runs '$build_line'"
grep -qx "USER $uid:$uid" "$dockerfile" || fail "$dockerfile: expected USER $uid:$uid"
grep -qx 'ENTRYPOINT \["mota-backend"\]' "$dockerfile" || fail "$dockerfile: expected ENTRYPOINT [\"mota-backend\"]"
grep -qx 'EXPOSE 8080' "$dockerfile" || fail "$dockerfile: expected EXPOSE 8080"
rust_version=$(sed -n 's/^rust-version = "\(.*\)"/\1/p' Cargo.toml)
grep -q "^FROM rust:$rust_version\(\.[0-9]*\)\?-" "$dockerfile" || fail "$dockerfile: builder is not rust $rust_version (Cargo.toml rust-version)"
for value in runAsUser runAsGroup; do
  grep -q "^  $value: $uid\$" charts/mota/values.yaml || fail "charts/mota/values.yaml: $value is not $uid"
done
echo "Dockerfile: builder rust $rust_version, '$build_line', USER $uid:$uid = the chart's runAsUser"

# Builder stage.
$build_line
stage=$(mktemp -d /tmp/mota-image.XXXXXX)
server_pid=
trap '[ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null; rm -rf "$stage"' EXIT
chmod 0755 "$stage"
install -D -m 0755 "$CARGO_TARGET_DIR/release/mota-backend" "$stage/out/mota-backend"
install -d -m 0750 "$stage/out/data"
# Runtime stage: COPY --chown=65532:65532 of the data directory.
chown "$uid:$uid" "$stage/out/data"
bin="$stage/out/mota-backend"
data="$stage/out/data"
echo "binary: $(du -h "$bin" | cut -f1)"

# distroless/cc-debian12 has glibc and libgcc_s, nothing else.
libs=$(ldd "$bin" | awk '/=>/ {print $1} /ld-linux/ {print $1}' | sort -u)
for lib in $libs; do
  case "$lib" in
    linux-vdso.so.1 | libc.so.6 | libm.so.6 | libgcc_s.so.1 | libdl.so.2 | libpthread.so.0 | librt.so.1 | /lib64/ld-linux-x86-64.so.2) ;;
    *) fail "the binary needs $lib, which distroless/cc does not have" ;;
  esac
done
echo "links only: $(tr '\n' ' ' <<<"$libs")"

# As the image runs it: uid/gid 65532, no supplementary groups, the image's environment,
# the data directory as working directory.
run() { (cd "$data" && env -i PATH=/usr/bin:/bin MOTA_LISTEN=0.0.0.0:8080 MOTA_DATA_DIR="$data" \
  setpriv --reuid=$uid --regid=$uid --clear-groups "$bin" "$@"); }

version=$(run --version)
[ "$version" = "mota-backend $(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)" ] || fail "--version says '$version'"
echo "--version: $version"
run migrate --help | grep -q 'Apply pending database migrations' || fail "migrate --help"
echo "migrate --help: ok"
config=$(run --print-config)
echo "$config" | grep -q '"listen": "0.0.0.0:8080"' || fail "--print-config: listen is not 0.0.0.0:8080: $config"
echo "$config" | grep -q "\"data_dir\": \"$data\"" || fail "--print-config: data_dir"
echo "--print-config as uid $uid: listen 0.0.0.0:8080, data_dir from MOTA_DATA_DIR"

# Serve on the embedded defaults (no MQTT), as uid 65532, on a free loopback port.
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
(cd "$data" && exec env -i PATH=/usr/bin:/bin MOTA_LISTEN="127.0.0.1:$port" MOTA_DATA_DIR="$data" MOTA_NO_MQTT=true \
  setpriv --reuid=$uid --regid=$uid --clear-groups "$bin" serve) >"$stage/serve.log" 2>&1 &
server_pid=$!
for _ in $(seq 100); do
  curl -fsS "http://127.0.0.1:$port/healthz" >/dev/null 2>&1 && break
  kill -0 "$server_pid" 2>/dev/null || { cat "$stage/serve.log"; fail "serve exited"; }
  sleep 0.1
done
curl -fsS "http://127.0.0.1:$port/healthz" >/dev/null || { cat "$stage/serve.log"; fail "/healthz"; }
curl -fsS "http://127.0.0.1:$port/readyz" >/dev/null || { cat "$stage/serve.log"; fail "/readyz"; }
kill "$server_pid"
wait "$server_pid" 2>/dev/null || true
server_pid=
owners=$(find "$data" -mindepth 1 ! -user $uid | head -5)
[ -z "$owners" ] || fail "files in the data directory not owned by $uid: $owners"
# A read-only root file system leaves it nowhere else to write: /tmp is the one place
# uid 65532 could have written to here.
elsewhere=$(find /tmp -xdev -user $uid -newer "$bin" -not -path "$stage/*" 2>/dev/null | head -5)
[ -z "$elsewhere" ] || fail "wrote outside its data directory: $elsewhere"
echo "serve as uid $uid: /healthz and /readyz answer; wrote $(find "$data" -mindepth 1 | wc -l) entries, all its own, in the data directory and nowhere else"
echo "image build: ok"
