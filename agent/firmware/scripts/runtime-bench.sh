#!/usr/bin/env bash
# Runs a .tflite model on a Cortex-M under QEMU with mota-runtime (the runtime-bench
# firmware) and counts the instructions of each inference exactly (scripts/insn-count.c,
# a TCG plugin with count-instructions.sh's rule, seconds instead of minutes).
#
# Usage: scripts/runtime-bench.sh MODEL.tflite INPUTS.npy --out OUT.npy [--machine m4|m7] [--first K] [--cached]
#   INPUTS.npy: shape (N, ...), the model's input dtype (int8, uint8, int16 or float32).
#   OUT.npy:    the outputs, shape (N, *output_shape), the output's dtype; written only
#               when the run succeeds.
#   m4: -cpu cortex-m4 -machine mps2-an386 (default); m7: -cpu cortex-m7 -machine mps2-an500.
#   --first K:  run only the first K inputs.
#   --cached:   keep the operators prepared between invokes (Interpreter::with_cache).
# Prints one line "instructions N" per input (one invoke() each, setup not counted), one
# line "arena B" (Interpreter::arena_used) and with --cached one line "cache B" (the
# prepared operators' slots, outside the arena). Exits non-zero on any error.
#
# Environment: CARGO_TARGET_DIR (default: the repository's target/firmware), the
# plugin's cache ${XDG_CACHE_HOME:-$HOME/.cache}/mota, RUNTIME_BENCH_TIMEOUT (seconds
# QEMU may run, default 600). Needs cargo with thumbv7em-none-eabihf, qemu-system-arm
# (7.2, plugin API 1), arm-none-eabi-nm and gcc.
#
# The firmware reads its file names from the semihosting command line; QEMU runs in a
# temporary directory holding links named model.tflite and inputs.npy, so any path works.
set -euo pipefail

die() { echo "runtime-bench.sh: $*" >&2; exit 1; }
usage() { echo "usage: $0 MODEL.tflite INPUTS.npy --out OUT.npy [--machine m4|m7] [--first K] [--cached]" >&2; exit 2; }

model= inputs= out= machine=m4 first= cached=
while (($#)); do
  case $1 in
    --out) (($# >= 2)) || usage; out=$2; shift 2 ;;
    --machine) (($# >= 2)) || usage; machine=$2; shift 2 ;;
    --first) (($# >= 2)) || usage; first=$2; shift 2 ;;
    --cached) cached=1; shift ;;
    -h | --help) usage ;;
    -*) echo "runtime-bench.sh: unknown option $1" >&2; usage ;;
    *)
      if [[ -z $model ]]; then model=$1
      elif [[ -z $inputs ]]; then inputs=$1
      else usage
      fi
      shift ;;
  esac
done
[[ -n $model && -n $inputs && -n $out ]] || usage
case $machine in
  m4) qemu_machine=(-cpu cortex-m4 -machine mps2-an386) ;;
  m7) qemu_machine=(-cpu cortex-m7 -machine mps2-an500) ;;
  *) die "--machine must be m4 or m7, not '$machine'" ;;
esac
[[ -z $first || $first =~ ^[1-9][0-9]{0,8}$ ]] || die "--first needs a positive integer, not '$first'"
[[ -f $model && -r $model ]] || die "cannot read the model $model"
[[ -f $inputs && -r $inputs ]] || die "cannot read the inputs $inputs"
[[ -d $(dirname -- "$out") ]] || die "no directory for $out"
for tool in cargo qemu-system-arm arm-none-eabi-nm gcc timeout; do
  command -v "$tool" >/dev/null || die "$tool is not installed"
done

firmware=$(cd -- "$(dirname -- "$0")/.." && pwd)
target_dir=${CARGO_TARGET_DIR:-$(cd -- "$firmware/../.." && pwd)/target/firmware}
(cd "$firmware" && CARGO_TARGET_DIR=$target_dir cargo build --quiet --release --bin runtime-bench --features int16) ||
  die "building the runtime-bench firmware failed"
elf=$target_dir/thumbv7em-none-eabihf/release/runtime-bench

# The plugin, rebuilt when its source is newer.
source=$firmware/scripts/insn-count.c
cache=${XDG_CACHE_HOME:-$HOME/.cache}/mota
plugin=$cache/libinsn-count.so
if [[ ! -f $plugin || $source -nt $plugin ]]; then
  mkdir -p "$cache"
  gcc -O2 -shared -fPIC -o "$plugin.$$" "$source" || die "building the QEMU plugin failed"
  mv -f "$plugin.$$" "$plugin"
fi

addr() {
  local a
  a=$(arm-none-eabi-nm "$elf" | awk -v s="$1" '$3 == s { print $1 }')
  [[ -n $a ]] || die "no $1 in $elf"
  printf '0x%08x' $((0x$a & ~1))
}
start=$(addr bench_start)
end=$(addr bench_end)

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
ln -s "$(realpath -- "$model")" "$work/model.tflite"
ln -s "$(realpath -- "$inputs")" "$work/inputs.npy"
status=0
(cd "$work" && timeout "${RUNTIME_BENCH_TIMEOUT:-600}" qemu-system-arm "${qemu_machine[@]}" -nographic \
  -semihosting-config "enable=on,target=native,arg=runtime-bench,arg=model.tflite,arg=inputs.npy,arg=out.npy${first:+,arg=$first}${cached:+,arg=cached}" \
  -plugin "${plugin//,/,,},start=$start,end=$end,out=counts.txt" \
  -kernel "$elf" </dev/null >stdout.txt 2>stderr.txt) || status=$?
if ((status != 0)); then
  cat "$work/stdout.txt" "$work/stderr.txt" >&2
  echo "runtime-bench.sh: (the firmware's model.tflite is $model, its inputs.npy is $inputs)" >&2
  ((status == 124)) && die "QEMU timed out after ${RUNTIME_BENCH_TIMEOUT:-600} s"
  die "the firmware failed (QEMU exit status $status)"
fi
cat "$work/stderr.txt" >&2

invoked=$(awk '$1 == "invoked" { print $2 }' "$work/stdout.txt")
arena=$(awk '$1 == "arena" { print $2 }' "$work/stdout.txt")
cache=$(awk '$1 == "cache" { print $2 }' "$work/stdout.txt")
regions=$(grep -c '^instructions [0-9][0-9]*$' "$work/counts.txt" || true)
[[ -n $invoked && -n $arena && -f $work/out.npy ]] || { cat "$work/stdout.txt" >&2; die "the firmware's report is incomplete"; }
((regions == invoked)) || die "$invoked inputs ran but $regions regions were counted"
cat "$work/counts.txt"
echo "arena $arena"
((cached)) && echo "cache $cache"
mv -f "$work/out.npy" "$out"
