#!/usr/bin/env bash
# The backend's MQTT client over TLS (mqtts://) against a real Mosquitto TLS listener:
# a private CA, a server certificate for 127.0.0.1, the backend binary given only the CA
# (--mqtt-ca-file); a device's hello (the wire vector) published over TLS must register
# the device through the backend's shared subscription. A second backend given the wrong
# CA must not connect (the device stays unknown to it).
#
# Needs: openssl, mosquitto, mosquitto-clients, python3, curl. Installs nothing.
# Usage: .ci/mqtt-tls.sh PATH/TO/mota-backend
set -euo pipefail
cd "$(dirname "$0")/.."
backend=$(realpath "$1")
PATH="$PATH:/usr/sbin"
for tool in openssl mosquitto mosquitto_pub python3 curl; do
  command -v "$tool" >/dev/null || { echo "mqtt-tls.sh: $tool is missing" >&2; exit 2; }
done
dir=$(mktemp -d /tmp/mota-tls.XXXXXX)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$dir"; }
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

# A CA, a server certificate for 127.0.0.1 signed by it, and an unrelated CA.
cd "$dir"
openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=mota-test-ca -keyout ca.key -out ca.pem 2>/dev/null
openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=other-ca -keyout other.key -out other.pem 2>/dev/null
openssl req -newkey rsa:2048 -nodes -subj /CN=127.0.0.1 -keyout server.key -out server.csr 2>/dev/null
printf 'subjectAltName=IP:127.0.0.1\n' > san.ext
openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 -extfile san.ext -out server.pem 2>/dev/null
chmod 644 server.key

port=$(free_port)
cat > mosquitto.conf <<CONF
listener $port 127.0.0.1
cafile $dir/ca.pem
certfile $dir/server.pem
keyfile $dir/server.key
allow_anonymous true
user $(id -un)
CONF
mosquitto -c mosquitto.conf >mosquitto.log 2>&1 &
pids+=($!)

start_backend() { # name, CA file
  local http
  http=$(free_port)
  "$backend" --data-dir "$dir/$1" token create --role viewer --name ci > "$dir/$1.token" 2>/dev/null
  "$backend" --data-dir "$dir/$1" --listen "127.0.0.1:$http" --mqtt-url "mqtts://127.0.0.1:$port" \
    --mqtt-ca-file "$2" --mqtt-client-id "$1" --mqtt-share-group "$1" >"$dir/$1.log" 2>&1 &
  pids+=($!)
  for _ in $(seq 100); do curl -fs "http://127.0.0.1:$http/readyz" >/dev/null && break; sleep 0.1; done
  echo "$http"
}
good=$(start_backend good "$dir/ca.pem")
bad=$(start_backend bad "$dir/other.pem")

python3 - "$OLDPWD/agent/proto/tests/vectors/hello_online.hex" > hello.bin <<'PY'
import sys
lines = [l for l in open(sys.argv[1]) if not l.startswith('#')]
sys.stdout.buffer.write(bytes.fromhex(''.join(lines).replace(' ', '').replace('\n', '')))
PY
device_of() { # backend name, http port: HTTP status of GET /v1/devices/tls-dev
  curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $(tail -1 "$dir/$1.token")" \
    "http://127.0.0.1:$2/v1/devices/tls-dev"
}
status=000
for _ in $(seq 50); do
  mosquitto_pub --cafile ca.pem -h 127.0.0.1 -p "$port" -q 1 -t mota/v1/dev/tls-dev/hello -f hello.bin
  status=$(device_of good "$good")
  [ "$status" = 200 ] && break
  sleep 0.2
done
fail=0
if [ "$status" = 200 ]; then echo "PASS the backend with the right CA registered the device over TLS"; else
  echo "FAIL the backend with the right CA never registered the device (HTTP $status)"; tail -5 "$dir/good.log"; fail=1; fi
status=$(device_of bad "$bad")
if [ "$status" = 404 ]; then echo "PASS the backend with the wrong CA did not (HTTP 404)"; else
  echo "FAIL the backend with the wrong CA answered HTTP $status"; fail=1; fi
if grep -q "MQTT connection" "$dir/bad.log"; then echo "PASS the wrong CA is logged as a connection failure"; else
  echo "FAIL no connection error logged for the wrong CA"; tail -5 "$dir/bad.log"; fail=1; fi
exit $fail
