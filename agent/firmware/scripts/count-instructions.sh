#!/usr/bin/env bash
# Counts the instructions executed between each bench_start/bench_end pair of a firmware
# ELF under QEMU (exact and deterministic: one instruction per translation block, exec
# trace streamed through a FIFO). QEMU 7.2 spells the option -singlestep.
# Usage: scripts/count-instructions.sh ELF [MACHINE]
set -euo pipefail
elf=$1
machine=${2:-mps2-an386}
addr() { printf '%08x' $(( 0x$(arm-none-eabi-nm "$elf" | awk -v s="$1" '$3 == s { print $1 }') & ~1 )); }
start=$(addr bench_start)
end=$(addr bench_end)
fifo=$(mktemp -u)
mkfifo "$fifo"
trap 'rm -f "$fifo"' EXIT
awk -v s="$start" -v e="$end" '/^Trace/ { split($4, f, "/"); pc = f[2] "";
    if (pc == s "") { on = 1; n = 0; next }
    if (pc == e "" && on) { on = 0; k++; printf "region %d: %d instructions\n", k, n; next }
    if (on) n++ }' "$fifo" &
timeout 300 qemu-system-arm -cpu cortex-m4 -machine "$machine" -nographic \
    -semihosting-config enable=on,target=native -singlestep -d exec,nochain -D "$fifo" -kernel "$elf" >/dev/null
wait
