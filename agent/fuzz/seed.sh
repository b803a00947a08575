#!/usr/bin/env bash
# Seeds the fuzz corpora from the wire vectors and the runtime's fixture models, so the
# fuzzers start from valid inputs.
# messages: the first byte picks the decoder (0 hello, 1 get, 2 chunk, 3 status, 4 topic);
# signed commands and revocation lists are the envelope target's (every vector seeds it).
set -euo pipefail
cd "$(dirname "$0")"
vectors=../proto/tests/vectors
hex2bin() { grep -v '^#' "$1" | tr -d ' \n' | xxd -r -p; }
mkdir -p corpus/envelope corpus/messages corpus/model
cp ../runtime/fixtures/models/*.tflite corpus/model/
for f in "$vectors"/*.hex; do hex2bin "$f" > "corpus/envelope/$(basename "$f" .hex)"; done
i=0
for n in hello_online get chunk_data status_committed; do
  { printf "\\x$(printf %02x $i)"; hex2bin "$vectors/$n.hex"; } > "corpus/messages/$n"
  i=$((i + 1))
done

# delta: patches made by `mota delta make` against the fuzz target's fixed base, each
# prefixed with a chunk size (needs the mota binary: cargo build -p mota-cli).
python3 seed_delta.py "${MOTA:-../../target/debug/mota}"

# agent: the whole genuine update as an event sequence (offer, the patch and the set in
# 1 KiB chunks, ticks), then the same cut at a few flash operations.
python3 - <<'PY'
import os
patch = os.path.getsize("../firmware/data/patch.mdlt")
vset = os.path.getsize("../firmware/data/set.vset")
def chunks(which, size):
    out = b""
    for off in range(0, size, 1024):
        n = min(1024, size - off)
        out += bytes([1, which, off >> 8, off & 255, n >> 8, n & 255, 0])
    return out
update = bytes([0]) + chunks(0, patch) + bytes([4]) + chunks(1, vset) + bytes([4, 4])
os.makedirs("corpus/agent", exist_ok=True)
open("corpus/agent/update", "wb").write(update)
for at in (0, 3, 9, 20):
    open(f"corpus/agent/cut_{at}", "wb").write(bytes([6, at, at % 3]) + update + bytes([0]) + update)
PY

# session: the broker's side of the stream after its CONNACK: a SUBACK granting the four
# subscriptions, the genuine offer published on the device's topic, a PINGRESP, each
# split into pieces prefixed with their length.
python3 - <<'PY'
import os
def varint(n):
    out = b""
    while True:
        b, n = n & 127, n >> 7
        out += bytes([b | (128 if n else 0)])
        if not n:
            return out
def packet(kind, body):
    return bytes([kind]) + varint(len(body)) + body
def publish(topic, pid, payload):
    t = topic.encode()
    return packet(0x32, len(t).to_bytes(2, "big") + t + pid.to_bytes(2, "big") + b"\x00" + payload)
def pieces(stream, size):
    return b"".join(bytes([len(stream[i:i + size])]) + stream[i:i + size] for i in range(0, len(stream), size))
suback = packet(0x90, b"\x00\x01\x00" + b"\x01" * 4)
offer = publish("mota/v1/dev/fuzz-device/offer", 7, open("../firmware/data/offer.cbor", "rb").read())
other = publish("mota/v1/dev/other-device/offer", 8, b"\x00")
stream = suback + offer + other + packet(0xD0, b"")
os.makedirs("corpus/session", exist_ok=True)
open("corpus/session/offer", "wb").write(pieces(stream, 200))
open("corpus/session/bytewise", "wb").write(pieces(suback + offer, 1))
PY
