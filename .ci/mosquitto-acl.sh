#!/usr/bin/env bash
# Tests the shipped broker set-up (deploy/mosquitto: mosquitto.conf with the
# dynamic-security plugin, the backend's role in dynsec-backend.json) on a real Mosquitto
# 2.x, with devices provisioned by the backend itself: `POST /v1/devices` returns each
# device's dynamic-security commands, which the test publishes as the plugin's admin
# (backend/tests/identity.rs, on_mosquitto_...). Checked: a provisioned device publishing
# under another id, subscribing to another device's chunks or to a wildcard, joining the
# backend's share group, an anonymous client, a wrong password, another client id: all
# refused; the device's own topics and the backend's share groups work; logins, roles and
# retained offers survive a broker restart. The broker runs mosquitto.conf with only its
# listener, file paths and log destination replaced (and `user`, so it can read a private
# temporary directory when started as root).
#
# Needs (Debian/Ubuntu packages): mosquitto (mosquitto, mosquitto_ctrl, the plugin) and
# mosquitto-clients (mosquitto_pub, mosquitto_sub), python3 to pick a free port, and cargo
# (the Rust half, with --workspace so .ci/run's test build is reused; CARGO_TARGET_DIR is
# honoured):
#   apt-get install -y mosquitto mosquitto-clients
# It installs nothing itself.
#
# Usage: .ci/mosquitto-acl.sh        (prints PASS/FAIL per check; non-zero on any FAIL)
set -euo pipefail

cd "$(dirname "$0")/.."
repo=$(pwd)
conf="$repo/deploy/mosquitto/mosquitto.conf"
roles="$repo/deploy/mosquitto/dynsec-backend.json"
PATH="$PATH:/usr/sbin:/usr/local/sbin" # Debian installs the broker in /usr/sbin

missing=()
for tool in mosquitto mosquitto_ctrl mosquitto_pub mosquitto_sub python3 cargo; do
  command -v "$tool" >/dev/null || missing+=("$tool")
done
plugin=$(ls /usr/lib/*/mosquitto_dynamic_security.so /usr/lib/mosquitto_dynamic_security.so 2>/dev/null | head -1 || true)
[ -n "$plugin" ] || missing+=(mosquitto_dynamic_security.so)
if ((${#missing[@]})); then
  echo "mosquitto-acl.sh: missing ${missing[*]}; install the packages mosquitto and mosquitto-clients" >&2
  exit 2
fi

tmp=$(mktemp -d /tmp/mota-mosquitto-acl.XXXXXX)
broker=
cleanup() {
  [ -z "$broker" ] || kill "$broker" 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$tmp"
}
trap cleanup EXIT

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
host=(-h 127.0.0.1 -p "$port")
run=$RANDOM$RANDOM # unique passwords and payloads per run
admin_pw="admin-$run"
backend_pw="backend-$run"

# The shipped configuration with port and paths replaced; each replaced line must exist
# exactly once, so the test cannot drift from the file it claims to test.
mkdir "$tmp/data"
for key in listener plugin plugin_opt_config_file persistence_location log_dest; do
  n=$(grep -c "^$key " "$conf" || true)
  if [ "$n" != 1 ]; then
    echo "mosquitto-acl.sh: expected one '$key' line in $conf, found $n" >&2
    exit 2
  fi
done
sed -e "s|^listener .*|listener $port 127.0.0.1|" \
  -e "s|^plugin .*|plugin $plugin|" \
  -e "s|^plugin_opt_config_file .*|plugin_opt_config_file $tmp/data/dynamic-security.json|" \
  -e "s|^persistence_location .*|persistence_location $tmp/data/|" \
  -e "s|^log_dest .*|log_dest file $tmp/broker.log|" \
  "$conf" >"$tmp/mosquitto.conf"
echo "user $(id -un)" >>"$tmp/mosquitto.conf"
# The plugin's file, with its admin (README.md: done once per broker).
mosquitto_ctrl dynsec init "$tmp/data/dynamic-security.json" admin "$admin_pw" >/dev/null

start_broker() {
  mosquitto -c "$tmp/mosquitto.conf" >>"$tmp/broker.out" 2>&1 &
  broker=$!
  for _ in $(seq 100); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then return 0; fi
    if ! kill -0 "$broker" 2>/dev/null; then break; fi
    sleep 0.1
  done
  echo "mosquitto-acl.sh: mosquitto did not start:" >&2
  cat "$tmp/broker.out" "$tmp/broker.log" >&2 2>/dev/null || true
  exit 1
}
stop_broker() {
  kill "$broker"
  wait "$broker" 2>/dev/null || true
  broker=
}

failures=0
check() { # name, then a command that succeeds when the check passes
  local name=$1
  shift
  if "$@"; then
    echo "PASS $name"
  else
    echo "FAIL $name"
    failures=$((failures + 1))
  fi
}
ctrl() { mosquitto_ctrl "${host[@]}" -u admin -P "$admin_pw" dynsec "$@" 2>/dev/null; }
# Publishes a command document (FILE) as the admin; succeeds if no command failed.
ctrl_doc() {
  mosquitto_sub "${host[@]}" -u admin -P "$admin_pw" -i "admin-sub-$RANDOM" -t '$CONTROL/dynamic-security/v1/response' \
    -C 1 -W 5 >"$tmp/response" 2>&1 &
  local sub=$!
  sleep 0.3
  mosquitto_pub "${host[@]}" -u admin -P "$admin_pw" -i "admin-pub-$RANDOM" -t '$CONTROL/dynamic-security/v1' -f "$1"
  wait "$sub" || true
  grep -q '"responses"' "$tmp/response" && ! grep -q '"error"' "$tmp/response"
}

start_broker
dev=mota/v1/dev

# The backend's role (shipped) and its client (one user for every replica).
check "dynsec-backend.json applies (role mota-backend, default ACL access)" ctrl_doc "$roles"
ctrl createClient mota-backend -p "$backend_pw" >/dev/null
ctrl addClientRole mota-backend mota-backend >/dev/null

# The backend's shared subscriptions are granted; anything else it subscribes to is not.
subacks() { # USER PASSWORD FILTER...: the SUBACK codes
  local user=$1 password=$2
  shift 2
  local args=()
  for f; do args+=(-t "$f"); done
  mosquitto_sub "${host[@]}" -u "$user" -P "$password" -i "$user-sub-$RANDOM" -q 1 -d -W 1 "${args[@]}" 2>&1 |
    sed -n 's/.*Subscribed (mid: 1): //p' | head -1
}
check "backend's \$share/ subscriptions granted (SUBACK 1, 1, 1)" \
  test "$(subacks mota-backend "$backend_pw" "\$share/g-$run-hello/$dev/+/hello" "\$share/g-$run-get/$dev/+/get" \
    "\$share/g-$run-status/$dev/+/status")" = "1, 1, 1"
check "backend subscribing to # or a device's offer is refused (SUBACK 128)" \
  test "$(subacks mota-backend "$backend_pw" '#' "$dev/dev-x/offer")" = "128, 128"
check "anonymous connect is refused" \
  bash -c '! out=$(mosquitto_pub "$@" -i anon -t mota/v1/dev/anon/status -m x 2>&1) && grep -qi "not authori[sz]ed" <<<"$out"' \
  _ "${host[@]}"
check "wrong backend password is refused" \
  bash -c '! mosquitto_pub "$@" -u mota-backend -P wrong -i be-wrong -t mota/v1/dev/x/offer -m x 2>/dev/null' _ "${host[@]}"

# The device half, with the backend's own provisioning documents (Rust: real backend,
# real devices' logins, the refusals listed above).
if MOTA_TEST_DYNSEC="127.0.0.1:$port" MOTA_TEST_DYNSEC_ADMIN="admin:$admin_pw" \
  MOTA_TEST_DYNSEC_BACKEND="mota-backend:$backend_pw" \
  cargo test -q --workspace --test identity on_mosquitto -- --nocapture >"$tmp/cargo.out" 2>&1 &&
  grep -q 'test result: ok. 1 passed' "$tmp/cargo.out" && ! grep -q 'skipped' "$tmp/cargo.out"; then
  echo "PASS devices provisioned by the backend: only under their own id (backend/tests/identity.rs)"
else
  echo "FAIL devices provisioned by the backend: only under their own id (backend/tests/identity.rs)"
  cat "$tmp/cargo.out"
  failures=$((failures + 1))
fi

# Logins, roles and retained offers survive a restart (persistence on, the plugin's file).
mosquitto_pub "${host[@]}" -u mota-backend -P "$backend_pw" -i "be-pub-$RANDOM" -q 1 -r -t "$dev/dev-z/offer" -m "offer-$run"
stop_broker
start_broker
retained=$(mosquitto_sub "${host[@]}" -u admin -P "$admin_pw" -i "admin-again-$RANDOM" -q 1 -v -t "$dev/dev-z/offer" \
  -C 1 -W 5 2>&1 || true)
check "a retained offer survives a broker restart" test "$retained" = "$dev/dev-z/offer offer-$run"
check "the backend's login and role survive it" \
  test "$(subacks mota-backend "$backend_pw" "\$share/g-$run-hello/$dev/+/hello")" = "1"

if ((failures)); then
  echo "mosquitto-acl.sh: $failures check(s) failed; broker log:" >&2
  cat "$tmp/broker.log" >&2 || true
  exit 1
fi
echo "mosquitto-acl.sh: all checks passed (Mosquitto $(mosquitto -h 2>&1 | sed -n 's/^mosquitto version //p'))"
