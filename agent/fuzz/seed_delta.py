#!/usr/bin/env python3
"""Seeds corpus/delta: patches against the `delta` target's fixed base (a fine-tune-like
edit, an insertion, unrelated data), each prefixed with a chunk size byte."""
import os
import random
import subprocess
import sys
import tempfile

mota = sys.argv[1]
base = bytes((i * 31 % 251) for i in range(3072))
random.seed(7)
fine = bytearray(base)
for i in range(0, len(fine), 7):
    fine[i] = (fine[i] + random.choice([-2, -1, 1, 2])) % 256
variants = [bytes(fine), base[:1000] + bytes(random.getrandbits(8) for _ in range(500)) + base[1000:],
            bytes(random.getrandbits(8) for _ in range(5000))]
os.makedirs("corpus/delta", exist_ok=True)
with tempfile.TemporaryDirectory() as d:
    open(f"{d}/base", "wb").write(base)
    for k, v in enumerate(variants):
        open(f"{d}/new", "wb").write(v)
        subprocess.run([mota, "delta", "make", f"{d}/base", f"{d}/new", "-o", f"{d}/p"], check=True, capture_output=True)
        patch = open(f"{d}/p", "rb").read()
        for chunk in (1, 64, 255):
            open(f"corpus/delta/seed{k}_{chunk}", "wb").write(bytes([chunk]) + patch)
