#!/usr/bin/env python3
"""Cross-checks the vectors with implementations that share no code with mota-proto.

cbor2 decodes every vector (so the bytes are standard CBOR, not something only minicbor
reads) and re-encodes it canonically (so our "canonical" is RFC 8949's core deterministic
encoding); pyca/cryptography verifies the envelope's key chain (so our signatures are
plain RFC 8032 Ed25519). Run: python3 crosscheck.py  (needs cbor2 and cryptography).
"""
import hashlib
import pathlib
import sys

import cbor2
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

HERE = pathlib.Path(__file__).parent
TAG_MANIFEST, TAG_CERT_BODY = 0x6D6F7401, 0x6D6F7402
SIGNED = {"manifest_full", "manifest_minimal", "cert_body", "certificate", "envelope"}


def read(name):
    lines = (HERE / f"{name}.hex").read_text().splitlines()
    return bytes.fromhex("".join(l for l in lines if not l.startswith("#")))


def key_id(public_key: bytes) -> bytes:
    return hashlib.sha256(public_key).digest()[:8]


def main():
    passed = failures = 0
    for path in sorted(HERE.glob("*.hex")):
        name = path.stem
        raw = read(name)
        value = cbor2.loads(raw)
        if name in SIGNED:
            again = cbor2.dumps(value, canonical=True)
            if again != raw:
                print(f"FAIL {name}: not in deterministic CBOR encoding")
                failures += 1
                continue
        print(f"ok   {name}: {len(raw)} bytes of standard CBOR")
        passed += 1

    envelope = cbor2.loads(read("envelope"))
    manifest_bytes, signing_key_id, signature, cert = envelope[0], envelope[1], envelope[2], envelope[3]
    manifest = cbor2.loads(manifest_bytes)
    body = cbor2.loads(cert[0])
    assert manifest.tag == TAG_MANIFEST and body.tag == TAG_CERT_BODY, "tags"
    root = Ed25519PrivateKey.from_private_bytes(bytes([0x11] * 32)).public_key()
    root_raw = root.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    assert cert[1] == key_id(root_raw), "issuer is the root's key id"
    root.verify(cert[2], cert[0])
    release_raw = body.value[2]
    assert body.value[1] == key_id(release_raw) == signing_key_id, "key ids"
    Ed25519PublicKey.from_public_bytes(release_raw).verify(signature, manifest_bytes)
    assert manifest.value[3] == 7 and manifest.value[4] == "stm32f4-kws", "manifest fields"
    print("ok   envelope: key chain and signature verify with pyca/cryptography")
    passed += 1
    print(f"crosscheck: {passed} passed, {failures} failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
