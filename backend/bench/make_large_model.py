#!/usr/bin/env python3
"""Build the ~1 MB full-int8 model the backend's upload benchmark sends.

Writes `large_mlp.tflite` next to this script: an MLP 784 -> 1024 -> 256 -> 10
(FULLY_CONNECTED + SOFTMAX only, so mota-runtime accepts it), 1,067,520 int8
weights, trained for a few epochs on seeded synthetic 28x28 classes and
converted with full-integer quantization (representative data set,
TFLITE_BUILTINS_INT8, int8 input and output, batch 1) by the very `convert`
of ../../agent/runtime/fixtures/make_fixtures.py, which also pins the seeds,
one thread and op determinism. Nothing is downloaded.

With `--finetune PATH` it also writes a fine-tune of that model (all layers, a
few more epochs at a small learning rate, another seed): a 1 MB old -> new pair
for the delta benchmark (`benches/registry.rs` picks it up from
`large_mlp_ft.tflite` when it exists; it is not committed).

Usage (the fixtures venv, see agent/runtime/fixtures/README.md):
  ~/.cache/mota/fixtures-venv/bin/python backend/bench/make_large_model.py
  ~/.cache/mota/fixtures-venv/bin/python backend/bench/make_large_model.py --finetune backend/bench/large_mlp_ft.tflite
Then check it: `mota model inspect backend/bench/large_mlp.tflite` says `supported yes`.
"""

import argparse
import hashlib
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
FIXTURES = os.path.normpath(os.path.join(HERE, "..", "..", "agent", "runtime", "fixtures"))
sys.path.insert(0, FIXTURES)
sys.dont_write_bytecode = True  # leave no __pycache__ in the fixtures directory

# Importing make_fixtures sets the TF environment, one thread and op determinism.
import make_fixtures as mf  # noqa: E402

import numpy as np  # noqa: E402
import keras  # noqa: E402
from keras import layers as L  # noqa: E402

SHAPE = (28, 28)
INPUTS = SHAPE[0] * SHAPE[1]
HIDDEN = (1024, 256)
CLASSES = 10
SEED, FT_SEED = 11, 111
EPOCHS, LR = 3, 1e-3
FT_EPOCHS, FT_LR = 2, 3e-4


def data():
    x, y = mf.synthetic_classes(SEED, 3000, SHAPE, CLASSES, noise=2.5)
    x = x.reshape(-1, INPUTS)
    return (x[:-500], y[:-500]), (x[-500:], y[-500:])


def accuracy(model, x, y):
    return float(np.mean(np.argmax(model.predict(x, verbose=0), axis=1) == y))


def write(path, model_bytes):
    with open(path, "wb") as f:
        f.write(model_bytes)
    digest = hashlib.sha256(model_bytes).hexdigest()
    print(f"wrote {path}: {len(model_bytes):,} bytes, sha256 {digest}")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=os.path.join(HERE, "large_mlp.tflite"))
    ap.add_argument("--finetune", metavar="PATH", help="also write a fine-tune of the model to PATH")
    args = ap.parse_args()

    (xt, yt), (xv, yv) = data()
    mf.seed_all(SEED)
    model = keras.Sequential(
        [keras.Input((INPUTS,))]
        + [L.Dense(n, activation="relu") for n in HIDDEN]
        + [L.Dense(CLASSES, activation="softmax")]
    )
    model = mf.compile_fit(model, xt, yt, epochs=EPOCHS, lr=LR, batch=64)
    print(f"float accuracy {accuracy(model, xv, yv):.3f} on {len(yv)} held-out samples")
    weights = sum(int(np.prod(w.shape)) for layer in model.layers for w in layer.get_weights()[:1])
    print(f"{weights:,} weights")
    write(args.out, mf.convert(model, (1, INPUTS), xt[:300]))

    if args.finetune:
        mf.seed_all(FT_SEED)
        model = mf.compile_fit(model, xt, yt, epochs=FT_EPOCHS, lr=FT_LR, batch=64)
        print(f"fine-tune float accuracy {accuracy(model, xv, yv):.3f}")
        write(args.finetune, mf.convert(model, (1, INPUTS), xt[:300]))


if __name__ == "__main__":
    main()
