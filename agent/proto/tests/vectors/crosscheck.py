#!/usr/bin/env python3
"""Cross-checks the vectors with implementations that share no code with mota-proto.

cbor2 decodes every vector (so the bytes are standard CBOR, not something only mota-proto
reads) and re-encodes it canonically (so our "canonical" is RFC 8949's core deterministic
encoding); pyca/cryptography verifies the key chains of the offer and the command
envelopes and the root's signature over the revocation list (so our signatures are plain
RFC 8032 Ed25519), and the fields that bound a key's reach are read back. Run: python3 crosscheck.py  (needs cbor2 and cryptography).
"""
import hashlib
import pathlib
import sys

import cbor2
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

HERE = pathlib.Path(__file__).parent
TAG_MANIFEST, TAG_CERT_BODY, TAG_COMMAND, TAG_REVOCATION = 0x6D6F7401, 0x6D6F7402, 0x6D6F7403, 0x6D6F7404
SIGNED = {
    "manifest_full", "manifest_minimal", "cert_body", "certificate", "envelope",
    "command_rollback", "command_cancel", "cmd_rollback", "revocation_body", "revocation",
}


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

    root = Ed25519PrivateKey.from_private_bytes(bytes([0x11] * 32)).public_key()
    root_raw = root.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)

    def open_envelope(name, tag):
        envelope = cbor2.loads(read(name))
        signed, signing_key_id, signature, cert = envelope[0], envelope[1], envelope[2], envelope[3]
        inner = cbor2.loads(signed)
        body = cbor2.loads(cert[0])
        assert inner.tag == tag and body.tag == TAG_CERT_BODY, f"{name}: tags"
        assert cert[1] == key_id(root_raw), f"{name}: issuer is the root's key id"
        root.verify(cert[2], cert[0])
        release_raw = body.value[2]
        assert body.value[1] == key_id(release_raw) == signing_key_id, f"{name}: key ids"
        assert (body.value[4], body.value[5]) == (1, 99), f"{name}: certified counter range"
        Ed25519PublicKey.from_public_bytes(release_raw).verify(signature, signed)
        return inner.value, release_raw

    manifest, release_raw = open_envelope("envelope", TAG_MANIFEST)
    assert manifest[3] == 7 and manifest[4] == "stm32f4-kws", "manifest fields"
    print("ok   envelope: key chain and signature verify with pyca/cryptography")
    command, _ = open_envelope("cmd_rollback", TAG_COMMAND)
    assert command[1] == "kws-0042" and command[2] == 42 and command[3] == 0, "command fields"
    assert command[4] == bytes([0xE5] * 32) and command[5] == {0: bytes([0xB2] * 32), 1: bytes([0xF6] * 32)}
    print("ok   cmd_rollback: key chain and signature verify with pyca/cryptography")
    revocation = cbor2.loads(read("revocation"))
    body = cbor2.loads(revocation[0])
    assert body.tag == TAG_REVOCATION and revocation[1] == key_id(root_raw), "revocation: tag and issuer"
    root.verify(revocation[2], revocation[0])
    assert body.value[1] == 2 and body.value[2] == key_id(release_raw) + bytes([0x99] * 8), "revocation fields"
    print("ok   revocation: root signature verifies with pyca/cryptography")
    passed += 3
    print(f"crosscheck: {passed} passed, {failures} failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
