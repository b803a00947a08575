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
