"""Seeds derived from a federation seed, so every peer draws the same numbers without talking."""

from __future__ import annotations

import hashlib


def derive_seed(federation_seed: int, *labels: object) -> int:
    """A 63-bit seed from the federation seed and labels such as ``("block", 3)``.

    Hashing (rather than adding offsets) keeps seeds for different labels independent and stable when
    new labels are introduced.
    """
    text = ":".join([str(federation_seed), *(str(label) for label in labels)])
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big") >> 1
