#!/usr/bin/env bash
# Flash of mota-runtime with only the given operators linked, as a firmware built for a
# known set of models would link it (TFLM's MicroMutableOpResolver does the same).
# Usage: scripts/runtime-size.sh [--profile release|size] OP...   e.g. conv-2d softmax
#   OP: an operator's feature name without "op-" (see agent/runtime/Cargo.toml), or
#   all-ops. Prints the .text and .rodata of the runtime-size firmware and the code of
#   mota_runtime by symbol.
set -euo pipefail
profile=release
if [[ ${1:-} == --profile ]]; then profile=$2; shift 2; fi
(($#)) || { echo "usage: $0 [--profile release|size] OP..." >&2; exit 2; }
features=()
for op in "$@"; do
  if [[ $op == all-ops ]]; then features+=(mota-runtime/all-ops); else features+=("mota-runtime/op-$op"); fi
done
firmware=$(cd "$(dirname "$0")/.." && pwd)
target=${CARGO_TARGET_DIR:-$firmware/../../target/firmware-size}
(cd "$firmware" && CARGO_TARGET_DIR=$target cargo build --quiet --profile "$profile" --bin runtime-size \
  --no-default-features --features "$(IFS=,; echo "${features[*]}")")
elf=$target/thumbv7em-none-eabihf/$profile/runtime-size
arm-none-eabi-size -A "$elf" | awk '$1 == ".text" || $1 == ".rodata" { print $1, $2 }'
arm-none-eabi-nm -C --size-sort -S "$elf" |
  while read -r _ size kind name; do
    if [[ $kind == [Tt] && $name == *mota_runtime::* ]]; then echo $((16#$size)); fi
  done | awk '{ s += $1 } END { print "mota_runtime code", s }'
