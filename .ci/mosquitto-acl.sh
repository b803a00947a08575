#!/usr/bin/env bash
# Tests the shipped broker ACL (deploy/mosquitto/acl, unmodified) on a real Mosquitto 2.x:
# every device only under mota/v1/dev/<its id>/, the backend everywhere it needs, shared
# subscriptions included. The broker runs deploy/mosquitto/mosquitto.conf with only its
# listener port, file paths and log destination replaced (and `user`, so it can read a
# private temporary directory when started as root).
#
# Needs (Debian/Ubuntu packages): mosquitto (mosquitto, mosquitto_passwd) and
# mosquitto-clients (mosquitto_pub, mosquitto_sub), plus python3 to pick a free port:
#   apt-get install -y mosquitto mosquitto-clients
# It installs nothing itself.
#
# Usage: .ci/mosquitto-acl.sh        (prints PASS/FAIL per check; non-zero on any FAIL)
set -euo pipefail

cd "$(dirname "$0")/.."
repo=$(pwd)
conf="$repo/deploy/mosquitto/mosquitto.conf"
acl="$repo/deploy/mosquitto/acl"
PATH="$PATH:/usr/sbin:/usr/local/sbin" # Debian installs the broker in /usr/sbin

missing=()
for tool in mosquitto mosquitto_passwd mosquitto_pub mosquitto_sub python3; do
  command -v "$tool" >/dev/null || missing+=("$tool")
done
if ((${#missing[@]})); then
  echo "mosquitto-acl.sh: missing ${missing[*]}; install the packages mosquitto and mosquitto-clients" >&2
  exit 2
fi

tmp=$(mktemp -d /tmp/mota-mosquitto-acl.XXXXXX)
pids=()
broker=
cleanup() {
  local pid
  for pid in "${pids[@]}" $broker; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$tmp"
}
trap cleanup EXIT

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
host=(-h 127.0.0.1 -p "$port")

# Users: the backend and two devices (username = device id).
declare -A password=([mota-backend]=backend-secret [dev-a]=dev-a-secret [dev-b]=dev-b-secret)
touch "$tmp/passwd"
chmod 600 "$tmp/passwd"
for user in "${!password[@]}"; do
  mosquitto_passwd -b "$tmp/passwd" "$user" "${password[$user]}"
done

# The shipped configuration with port and paths replaced; each replaced line must exist
# exactly once, so the test cannot drift from the file it claims to test.
mkdir "$tmp/data"
for key in listener password_file acl_file persistence_location log_dest; do
  n=$(grep -c "^$key " "$conf" || true)
  if [ "$n" != 1 ]; then
    echo "mosquitto-acl.sh: expected one '$key' line in $conf, found $n" >&2
    exit 2
  fi
done
sed -e "s|^listener .*|listener $port 127.0.0.1|" \
  -e "s|^password_file .*|password_file $tmp/passwd|" \
  -e "s|^acl_file .*|acl_file $acl|" \
  -e "s|^persistence_location .*|persistence_location $tmp/data/|" \
  -e "s|^log_dest .*|log_dest file $tmp/broker.log|" \
  "$conf" >"$tmp/mosquitto.conf"
echo "user $(id -un)" >>"$tmp/mosquitto.conf"

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

pub() { # USER, mosquitto_pub args...
  local user=$1
  shift
  mosquitto_pub "${host[@]}" -u "$user" -P "${password[$user]}" -i "$user-pub-$RANDOM" -q 1 "$@"
}
# Starts a subscriber in the background, writing `topic payload` lines (and -d debug
# lines) to FILE; returns once its SUBACK arrived (so later publishes reach it).
sub_bg() { # FILE, USER, mosquitto_sub args...
  local out=$1 user=$2
  shift 2
  stdbuf -oL mosquitto_sub "${host[@]}" -u "$user" -P "${password[$user]}" -i "$user-sub-$RANDOM" -q 1 -d -v "$@" \
    >"$out" 2>&1 &
  pids+=($!)
  for _ in $(seq 100); do
    grep -q 'received SUBACK' "$out" 2>/dev/null && return 0
    sleep 0.05
  done
  echo "subscriber ($user $*) got no SUBACK:" >&2
  cat "$out" >&2
  return 1
}
# Waits up to 5 s until FILE has a line `TOPIC PAYLOAD`.
wait_for() { # FILE, TOPIC, PAYLOAD
  for _ in $(seq 100); do
    grep -qxF "$2 $3" "$1" 2>/dev/null && return 0
    sleep 0.05
  done
  return 1
}
# got FILE TOPIC PAYLOAD [TOPIC PAYLOAD...]: all of them arrive.
got() {
  local out=$1
  shift
  while (($#)); do
    wait_for "$out" "$1" "$2" || return 1
    shift 2
  done
}
# lacks FILE TEXT...: none of them is in FILE.
lacks() {
  local out=$1
  shift
  for text; do
    if grep -qF -- "$text" "$out"; then return 1; fi
  done
}
has() { grep -qF -- "$2" "$1"; }
# refused USER PASSWORD [mosquitto_pub args]: the broker refuses the connection.
refused() {
  local out
  if out=$(mosquitto_pub "${host[@]}" -u "$1" -P "$2" -i "refused-$RANDOM" -q 1 "${@:3}" 2>&1); then
    return 1
  fi
  grep -qi 'not authori[sz]ed\|refused' <<<"$out"
}

dev=mota/v1/dev
run=$RANDOM$RANDOM # unique payloads per run
start_broker

# a) A device's own status reaches the backend's shared subscription; so do hello and
#    get. b) Publishing under another device's id (any kind), a device->backend topic
#    the backend subscribes to, does not.
sub_bg "$tmp/backend" mota-backend -t "\$share/mota-status/$dev/+/status" -t "\$share/mota-hello/$dev/+/hello" \
  -t "\$share/mota-get/$dev/+/get"
check "backend's \$share/ subscriptions granted (SUBACK 1, 1, 1)" has "$tmp/backend" "Subscribed (mid: 1): 1, 1, 1"

pub dev-a -t "$dev/dev-b/status" -m "forged-status-$run"
pub dev-a -t "$dev/dev-b/hello" -m "forged-hello-$run"
pub dev-a -t "$dev/dev-b/get" -m "forged-get-$run"
pub dev-a -t "$dev/dev-a/hello" -m "hello-$run"
pub dev-a -t "$dev/dev-a/get" -m "get-$run"
pub dev-a -t "$dev/dev-a/status" -m "status-$run"
check "a) dev-a's own status reaches \$share/mota-status/$dev/+/status (as mota-backend)" \
  got "$tmp/backend" "$dev/dev-a/status" "status-$run"
check "a) dev-a's own hello and get reach the backend's shared subscriptions" \
  got "$tmp/backend" "$dev/dev-a/hello" "hello-$run" "$dev/dev-a/get" "get-$run"
# dev-a published the forgeries first, on one connection each in order; its own status
# (published last) has arrived, so the forgeries would have too.
check "b) dev-a publishing $dev/dev-b/status does not reach the backend" lacks "$tmp/backend" "forged-status-$run"
check "b) dev-a publishing dev-b's hello and get does not reach the backend" \
  lacks "$tmp/backend" "forged-hello-$run" "forged-get-$run"

# MQTT 5: the refusal is visible to the publisher as PUBACK reason 0x87.
v5_out=$(pub dev-a -V mqttv5 -d -t "$dev/dev-b/status" -m "forged-v5-$run" 2>&1 || true)
# (mosquitto_pub -d shows `RC:135` and warns "Publish 1 failed: Not authorized." but exits 0.)
check "b) MQTT 5 publish to $dev/dev-b/status gets PUBACK 0x87 (not authorized)" grep -q 'PUBACK (Mid: 1, RC:135)' <<<"$v5_out"
pub dev-a -V mqttv5 -t "$dev/dev-a/status" -m "status-v5-$run"
wait_for "$tmp/backend" "$dev/dev-a/status" "status-v5-$run" || true
check "b) ... and does not reach the backend" lacks "$tmp/backend" "forged-v5-$run"

# The last will (hello) is checked when it is published, not at CONNECT (Mosquitto 2.0
# accepts the CONNECT): a will under another id is dropped, the device's own arrives.
will_drop() { # WILL_TOPIC PAYLOAD: connect as dev-a with that will, then drop the TCP connection
  mosquitto_sub "${host[@]}" -u dev-a -P "${password[dev-a]}" -i "dev-a-will-$RANDOM" -q 1 -d \
    --will-topic "$1" --will-payload "$2" --will-qos 1 -t "$dev/dev-a/cmd" >"$tmp/will" 2>&1 &
  local pid=$!
  for _ in $(seq 100); do
    grep -q 'received SUBACK' "$tmp/will" 2>/dev/null && break
    sleep 0.05
  done
  kill -9 "$pid"
  wait "$pid" 2>/dev/null || true
}
will_drop "$dev/dev-b/hello" "forged-will-$run"
will_drop "$dev/dev-a/hello" "will-$run"
check "b) dev-a's last will on its own hello reaches the backend" got "$tmp/backend" "$dev/dev-a/hello" "will-$run"
check "b) dev-a's last will on dev-b's hello does not" lacks "$tmp/backend" "forged-will-$run"

# c) A device cannot subscribe to another device's topics, by name or by wildcard, and
#    gets nothing from them (retained offer included) while the owner gets its own.
#    dev-b's retained offer is on the broker before dev-a subscribes, so a subscription
#    granted by mistake would deliver it at once.
pub mota-backend -r -t "$dev/dev-b/offer" -m "offer-b-$run"
sub_bg "$tmp/dev-a-in" dev-a -t "$dev/dev-a/offer" -t "$dev/dev-a/chunk" -t "$dev/dev-a/cmd" \
  -t "$dev/dev-b/offer" -t "$dev/+/offer" -t "$dev/dev-b/#" -t '#' -t "\$share/x/$dev/+/status"
# Mosquitto 2.0's acl_file does not check SUBSCRIBE at all (every filter is granted);
# it checks read access when it delivers each message. Shown, not asserted.
echo "NOTE dev-a's SUBACK for own offer/chunk/cmd, dev-b/offer, +/offer, dev-b/#, #, \$share/x/+/status:" \
  "$(grep -o 'Subscribed (mid: 1): .*' "$tmp/dev-a-in" | sed 's/Subscribed (mid: 1): //')"
sub_bg "$tmp/dev-b-in" dev-b -t "$dev/dev-b/offer" -t "$dev/dev-b/chunk" -t "$dev/dev-b/cmd"
check "c) dev-b receives its own retained offer" got "$tmp/dev-b-in" "$dev/dev-b/offer" "offer-b-$run"

# A device cannot write backend->device topics: not another device's cmd/offer/chunk,
# not its own either.
pub dev-a -t "$dev/dev-b/cmd" -m "forged-cmd-$run"
pub dev-a -t "$dev/dev-b/chunk" -m "forged-chunk-$run"
pub dev-a -r -t "$dev/dev-b/offer" -m "forged-offer-$run"
pub dev-a -t "$dev/dev-a/offer" -m "self-offer-$run"

# e) The backend publishes to any device's offer (retained), chunk and cmd (retained).
pub mota-backend -t "$dev/dev-a/chunk" -m "chunk-a-$run"
pub mota-backend -r -t "$dev/dev-a/cmd" -m "cmd-a-$run"
pub mota-backend -r -t "$dev/dev-a/offer" -m "offer-a-$run"
pub mota-backend -t "$dev/dev-b/chunk" -m "chunk-b-$run"
pub mota-backend -r -t "$dev/dev-b/cmd" -m "cmd-b-$run"
pub mota-backend -r -t "$dev/dev-b/offer" -m "offer-b2-$run"
check "e) backend publishes offer, chunk and cmd to dev-a; dev-a receives them" \
  got "$tmp/dev-a-in" "$dev/dev-a/chunk" "chunk-a-$run" "$dev/dev-a/cmd" "cmd-a-$run" "$dev/dev-a/offer" "offer-a-$run"
check "e) backend publishes offer, chunk and cmd to dev-b; dev-b receives them" \
  got "$tmp/dev-b-in" "$dev/dev-b/chunk" "chunk-b-$run" "$dev/dev-b/cmd" "cmd-b-$run" "$dev/dev-b/offer" "offer-b2-$run"
# Everything above has arrived where it was allowed to, so forbidden deliveries would have.
check "c) dev-a received nothing of dev-b's (offer, chunk, cmd)" \
  lacks "$tmp/dev-a-in" "offer-b-$run" "offer-b2-$run" "chunk-b-$run" "cmd-b-$run" "status-$run"
check "b) dev-a cannot write dev-b's cmd, chunk or offer" \
  lacks "$tmp/dev-b-in" "forged-cmd-$run" "forged-chunk-$run" "forged-offer-$run"
check "b) ... nor its own offer" lacks "$tmp/dev-a-in" "self-offer-$run"

# g) Shared subscriptions by devices. A device may subscribe to $share/<group>/<filter>
#    (acl_file grants every SUBSCRIBE) and receives nothing it may not read. But a
#    device in the backend's own share group takes its turn in the round robin and the
#    broker drops the messages it may not read: the backend loses them. So the share
#    group prefix (--mqtt-share-group) must be deployment-specific and not guessable.
secret="mota-$run$RANDOM"
sub_bg "$tmp/backend-secret" mota-backend -t "\$share/$secret-status/$dev/+/status"
sub_bg "$tmp/dev-a-share" dev-a -t "\$share/mota-status/$dev/+/status" -t "\$share/$secret-x/$dev/+/status"
for i in 1 2 3 4 5 6; do pub dev-b -t "$dev/dev-b/status" -m "share-$i-$run"; done
check "g) backend in share group '$secret-status' gets all of dev-b's statuses while dev-a sits in \$share/mota-status" \
  got "$tmp/backend-secret" $(for i in 1 2 3 4 5 6; do echo "$dev/dev-b/status share-$i-$run"; done)
check "g) dev-a's \$share/ subscriptions receive none of dev-b's statuses" lacks "$tmp/dev-a-share" "share-"
lost=0
for i in 1 2 3 4 5 6; do grep -qxF "$dev/dev-b/status share-$i-$run" "$tmp/backend" || lost=$((lost + 1)); done
echo "NOTE with dev-a also in \$share/mota-status (the default group), the backend's member there missed $lost of 6" \
  "statuses: use a deployment-specific --mqtt-share-group"

# d) No anonymous or wrongly authenticated clients.
check "d) anonymous connect is refused" \
  bash -c '! out=$(mosquitto_pub "$@" -i anon -t mota/v1/dev/anon/status -m x 2>&1) && grep -qi "not authori[sz]ed" <<<"$out"' _ "${host[@]}"
check "d) wrong password is refused" refused dev-a wrong-password -t "$dev/dev-a/status" -m x
check "d) unknown user is refused" refused dev-c dev-c-secret -t "$dev/dev-c/status" -m x

# f) Retained offers survive a broker restart (persistence on).
stop_broker
start_broker
retained=$(mosquitto_sub "${host[@]}" -u dev-b -P "${password[dev-b]}" -i "dev-b-again-$RANDOM" -q 1 -v \
  -t "$dev/dev-b/offer" -C 1 -W 5 2>&1 || true)
check "f) dev-b's retained offer survives a broker restart" test "$retained" = "$dev/dev-b/offer offer-b2-$run"

if ((failures)); then
  echo "mosquitto-acl.sh: $failures check(s) failed; broker log:" >&2
  cat "$tmp/broker.log" >&2 || true
  exit 1
fi
echo "mosquitto-acl.sh: all checks passed (Mosquitto $(mosquitto -h 2>&1 | sed -n 's/^mosquitto version //p'))"
