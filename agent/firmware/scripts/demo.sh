#!/usr/bin/env bash
# The whole product on real firmware, on this machine: Mosquitto, the backend on its
# embedded defaults, three QEMU Cortex-M4 devices (two run the Rust firmware agent-net,
# one the C example agent-net-c on the C API) and two rollouts, a good one and a degraded
# one. Builds the firmware images first. Extra arguments go to `mota demo`, e.g.
#   agent/firmware/scripts/demo.sh --kills 20     # cut devices' power during the updates
#   agent/firmware/scripts/demo.sh --keep         # leave it running, with the dashboard
# Needs (Debian/Ubuntu): qemu-system-arm mosquitto gcc-arm-none-eabi libnewlib-arm-none-eabi
set -euo pipefail
root=$(cd "$(dirname "$0")/../../.." && pwd)
cd "$root"

missing=()
for tool in qemu-system-arm mosquitto arm-none-eabi-gcc; do
  command -v "$tool" >/dev/null || missing+=("$tool")
done
if ((${#missing[@]})); then
  echo "missing: ${missing[*]}" >&2
  echo "install: sudo apt-get install -y qemu-system-arm mosquitto gcc-arm-none-eabi libnewlib-arm-none-eabi" >&2
  exit 1
fi
rustup target add thumbv7em-none-eabihf >/dev/null

target=${CARGO_TARGET_DIR:-$root/target}
echo "building the Rust firmware (agent/firmware: agent-net) and the C example (agent/ffi/example: agent-net-c)"
(cd agent/firmware && CARGO_TARGET_DIR="$target/firmware" cargo build --quiet --release --bin agent-net)
CARGO_TARGET_DIR="$target/ffi" make --quiet -C agent/ffi/example >/dev/null
rust="$target/firmware/thumbv7em-none-eabihf/release/agent-net"
c="$root/agent/ffi/example/build/agent-net-c.elf"
exec cargo run --quiet -p mota-cli -- demo --qemu "$rust" --qemu "$rust" --qemu "$c" "$@"
