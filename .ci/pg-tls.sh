#!/usr/bin/env bash
# The backend reaches PostgreSQL over TLS, verifying the server (sslmode=verify-full):
# a throwaway PostgreSQL with ssl=on and a certificate from a private CA; the backend
# migrates with that CA, and refuses the server with another CA.
#
# usage: .ci/pg-tls.sh MOTA_BACKEND_BINARY
set -euo pipefail
backend=$1
pgbin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
dir=$(mktemp -d /tmp/mota-pgtls.XXXXXX)
chown postgres:postgres "$dir"
cleanup() {
  runuser -u postgres -- "$pgbin/pg_ctl" -D "$dir/data" stop -m fast >/dev/null 2>&1 || true
  rm -rf "$dir"
}
trap cleanup EXIT
runuser -u postgres -- "$pgbin/initdb" -D "$dir/data" -U postgres -A trust -E UTF8 --no-sync >/dev/null
ca() { # NAME: a CA key and certificate
  openssl req -x509 -new -nodes -days 2 -subj "/CN=$1" -newkey rsa:2048 -keyout "$dir/$1.key" -out "$dir/$1.crt" 2>/dev/null
}
ca mota-test-ca
ca other-ca
openssl req -new -nodes -subj /CN=127.0.0.1 -newkey rsa:2048 -keyout "$dir/data/server.key" -out "$dir/server.csr" 2>/dev/null
printf 'subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n' >"$dir/ext"
openssl x509 -req -in "$dir/server.csr" -CA "$dir/mota-test-ca.crt" -CAkey "$dir/mota-test-ca.key" -CAcreateserial \
  -days 2 -extfile "$dir/ext" -out "$dir/data/server.crt" 2>/dev/null
chown postgres:postgres "$dir/data/server.key" "$dir/data/server.crt"
chmod 600 "$dir/data/server.key"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
runuser -u postgres -- "$pgbin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w \
  -o "-p $port -k $dir -c listen_addresses=127.0.0.1 -c fsync=off -c ssl=on" start >/dev/null
url="postgres://postgres@127.0.0.1:$port/postgres?sslmode=verify-full"
RUST_BACKTRACE=0 "$backend" --data-dir "$dir/a" --database-url "$url&sslrootcert=$dir/mota-test-ca.crt" migrate
if RUST_BACKTRACE=0 "$backend" --data-dir "$dir/b" --database-url "$url&sslrootcert=$dir/other-ca.crt" migrate \
  >"$dir/refused.log" 2>&1; then
  echo "a server certificate from another CA was accepted" >&2
  exit 1
fi
grep -q 'certificate' "$dir/refused.log" || { cat "$dir/refused.log"; exit 1; }
echo "PostgreSQL over TLS: verified with the right CA, refused with another ($(head -c 120 "$dir/refused.log" | tr '\n' ' '))"
