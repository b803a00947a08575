#!/usr/bin/env bash
# Seeds the fuzz corpora from the wire vectors and the runtime's fixture models, so the
# fuzzers start from valid inputs.
# messages: the first byte picks the decoder (0 hello, 1 get, 2 chunk, 3 status, 4 cmd).
set -euo pipefail
cd "$(dirname "$0")"
vectors=../proto/tests/vectors
hex2bin() { grep -v '^#' "$1" | tr -d ' \n' | xxd -r -p; }
mkdir -p corpus/envelope corpus/messages corpus/model
cp ../runtime/fixtures/models/*.tflite corpus/model/
for f in "$vectors"/*.hex; do hex2bin "$f" > "corpus/envelope/$(basename "$f" .hex)"; done
i=0
for n in hello_online get chunk_data status_committed cmd_rollback; do
  { printf "\\x$(printf %02x $i)"; hex2bin "$vectors/$n.hex"; } > "corpus/messages/$n"
  i=$((i + 1))
done

# delta: patches made by `mota delta make` against the fuzz target's fixed base, each
# prefixed with a chunk size (needs the mota binary: cargo build -p mota-cli).
python3 seed_delta.py "${MOTA:-../../target/debug/mota}"
