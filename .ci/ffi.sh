#!/usr/bin/env bash
# CI for the C API (agent/ffi, its own workspace): formatting, lints, the header drift
# check, the host tests of the boundary, the static library for thumbv7em-none-eabihf,
# the C example built with -Wall -Wextra -Werror, and the example under QEMU against a
# local Mosquitto (boot, connect, subscribe, hello; then a second boot from the same
# flash file). With the path of a built `mota` binary as its argument, also the whole
# product on C devices: `mota demo --qemu` (backend, Mosquitto, three agent-net-c
# machines) through two rollouts with 20 power cuts.
# Usage: .ci/ffi.sh [MOTA_BIN] (CARGO_TARGET_DIR defaults to ~/.cache/mota/target/ffi).
set -euo pipefail
mota_bin=${1:+$(realpath "$1")}
cd "$(dirname "$0")/.."
root=$PWD

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/mota/target/ffi}"
export CARGO_TERM_COLOR=never
mkdir -p "$CARGO_TARGET_DIR"
step() { printf '\n=== ffi: %s\n' "$*"; }

step "toolchains"
rustup component add rustfmt clippy >/dev/null
rustup target add thumbv7em-none-eabihf >/dev/null
need=()
command -v arm-none-eabi-gcc >/dev/null || need+=(gcc-arm-none-eabi)
# newlib: the C library and semihosting (rdimon) specs of the example.
[[ -f "$(arm-none-eabi-gcc -print-file-name=rdimon.specs 2>/dev/null)" ]] || need+=(libnewlib-arm-none-eabi)
command -v qemu-system-arm >/dev/null || need+=(qemu-system-arm)
command -v mosquitto >/dev/null || need+=(mosquitto)
if ((${#need[@]})); then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
arm-none-eabi-gcc --version | head -1

# cargo reads agent/ffi/.cargo/config.toml (target, rustflags) from the working directory.
cd agent/ffi
host=$(rustc -vV | sed -n 's/^host: //p')

step "cargo fmt --check"
cargo fmt --manifest-path Cargo.toml -- --check

step "static library for thumbv7em-none-eabihf (build.rs fails if include/mota_agent.h drifted)"
cargo build --release
ls -l "$CARGO_TARGET_DIR/thumbv7em-none-eabihf/release/libmota_agent_ffi.a"

step "cargo clippy -D warnings (the library on thumbv7em; library and host tests on $host)"
cargo clippy --release -- -D warnings
cargo clippy --features std --target "$host" --all-targets -- -D warnings

step "host tests: every boundary check's code, updates through the C API"
cargo test --features std --target "$host"

step "C example (agent-net-c) with -Wall -Wextra -Werror"
make -C example WARNINGS="-Wall -Wextra -Werror"
arm-none-eabi-size example/build/agent-net-c.elf

step "agent-net-c under QEMU against Mosquitto: boot, connect, subscribe, hello; boot again from its flash"
work=$(mktemp -d)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
mosquitto -p "$port" -v >"$work/mosquitto.log" 2>&1 &
mosquitto_pid=$!
qemu_pid=
cleanup() {
  [[ -n "$qemu_pid" ]] && kill "$qemu_pid" 2>/dev/null || true
  kill "$mosquitto_pid" 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
# The test root (mota_proto::testkit::ROOT): the device only needs a key to trust.
roothex=d04ab232742bb4ab3a1368bd4615e4e6d0224ab71a016baf8520a332c9778737
id=ci-c-1
boot_device() {
  qemu-system-arm -cpu cortex-m4 -machine mps2-an386 -display none -monitor none \
    -serial "tcp:127.0.0.1:$port,reconnect=1" \
    -semihosting-config "enable=on,target=native,arg=agent-net-c,arg=$id,arg=$work/$id.flash,arg=$roothex" \
    -kernel example/build/agent-net-c.elf >"$work/$1.out" 2>&1 &
  qemu_pid=$!
  for _ in $(seq 200); do
    grep -q "^mota-device $id: connected$" "$work/$1.out" && break
    sleep 0.1
  done
  kill -KILL "$qemu_pid" 2>/dev/null || true # a power cut
  wait "$qemu_pid" 2>/dev/null || true
  qemu_pid=
  cat "$work/$1.out"
  grep -q "^mota-device $id: connected$" "$work/$1.out" || { echo "agent-net-c did not connect"; cat "$work/mosquitto.log"; exit 1; }
}
factory="digits_cnn 1.0.0 $(sha256sum "$root/agent/runtime/fixtures/models/digits_cnn_v1.tflite" | cut -d' ' -f1)"
boot_device first
grep -qx "mota-device $id: boot running $factory" "$work/first.out"
[[ $(stat -c %s "$work/$id.flash") -eq $((3 * 4096 + 2 * 32768)) ]]
for want in "Received SUBSCRIBE from $id" "mota/v1/dev/$id/offer (QoS 1)" "mota/v1/dev/$id/chunk (QoS 1)" \
  "mota/v1/dev/$id/cmd (QoS 1)" "mota/v1/dev/$id/trust (QoS 1)" "Received PUBLISH from $id (d0, q1, r0, m[0-9]*, 'mota/v1/dev/$id/hello'"; do
  grep -q -- "$want" "$work/mosquitto.log" || { echo "mosquitto did not see: $want"; cat "$work/mosquitto.log"; exit 1; }
done
# A cut (SIGKILL above) and a second boot from the same flash file: the record is read back.
boot_device second
grep -qx "mota-device $id: boot running $factory" "$work/second.out"
echo "agent-net-c: boots, connects, subscribes, says hello, boots again from its flash"

if [[ -n "$mota_bin" ]]; then
  step "mota demo on three agent-net-c devices: two rollouts (patches, validation, a refused model), 20 power cuts"
  timeout 600 "$mota_bin" demo --devices 3 --qemu example/build/agent-net-c.elf --kills 20
fi
