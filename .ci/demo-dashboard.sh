#!/usr/bin/env bash
# The dashboard of a live `mota demo --keep`, in a real headless Chromium: the page must
# show the demo's rollouts as the demo left them (the good one completed, the degraded
# one paused by its canaries' failed gates). Keeps screenshots in OUT.
#
# usage: .ci/demo-dashboard.sh MOTA_BINARY CHROMIUM OUT_DIR
set -euo pipefail
mota=$1 chromium=$2 out=$3
mkdir -p "$out"
log=$(mktemp) profile=$(mktemp -d)
"$mota" demo --devices 20 --keep >"$log" 2>/dev/null &
demo=$!
trap 'kill -INT $demo 2>/dev/null || true; wait $demo 2>/dev/null || true; rm -rf "$log" "$profile"' EXIT
for _ in $(seq 1 600); do
  grep -q '^  dashboard ' "$log" && break
  kill -0 $demo 2>/dev/null || { cat "$log"; echo "the demo ended early" >&2; exit 1; }
  sleep 0.2
done
url=$(sed -n 's/^  dashboard  *//p' "$log")
[ -n "$url" ] || { cat "$log"; echo "no dashboard address" >&2; exit 1; }
browse() { # VIEW OUTPUT_NAME: dump the rendered DOM and keep a screenshot
  local flags=(--headless --no-sandbox --disable-gpu --disable-background-networking --disable-component-update
    --disable-sync --no-first-run --disable-quic --hide-scrollbars --window-size=1280,1600 --virtual-time-budget=6000
    --user-data-dir="$profile")
  timeout 120 "$chromium" "${flags[@]}" --screenshot="$out/$2.png" "$url&view=$1" >/dev/null 2>&1
  timeout 120 "$chromium" "${flags[@]}" --dump-dom "$url&view=$1" 2>/dev/null
}
check() { # TEXT DOM WHAT
  grep -qF -- "$1" <<<"$2" || { echo "$3: no \"$1\" in the rendered page" >&2; exit 1; }
}
list=$(browse /rollouts demo-rollouts)
check 'digits' "$list" "rollouts list"
check 'completed' "$list" "rollouts list"
check 'paused' "$list" "rollouts list"
bad=$(browse /rollouts/2 demo-rollout-2)
check 'Rollout 2' "$bad" "rollout 2"
check 'failure_rate' "$bad" "rollout 2"
check 'data-state="failed"' "$bad" "rollout 2"
check 'rejected' "$bad" "rollout 2"
good=$(browse /rollouts/1 demo-rollout-1)
check 'data-state="passed"' "$good" "rollout 1"
check '<svg' "$good" "rollout 1"
devices=$(browse /devices demo-devices)
check 'demo-00019' "$devices" "devices"
echo "the demo's dashboard rendered its rollouts and devices; screenshots in $out"
