"""Seeds derived from a federation seed, so every peer draws the same numbers without talking."""

from __future__ import annotations

import contextlib
import hashlib
import threading
from collections.abc import Iterator

import torch

GLOBAL_GENERATOR_LOCK = threading.RLock()
"""Held by whoever seeds and draws from torch's global generator, which is one per process.

Peers that run as threads of one process (the demo, the tests) would otherwise interleave their draws,
or restore the generator under each other's feet (``fork_rng`` saves and restores process-wide state),
and two runs of the same federation would train different models. Re-entrant: local training holds it
and may build a model, which takes it too.
"""


@contextlib.contextmanager
def seeded_global_generator(seed: int) -> Iterator[None]:
    """Seed torch's global generator with ``seed`` for the block, alone, and restore it afterwards."""
    with GLOBAL_GENERATOR_LOCK, torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def derive_seed(federation_seed: int, *labels: object) -> int:
    """A 63-bit seed from the federation seed and labels such as ``("block", 3)``.

    Hashing (rather than adding offsets) keeps seeds for different labels independent and stable when
    new labels are introduced.
    """
    text = ":".join([str(federation_seed), *(str(label) for label in labels)])
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big") >> 1
