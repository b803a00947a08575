#!/usr/bin/env python3
"""Build the old -> new int8 TFLite model pairs for the delta benchmark.

Writes, next to this script:

  pairs/<family>/<variant>/old.tflite
  pairs/<family>/<variant>/new.tflite
  pairs/index.json          one entry per pair: description, sizes, sha256,
                            TFLM accuracy of old and new, "finetune" flag

Families: digits_cnn, digits_mlp (sklearn's bundled load_digits) and
kws_dscnn (DS-CNN layout, seeded synthetic data). In a family every variant
shares the same old.tflite; the variants are listed in VARIANTS below.

Model definitions, data and the full-int8 conversion are imported from
../../runtime/fixtures/make_fixtures.py (not modified). Everything is seeded
and single-threaded; nothing is downloaded at run time.

Usage (see README.md):
  ~/.cache/mota/fixtures-venv/bin/python make_pairs.py [--families digits_cnn ...]
"""

import argparse
import hashlib
import json
import os
import shutil
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
FIXTURES = os.path.normpath(os.path.join(HERE, "..", "..", "runtime", "fixtures"))
sys.path.insert(0, FIXTURES)
sys.dont_write_bytecode = True  # leave no __pycache__ in the fixtures directory

# Importing make_fixtures sets the TF env vars, single-thread op determinism
# and the seeds helpers before TensorFlow is used.
import make_fixtures as mf  # noqa: E402

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import keras  # noqa: E402
from keras import layers as L  # noqa: E402

PAIRS_DIR = os.path.join(HERE, "pairs")

FT_EPOCHS, FT_LR = 5, 3e-4          # finetune / layer_added
LAST_EPOCHS, LAST_LR = FT_EPOCHS, FT_LR  # finetune_last: same schedule, head only
NOISE_REL = 0.25                    # noisy: sigma = NOISE_REL * std(kernel)

VARIANTS = {
    "finetune": dict(finetune=True, desc="old + {ft_e} epochs at Adam lr {ft_lr} (all layers, seed {s})"),
    "finetune_last": dict(finetune=True, desc="old + {last_e} epochs at Adam lr {last_lr}, only the last Dense "
                                              "layer trainable, all others frozen (seed {s})"),
    "noisy": dict(finetune=False, desc="bad update: every kernel of old + Gaussian noise with sigma = "
                                       "{noise} x std(kernel) (seed {s}), no training"),
    "requant": dict(finetune=False, desc="the old float model converted again with per-{other} instead of "
                                         "per-{mine} FULLY_CONNECTED weights "
                                         "(_experimental_disable_per_channel_quantization_for_dense_layers={flag})"),
    "requant_all": dict(finetune=False, desc="the old float model converted again with every CONV_2D, "
                                             "DEPTHWISE_CONV_2D and FULLY_CONNECTED weight per-tensor "
                                             "(_experimental_disable_per_channel=True); only for families whose "
                                             "old model is per-channel"),
    "recalib": dict(finetune=False, desc="the old float model converted again with another representative "
                                         "data set ({n} other training samples); same quantization mode"),
    "layer_added": dict(finetune=False, desc="an identity-initialised {extra} inserted before the classifier, "
                                             "all old weights kept, then {ft_e} epochs at lr {ft_lr} (seed {s})"),
    "retrain": dict(finetune=False, desc="same architecture trained from scratch with seed {s} "
                                         "({e} epochs at lr {lr}, as old)"),
}


# --------------------------------------------------------------------------
# Architectures (same as make_fixtures; `extra` inserts one identity layer)
#
# Model, input and layer names are fixed: Keras would otherwise number them
# per process (sequential_1, conv2d_3, ...), the numbers end up in the TFLite
# tensor names, and every new.tflite would differ from old.tflite in names
# and size for no reason a real training pipeline would have.
# --------------------------------------------------------------------------


def cnn_arch(extra=False):
    ls = [
        keras.Input((8, 8, 1), name="input"),
        L.Conv2D(8, 3, padding="same", activation="relu", name="conv1"),
        L.MaxPooling2D(2, name="pool"),
        L.Conv2D(16, 3, padding="same", activation="relu6", name="conv2"),
    ]
    if extra:
        ls.append(L.Conv2D(16, 1, activation="relu", name="inserted"))
    ls += [L.Flatten(name="flatten"), L.Dense(10, activation="softmax", name="head")]
    return keras.Sequential(ls, name="digits_cnn")


def mlp_arch(extra=False):
    ls = [
        keras.Input((64,), name="input"),
        L.Dense(48, activation="relu", name="fc1"),
        L.Dense(24, activation="relu", name="fc2"),
    ]
    if extra:
        ls.append(L.Dense(24, activation="relu", name="inserted"))
    ls.append(L.Dense(10, activation="softmax", name="head"))
    return keras.Sequential(ls, name="digits_mlp")


def kws_arch(extra=False):
    """MLPerf-Tiny KWS DS-CNN layout: 64 filters, 4 depthwise-separable blocks
    (make_fixtures' kws_dscnn is the same shape with 32 filters, 3 blocks)."""
    shape, ch = (49, 10, 1), 64
    inp = keras.Input(shape, name="input")
    h = L.Conv2D(ch, (10, 4), strides=2, padding="same", use_bias=False, name="conv0")(inp)
    h = L.BatchNormalization(name="bn0")(h)
    h = L.ReLU(name="relu0")(h)
    for i in range(4):
        h = L.DepthwiseConv2D(3, padding="same", use_bias=False, name=f"dw{i}")(h)
        h = L.BatchNormalization(name=f"dw{i}_bn")(h)
        h = L.ReLU(name=f"dw{i}_relu")(h)
        h = L.Conv2D(ch, 1, use_bias=False, name=f"pw{i}")(h)
        h = L.BatchNormalization(name=f"pw{i}_bn")(h)
        h = L.ReLU(name=f"pw{i}_relu")(h)
    if extra:
        h = L.Conv2D(ch, 1, activation="relu", name="inserted")(h)
    h = L.AveragePooling2D(pool_size=(25, 5), name="avgpool")(h)
    h = L.Flatten(name="flatten")(h)
    out = L.Dense(12, activation="softmax", name="head")(h)
    return keras.Model(inp, out, name="kws_dscnn")


def cnn_data():
    (xt, yt), (xv, yv) = mf.digits_data()
    return xt, yt, xv, yv


def mlp_data():
    (xt, yt), (xv, yv) = mf.digits_data()
    return xt.reshape(-1, 64), yt, xv.reshape(-1, 64), yv


def kws_data():
    x, y = mf.synthetic_classes(5, 1400, (49, 10, 1), 12, noise=0.5)
    return x[:-200], y[:-200], x[-200:], y[-200:]


FAMILIES = {
    # seed, epochs and lr of old are those of make_fixtures (digits_cnn_v1,
    # digits_mlp, kws_dscnn); per_tensor_dense is the old conversion mode.
    "digits_cnn": dict(arch=cnn_arch, data=cnn_data, shape=(1, 8, 8, 1), seed=1, epochs=40, lr=3e-3,
                       rep=(0, 300), rep2=(300, 600), per_tensor_dense=False, labels="real",
                       extra="1x1 CONV_2D (16->16, relu)"),
    "digits_mlp": dict(arch=mlp_arch, data=mlp_data, shape=(1, 64), seed=4, epochs=60, lr=2e-3,
                       rep=(0, 300), rep2=(300, 600), per_tensor_dense=True, labels="real",
                       extra="FULLY_CONNECTED (24->24, relu)"),
    "kws_dscnn": dict(arch=kws_arch, data=kws_data, shape=(1, 49, 10, 1), seed=5, epochs=15, lr=3e-3,
                      rep=(0, 200), rep2=(200, 400), per_tensor_dense=False, labels="synthetic",
                      extra="1x1 CONV_2D (64->64, relu)"),
}


# --------------------------------------------------------------------------
# Variants
# --------------------------------------------------------------------------


def convert_all_per_tensor(model, input_shape, rep_data):
    """make_fixtures.convert with per-channel quantization off for every op."""
    with tempfile.TemporaryDirectory(prefix="mota_pairs_sm_") as tmp:
        model.export(tmp, format="tf_saved_model", verbose=False,
                     input_signature=[tf.TensorSpec(input_shape, tf.float32)])
        conv = tf.lite.TFLiteConverter.from_saved_model(tmp)
        conv._experimental_disable_per_channel = True
        return mf._convert_configured(conv, input_shape, rep_data, False, True)


def clone_with(fam, weights_from, extra=False):
    m = fam["arch"](extra=extra)
    if not extra:
        m.set_weights(weights_from.get_weights())
        return m
    src = {l.name: l for l in weights_from.layers}
    for l in m.layers:
        if not l.weights:
            continue
        if l.name == "inserted":
            k, b = l.get_weights()
            eye = np.eye(k.shape[-1], dtype=np.float32).reshape(k.shape)
            l.set_weights([eye, np.zeros_like(b)])
        else:
            l.set_weights(src[l.name].get_weights())
    return m


def train_old(fam, xt, yt, seed=None):
    mf.seed_all(fam["seed"] if seed is None else seed)
    return mf.compile_fit(fam["arch"](), xt, yt, epochs=fam["epochs"], lr=fam["lr"])


def build_family(name, fam):
    """Returns (old_tflite, (x_val, y_val), {variant: (new_tflite, description kwargs)})."""
    xt, yt, xv, yv = fam["data"]()
    shape = fam["shape"]
    r0, r1 = fam["rep"]
    rep = xt[r0:r1]
    ptd = fam["per_tensor_dense"]
    base = fam["seed"] * 100

    def conv(model, rep_data=rep, per_tensor_dense=ptd):
        return mf.convert(model, shape, rep_data, per_tensor_dense=per_tensor_dense)

    t0 = time.time()
    old = train_old(fam, xt, yt)
    old_tfl = conv(old)
    print(f"{name}: old {len(old_tfl)} B ({time.time() - t0:.1f}s)", flush=True)

    out = {}

    # finetune: all layers, low LR
    s = base + 1
    mf.seed_all(s)
    m = mf.compile_fit(clone_with(fam, old), xt, yt, epochs=FT_EPOCHS, lr=FT_LR)
    out["finetune"] = (conv(m), dict(ft_e=FT_EPOCHS, ft_lr=FT_LR, s=s))

    # finetune_last: head only
    s = base + 2
    mf.seed_all(s)
    m = clone_with(fam, old)
    for l in m.layers:
        l.trainable = l.name == "head"
    m = mf.compile_fit(m, xt, yt, epochs=LAST_EPOCHS, lr=LAST_LR)
    out["finetune_last"] = (conv(m), dict(last_e=LAST_EPOCHS, last_lr=LAST_LR, s=s))

    # noisy: perturbed kernels, no training
    s = base + 3
    rng = np.random.default_rng(s)
    m = clone_with(fam, old)
    for l in m.layers:
        ws = l.get_weights()
        if not ws:
            continue
        new_ws = []
        for v in l.weights:
            w = np.array(v.numpy())
            if "kernel" in v.path and w.ndim >= 2:
                w = w + rng.normal(0.0, NOISE_REL * float(w.std()), size=w.shape).astype(w.dtype)
            new_ws.append(w)
        l.set_weights(new_ws)
    out["noisy"] = (conv(m), dict(noise=NOISE_REL, s=s))

    # requant: same float model, the other FC weight granularity
    out["requant"] = (conv(old, per_tensor_dense=not ptd),
                      dict(other="channel" if ptd else "tensor", mine="tensor" if ptd else "channel",
                           flag=not ptd))

    if not ptd:
        out["requant_all"] = (convert_all_per_tensor(old, shape, rep), {})

    # recalib: same float model, another representative data set
    q0, q1 = fam["rep2"]
    out["recalib"] = (conv(old, rep_data=xt[q0:q1]), dict(n=q1 - q0))

    # layer_added: identity layer inserted, then a short fine-tune
    s = base + 4
    mf.seed_all(s)
    m = clone_with(fam, old, extra=True)
    m = mf.compile_fit(m, xt, yt, epochs=FT_EPOCHS, lr=FT_LR)
    out["layer_added"] = (conv(m), dict(extra=fam["extra"], ft_e=FT_EPOCHS, ft_lr=FT_LR, s=s))

    # retrain: from scratch, another seed
    s = base + 5
    m = train_old(fam, xt, yt, seed=s)
    out["retrain"] = (conv(m), dict(s=s, e=fam["epochs"], lr=fam["lr"]))

    print(f"{name}: variants done ({time.time() - t0:.1f}s)", flush=True)
    return old_tfl, (xv, yv), out


# --------------------------------------------------------------------------
# Checks and metadata
# --------------------------------------------------------------------------


def tflm_accuracy(tfl, shape, xv, yv):
    """Top-1 accuracy of the int8 model under TFLM (real or synthetic labels)."""
    info = mf.describe(tfl)
    x = xv.reshape((-1,) + tuple(shape)).astype(np.float32)
    inp = mf.quantize_input(x, info["input"]["scale"], info["input"]["zero_point"])
    outs, _ = mf.tflm_run(tfl, inp, warmup=0)
    return float(np.mean(np.argmax(outs.reshape(len(outs), -1), axis=1) == yv)), info


def weight_granularity(info):
    return sorted({(l["op"], l["weights"]) for l in info["layers"] if "weights" in l})


def file_meta(tfl, acc, info):
    return {
        "bytes": len(tfl),
        "sha256": hashlib.sha256(tfl).hexdigest(),
        "tflm_accuracy": round(acc, 4),
        "ops": info["ops"],
        "weights": [f"{op}:{g}" for op, g in weight_granularity(info)],
    }


def diff_stats(a, b):
    d = {"same_size": len(a) == len(b)}
    if len(a) == len(b):
        x = np.frombuffer(a, np.uint8)
        y = np.frombuffer(b, np.uint8)
        d["bytes_differing_at_equal_offsets"] = round(float(np.mean(x != y)), 4)
    else:
        d["bytes_differing_at_equal_offsets"] = None
    return d


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--families", nargs="*", choices=sorted(FAMILIES), help="only rebuild these families")
    args = ap.parse_args()
    names = args.families or list(FAMILIES)

    index_path = os.path.join(PAIRS_DIR, "index.json")
    index = {"pairs": []}
    if args.families and os.path.exists(index_path):
        with open(index_path) as f:
            index = json.load(f)
    keep = [p for p in index["pairs"] if p["family"] not in names]

    new_entries = []
    for name in names:
        fam = FAMILIES[name]
        old_tfl, (xv, yv), variants = build_family(name, fam)
        old_acc, old_info = tflm_accuracy(old_tfl, fam["shape"], xv, yv)
        fam_dir = os.path.join(PAIRS_DIR, name)
        if os.path.isdir(fam_dir):
            shutil.rmtree(fam_dir)
        for var, (new_tfl, kw) in variants.items():
            new_acc, new_info = tflm_accuracy(new_tfl, fam["shape"], xv, yv)
            d = os.path.join(fam_dir, var)
            os.makedirs(d)
            with open(os.path.join(d, "old.tflite"), "wb") as f:
                f.write(old_tfl)
            with open(os.path.join(d, "new.tflite"), "wb") as f:
                f.write(new_tfl)
            entry = {
                "pair": f"{name}/{var}",
                "family": name,
                "variant": var,
                "finetune": VARIANTS[var]["finetune"],
                "description": VARIANTS[var]["desc"].format(**kw),
                "accuracy_labels": fam["labels"],
                "old": file_meta(old_tfl, old_acc, old_info),
                "new": file_meta(new_tfl, new_acc, new_info),
            }
            entry.update(diff_stats(old_tfl, new_tfl))
            new_entries.append(entry)
            print(f"  {name}/{var}: old {len(old_tfl)} B acc {old_acc:.3f} -> new {len(new_tfl)} B "
                  f"acc {new_acc:.3f} diff@eq {entry['bytes_differing_at_equal_offsets']}", flush=True)

    order = {n: i for i, n in enumerate(FAMILIES)}
    vorder = {v: i for i, v in enumerate(VARIANTS)}
    pairs = sorted(keep + new_entries, key=lambda p: (order[p["family"]], vorder[p["variant"]]))
    index = {
        "generator": "agent/delta/bench/make_pairs.py",
        "tensorflow": mf.TF_VERSION,
        "tflite_micro": mf.TFLM_VERSION,
        "conversion": "full-integer (TFLITE_BUILTINS_INT8, int8 input/output, batch 1), "
                      "make_fixtures.convert",
        "headline_finetune_pairs": [p["pair"] for p in pairs if p["finetune"]],
        "pairs": pairs,
    }
    os.makedirs(PAIRS_DIR, exist_ok=True)
    with open(index_path, "w") as f:
        json.dump(index, f, indent=1)
        f.write("\n")
    total = sum(os.path.getsize(os.path.join(dp, fn)) for dp, _, fns in os.walk(PAIRS_DIR) for fn in fns)
    print(f"wrote {len(pairs)} pairs to {PAIRS_DIR} ({total} bytes in total)")


if __name__ == "__main__":
    main()
