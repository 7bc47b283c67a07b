"""Compressed update payloads: fp16, per-channel int8 and top-k with error feedback (see ``config``).

The device compresses its update last, just before pinning it (:func:`compress_update`); every peer
decodes it first, before validating and merging (:func:`decompress_update`), deterministically bit for bit.
"""

from agent.learning.compression.config import METHOD_NAMES, NO_COMPRESSION, CompressionConfig
from agent.learning.compression.payload import CompressedUpdate, compress_update, decompress_update

__all__ = [
    "METHOD_NAMES",
    "NO_COMPRESSION",
    "CompressedUpdate",
    "CompressionConfig",
    "compress_update",
    "decompress_update",
]
