#!/usr/bin/env bash
# Schemathesis against the served OpenAPI document: the real binary on embedded defaults
# (a temporary data dir), an admin token, one registered model so that paths can hit
# real resources. Usage: .ci/schemathesis.sh BINARY [SECONDS]. Needs python3; installs
# schemathesis into ~/.cache/mota/st-venv. Exits non-zero on any finding.
set -euo pipefail
bin=$1
seconds=${2:-60}
here=$(cd "$(dirname "$0")/.." && pwd)
venv="$HOME/.cache/mota/st-venv"
[ -x "$venv/bin/st" ] || { python3 -m venv "$venv" && "$venv/bin/pip" install --quiet --disable-pip-version-check 'schemathesis==4.32.5'; }
data=$(mktemp -d /tmp/mota-st.XXXXXX)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
token=$("$bin" --data-dir "$data" token create --role admin 2>/dev/null | tail -1)
"$bin" --data-dir "$data" --listen "127.0.0.1:$port" --no-mqtt >"$data/server.log" 2>&1 &
server=$!
trap 'kill $server 2>/dev/null || true; rm -rf "$data"' EXIT
base="http://127.0.0.1:$port"
for _ in $(seq 100); do curl -sf "$base/readyz" >/dev/null && break; sleep 0.1; done
curl -sf -o /dev/null -X POST -H "Authorization: Bearer $token" -H 'content-type: application/octet-stream' \
  --data-binary @"$here/agent/runtime/fixtures/models/digits_cnn_v1.tflite" \
  "$base/v1/models/digits/versions?version=1.0.0&device_class=mcu"
curl -sf -o /dev/null -X POST -H "Authorization: Bearer $token" -H 'content-type: application/octet-stream' \
  --data-binary @"$here/agent/firmware/data/set.vset" "$base/v1/validation-sets?name=demo"
cd "$here"
"$venv/bin/st" --config-file "$here/.ci/schemathesis.toml" run "$base/v1/openapi.json" \
  -H "Authorization: Bearer $token" --max-time "$seconds" --workers 1 --seed 1
if grep -E "panicked|internal error" "$data/server.log"; then
  echo "the server logged an internal error" >&2
  exit 1
fi
