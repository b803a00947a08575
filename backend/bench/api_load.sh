#!/usr/bin/env bash
# API latency under load: the release binary on a throwaway PostgreSQL holding 10,000
# devices (with classes and tags), driven by wrk over loopback, one endpoint at a time.
# The anchor is /healthz (no token, no database), measured in the same run; every other
# row is also given as a ratio to it. /v1/whoami (token lookup only) splits the cost of
# authentication from the cost of the query.
#
# Run from anywhere, as root (PostgreSQL runs as the postgres user, as in .ci/run):
#   backend/bench/api_load.sh
# Knobs (environment): DURATION (s, default 10), CONNECTIONS (default 8), THREADS (wrk
# threads, default 1), DEVICES (default 10000).
# Installs what is missing: wrk (Debian; else oha from crates.io into ~/.cache/mota/bin)
# and PostgreSQL (Debian). Leaves nothing running: the server and PostgreSQL are stopped
# and their directories removed on exit.
set -euo pipefail
cd "$(dirname "$0")/../.."

DURATION="${DURATION:-10}"
CONNECTIONS="${CONNECTIONS:-8}"
THREADS="${THREADS:-1}"
DEVICES="${DEVICES:-10000}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/mota/target}"
export CARGO_TERM_COLOR=never

say() { printf '=== %s\n' "$*" >&2; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

# --- tools -------------------------------------------------------------------------
loadgen=""
if command -v wrk >/dev/null; then
  loadgen=wrk
else
  say "installing wrk"
  apt-get update -qq
  if DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null 2>&1 && command -v wrk >/dev/null; then
    loadgen=wrk
  else
    say "wrk is not in Debian here: installing oha from crates.io"
    cargo install oha --locked --root "$HOME/.cache/mota/bin" >/dev/null
    export PATH="$HOME/.cache/mota/bin/bin:$PATH"
    loadgen=oha
  fi
fi
if ! ls -d /usr/lib/postgresql/*/bin >/dev/null 2>&1; then
  say "installing PostgreSQL"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
fi
pgbin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)

say "building mota-backend (release)"
cargo build --release -p mota-backend 2>&1 | tail -1 >&2
backend="$CARGO_TARGET_DIR/release/mota-backend"

# --- PostgreSQL and the server, removed on exit --------------------------------------
work=$(mktemp -d /tmp/mota-load.XXXXXX)
chmod 711 "$work" # PostgreSQL (the postgres user) keeps its cluster inside
pgdir="$work/pg"
server_pid=""
pg_started=""
cleanup() {
  if [ -n "$server_pid" ]; then
    kill "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
  fi
  if [ -n "$pg_started" ]; then
    runuser -u postgres -- "$pgbin/pg_ctl" -D "$pgdir/data" stop -m fast >/dev/null 2>&1 || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

mkdir -p "$pgdir"
chown postgres:postgres "$pgdir"
pgport=$(free_port)
runuser -u postgres -- "$pgbin/initdb" -D "$pgdir/data" -U postgres -A trust -E UTF8 --no-sync >/dev/null
runuser -u postgres -- "$pgbin/pg_ctl" -D "$pgdir/data" -l "$pgdir/server.log" -w \
  -o "-p $pgport -k $pgdir -c listen_addresses=127.0.0.1 -c fsync=off" start >/dev/null
pg_started=1
runuser -u postgres -- "$pgbin/createdb" -h 127.0.0.1 -p "$pgport" mota
url="postgres://postgres@127.0.0.1:$pgport/mota"
psql_() { psql -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$pgport" -U postgres -d mota "$@"; }

data="$work/data"
port=$(free_port)
say "starting mota-backend on 127.0.0.1:$port (PostgreSQL $("$pgbin/postgres" --version | awk '{print $3}') on port $pgport)"
"$backend" --data-dir "$data" --listen "127.0.0.1:$port" --database-url "$url" --no-mqtt >"$work/server.log" 2>&1 &
server_pid=$!
for _ in $(seq 1 100); do
  curl -fsS "http://127.0.0.1:$port/healthz" >/dev/null 2>&1 && break
  kill -0 "$server_pid" 2>/dev/null || { cat "$work/server.log" >&2; exit 1; }
  sleep 0.1
done
curl -fsS "http://127.0.0.1:$port/healthz" >/dev/null
token=$("$backend" --data-dir "$data" --database-url "$url" token create --role viewer --name load 2>/dev/null | tail -1)

# --- 10,000 devices: 4 classes, 1 to 3 tags each ------------------------------------
say "seeding $DEVICES devices"
psql_ <<SQL
INSERT INTO devices (id, device_class, agent_version, online, running_sha256, running_model, running_version,
                     security_counter, slot_bytes, arena_bytes, first_seen, last_seen)
SELECT 'dev-' || lpad(i::text, 6, '0'),
       (ARRAY['stm32f4', 'nrf52840', 'esp32s3', 'rp2040'])[1 + i % 4],
       '0.1.0', i % 3, md5(i::text) || md5((i + 1)::text), 'kws', '1.' || (i % 5), i % 5,
       131072, 16384, 1790000000000 + i, 1790000000000 + i * 7
FROM generate_series(0, $DEVICES - 1) AS i;
-- site-N on every device (20 sites), ring-N on every other one (3 rings), canary on 2 %.
INSERT INTO device_tags (device_id, tag) SELECT 'dev-' || lpad(i::text, 6, '0'), 'site-' || (i % 20)
FROM generate_series(0, $DEVICES - 1) AS i;
INSERT INTO device_tags (device_id, tag) SELECT 'dev-' || lpad(i::text, 6, '0'), 'ring-' || (i % 3)
FROM generate_series(0, $DEVICES - 1) AS i WHERE i % 2 = 0;
INSERT INTO device_tags (device_id, tag) SELECT 'dev-' || lpad(i::text, 6, '0'), 'canary'
FROM generate_series(0, $DEVICES - 1) AS i WHERE i % 50 = 0;
ANALYZE;
SQL
counts=$(psql_ -At -c "SELECT (SELECT COUNT(*) FROM devices) || ' devices, ' || (SELECT COUNT(*) FROM device_tags) || ' tags'")
say "$counts"

one="dev-$(printf '%06d' $((DEVICES / 2 + 7)))"
middle="dev-$(printf '%06d' $((DEVICES / 2)))"
# site-5 is on devices i % 20 = 5, all of class i % 4 = 1 (nrf52840): 500 of 10,000.
endpoints=(
  "/healthz"
  "/v1/whoami"
  "/v1/devices?limit=50"
  "/v1/devices?class=nrf52840&tag=site-5&limit=50"
  "/v1/devices/$one"
  "/v1/devices?limit=50&after=$middle"
)

# Each answers 200 with what it should before it is loaded.
for path in "${endpoints[@]}"; do
  body=$(curl -fsS -H "Authorization: Bearer $token" "http://127.0.0.1:$port$path")
  case "$path" in
    /v1/devices\?*) items=$(printf '%s' "$body" | python3 -c 'import json,sys; print(len(json.load(sys.stdin)["items"]))')
                    [ "$items" = 50 ] || { echo "$path gave $items items" >&2; exit 1; } ;;
  esac
done

# wrk prints latencies as 812.00us / 1.23ms / 1.02s: milliseconds.
to_ms() { awk -v v="$1" 'BEGIN { n = v + 0; if (v ~ /us$/) n /= 1000; else if (v ~ /ms$/) n += 0; else if (v ~ /s$/) n *= 1000; printf "%.3f", n }'; }

# Prints "p50_ms p99_ms requests_per_s errors".
load() {
  local path=$1 out
  if [ "$loadgen" = wrk ]; then
    out=$(wrk -t "$THREADS" -c "$CONNECTIONS" -d "${DURATION}s" --latency \
      -H "Authorization: Bearer $token" "http://127.0.0.1:$port$path")
    local p50 p99 rps errors
    p50=$(printf '%s\n' "$out" | awk '$1 == "50%" { print $2 }')
    p99=$(printf '%s\n' "$out" | awk '$1 == "99%" { print $2 }')
    rps=$(printf '%s\n' "$out" | awk '$1 == "Requests/sec:" { print $2 }')
    errors=$(printf '%s\n' "$out" | awk '/Non-2xx/ { n += $NF } /Socket errors/ { n += 1 } END { print n + 0 }')
    echo "$(to_ms "$p50") $(to_ms "$p99") $rps $errors"
  else
    out=$(oha --no-tui -z "${DURATION}s" -c "$CONNECTIONS" --output-format json \
      -H "Authorization: Bearer $token" "http://127.0.0.1:$port$path")
    printf '%s' "$out" | python3 -c '
import json, sys
r = json.load(sys.stdin)
codes = r.get("statusCodeDistribution", {})
bad = sum(n for c, n in codes.items() if not c.startswith("2")) + sum(r.get("errorDistribution", {}).values())
print("%.3f %.3f %.1f %d" % (r["latencyPercentiles"]["p50"] * 1e3, r["latencyPercentiles"]["p99"] * 1e3,
                             r["summary"]["requestsPerSec"], bad))'
  fi
}

say "$loadgen: $DURATION s per endpoint, $CONNECTIONS connections, $THREADS thread(s), loopback"
printf '| endpoint | p50 ms | p99 ms | requests/s | p50 / anchor | p99 / anchor | errors |\n'
printf '|---|---:|---:|---:|---:|---:|---:|\n'
anchor_p50="" anchor_p99=""
for path in "${endpoints[@]}"; do
  read -r p50 p99 rps errors < <(load "$path")
  if [ -z "$anchor_p50" ]; then
    anchor_p50=$p50 anchor_p99=$p99
    label="$path (anchor)"
  else
    label="$path"
  fi
  ratios=$(awk -v a="$p50" -v b="$p99" -v x="$anchor_p50" -v y="$anchor_p99" 'BEGIN { printf "%.1f | %.1f", a / x, b / y }')
  printf '| `%s` | %s | %s | %s | %s | %s |\n' "$label" "$p50" "$p99" "$rps" "$ratios" "$errors"
done
warnings=$(grep -ciE ' (ERROR|WARN) ' "$work/server.log" || true)
say "server log: $warnings warning/error lines"
