"""The seed of this device's privacy noise: secret to the device, the same after every restart.

Differential privacy protects an update only while nobody else can recompute its noise: whoever knows the
seed subtracts the noise and reads the clipped delta. So the seed cannot come from the federation seed or
an address, which every peer knows. It is derived from a signature by the device's own key over a text
naming the federation, the round, the stage and the base model: nobody without the key can produce it,
and because Ethereum signatures are deterministic (RFC 6979 nonces, as ``eth_account`` makes them), a
device that stops mid-round and restarts derives the same seed and pins the same update bytes, which
its checkpoint and the chain already expect. The signature never leaves the device.
"""

from __future__ import annotations

import hashlib

from agent.ports.identity import Signer

NOISE_SEED_LABEL = "layerfed privacy noise seed v1"


def noise_seed_text(federation_id: str, round_number: int, stage: int, base_model_cid: str) -> bytes:
    """What the device signs to derive its noise seed: no protocol message looks like it."""
    return (
        f"{NOISE_SEED_LABEL}\nfederation {federation_id}\nround {round_number}\nstage {stage}\n"
        f"base model {base_model_cid}\n"
    ).encode()


def noise_seed(signer: Signer, federation_id: str, round_number: int, stage: int, base_model_cid: str) -> int:
    """A 63-bit generator seed from the device's signature over :func:`noise_seed_text`."""
    signature = signer.sign(noise_seed_text(federation_id, round_number, stage, base_model_cid))
    return int.from_bytes(hashlib.sha256(signature.encode()).digest()[:8], "big") >> 1
