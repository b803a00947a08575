#!/usr/bin/env bash
# CI for the flash adapters in agent/hal (one workspace per chip family, each with its
# own Cargo.lock and .cargo/config.toml): formatting, every adapter bin built in release
# for its real target with the agent (STM32F746 and STM32H743 and STM32F405 through
# embassy-stm32; nRF52840 through embassy-nrf's Nvmc and under SoftDevice S140 through
# nrf-softdevice; ESP32-C3 through esp-storage), clippy -D warnings on each build, and
# each bin's section sizes. Nothing runs: no QEMU machine models these flash
# controllers (agent/hal/README.md).
# Usage: .ci/hal.sh (CARGO_TARGET_DIR defaults to ~/.cache/mota/target/hal).
set -euo pipefail
cd "$(dirname "$0")/.."

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/mota/target/hal}"
export CARGO_TERM_COLOR=never
mkdir -p "$CARGO_TARGET_DIR"
step() { printf '\n=== hal: %s\n' "$*"; }

step "toolchains"
rustup component add rustfmt clippy llvm-tools >/dev/null
rustup target add thumbv7em-none-eabihf riscv32imc-unknown-none-elf >/dev/null
host=$(rustc -vV | sed -n 's/^host: //p')
llvm_size="$(rustc --print sysroot)/lib/rustlib/$host/bin/llvm-size"
[[ -x "$llvm_size" ]] || { echo "llvm-size not found at $llvm_size"; exit 1; }
cargo --version

step "cargo fmt --check"
for ws in common stm32 nrf esp; do
  cargo fmt --manifest-path "agent/hal/$ws/Cargo.toml" -- --check
done

# workspace feature bin target: one adapter build each. cargo runs from the workspace's
# directory, so its .cargo/config.toml (target, linker script, rustflags) applies.
builds=(
  "stm32 f746 f746 thumbv7em-none-eabihf"
  "stm32 h743 h743 thumbv7em-none-eabihf"
  "stm32 f405 f405 thumbv7em-none-eabihf"
  "nrf nvmc nvmc thumbv7em-none-eabihf"
  "nrf s140 s140 thumbv7em-none-eabihf"
  "esp - esp32c3 riscv32imc-unknown-none-elf"
)
features() { [[ "$1" == - ]] || echo "--features=$1"; }

step "release builds of every adapter bin, with the agent"
for b in "${builds[@]}"; do
  read -r ws feature bin _ <<<"$b"
  start=$SECONDS
  (cd "agent/hal/$ws" && cargo build --release $(features "$feature") --bin "$bin")
  echo "hal: built $ws/$bin in $((SECONDS - start)) s"
done

step "cargo clippy -D warnings (each build, and the shared crate)"
for b in "${builds[@]}"; do
  read -r ws feature bin _ <<<"$b"
  # --all-targets: the library and the bins whose chip feature is on.
  (cd "agent/hal/$ws" && cargo clippy --release $(features "$feature") --all-targets -- -D warnings)
done
(cd agent/hal/common && cargo clippy --target thumbv7em-none-eabihf -- -D warnings)

step "sizes (bytes; code and constants in flash: .text, .rodata; ESP32-C3 also runs .trap and .rwtext from IRAM)"
printf '%-8s %-8s %9s %9s %9s %9s\n' workspace bin .text .rodata .data .bss
for b in "${builds[@]}"; do
  read -r ws _ bin target <<<"$b"
  elf="$CARGO_TARGET_DIR/$target/release/$bin"
  "$llvm_size" -A "$elf" | awk -v ws="$ws" -v bin="$bin" '
    { size[$1] = $2 }
    END { printf "%-8s %-8s %9d %9d %9d %9d\n", ws, bin, size[".text"], size[".rodata"], size[".data"], size[".bss"] }'
done
echo "hal: every adapter builds for its target with the agent"
