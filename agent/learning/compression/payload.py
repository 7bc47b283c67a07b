"""A whole update compressed for the wire, and decoded back into a float32 :class:`ModelUpdate`.

The device runs :func:`compress_update` last, after every other step that changes its delta (the norm
or noise steps of the recipe), just before the bytes are pinned; every receiver runs
:func:`decompress_update` first, and then validates and merges the decoded update exactly as an
uncompressed one. With ``method == "none"`` the payload is ``update.to_bytes()``, byte for byte the
format from before compression existed.

Compressed payloads are safetensors (:func:`agent.learning.model_state.encode_tensors`) with their own
format name, the compression method, and the update's mode, stage and claimed samples; each tensor is
carried by the entries :func:`agent.learning.compression.codecs.encoded_names` lists.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch

from agent.errors import UpdateRejectedError
from agent.learning.compression import codecs
from agent.learning.compression.config import CompressionConfig
from agent.learning.compression.error_feedback import Residual, corrected_deltas, next_residual
from agent.learning.model_state import decode_tensors, encode_tensors
from agent.learning.update import ModelUpdate, read_header

COMPRESSED_FORMAT = "layerfed-compressed-update/1"


@dataclass(frozen=True)
class CompressedUpdate:
    """What a device uploads (``payload``), what every peer will decode from it (``decoded``), and what it
    keeps for its next update (``residual``: empty unless the recipe keeps one)."""

    payload: bytes
    decoded: ModelUpdate
    residual: Residual


def compress_update(
    update: ModelUpdate, config: CompressionConfig, residual: Mapping[str, torch.Tensor] | None = None
) -> CompressedUpdate:
    """``update`` encoded as ``config`` says; ``residual`` is what earlier rounds left unsent (top-k with
    error feedback only; tensors the update does not hold, or of another shape, are dropped)."""
    if config.method == "none":
        return CompressedUpdate(update.to_bytes(), update, {})
    deltas = corrected_deltas(update.deltas, residual or {}) if config.keeps_residual else update.deltas
    tensors: dict[str, torch.Tensor] = {}
    for name in sorted(deltas):
        delta = deltas[name].detach().to(torch.float32)
        if config.method == "fp16":
            tensors.update(codecs.encode_fp16(name, delta))
        elif config.method == "int8":
            tensors.update(codecs.encode_int8(name, delta))
        else:
            tensors.update(codecs.encode_topk(name, delta, config.topk_fraction))
    metadata = {
        "format": COMPRESSED_FORMAT,
        "compression": config.method,
        "mode": update.mode.value,
        "stage": str(update.stage),
        "samples": str(update.samples),
    }
    payload = encode_tensors(tensors, metadata)
    shapes = {name: delta.shape for name, delta in deltas.items()}
    decoded = ModelUpdate(update.mode, update.stage, update.samples, _decode(tensors, config, shapes))
    residual_after = next_residual(deltas, decoded.deltas) if config.keeps_residual else {}
    return CompressedUpdate(payload, decoded, residual_after)


def decompress_update(
    payload: bytes, config: CompressionConfig, reference: Mapping[str, torch.Tensor]
) -> ModelUpdate:
    """The float32 update behind ``payload``, compressed as the recipe's ``config`` says.

    ``reference`` is the receiver's model: it gives every tensor's shape, and a tensor it does not hold is
    refused. Anything malformed (another format or method, missing or extra entries, wrong dtypes or
    shapes, bad scales or indices) raises UpdateRejectedError; validate the result as any update.
    """
    if config.method == "none":
        return ModelUpdate.from_bytes(payload)
    tensors, metadata = decode_tensors(payload)
    if metadata.get("format") != COMPRESSED_FORMAT:
        raise UpdateRejectedError(
            f"update format is {metadata.get('format')!r}, the recipe expects {COMPRESSED_FORMAT}"
        )
    if metadata.get("compression") != config.method:
        raise UpdateRejectedError(
            f"update is compressed with {metadata.get('compression')!r}, the recipe says {config.method}"
        )
    mode, stage, samples = read_header(metadata)
    names = sorted(_carried_names(tensors, config.method))
    unknown = [name for name in names if name not in reference]
    if unknown:
        raise UpdateRejectedError(f"compressed update holds tensors the model lacks: {unknown[:3]}")
    expected_entries = {entry for name in names for entry in codecs.encoded_names(name, config.method)}
    extra = sorted(set(tensors) - expected_entries)
    if extra:
        raise UpdateRejectedError(f"compressed update holds unexpected entries: {extra[:3]}")
    shapes = {name: reference[name].shape for name in names}
    return ModelUpdate(mode=mode, stage=stage, samples=samples, deltas=_decode(tensors, config, shapes))


def _carried_names(tensors: Mapping[str, torch.Tensor], method: str) -> set[str]:
    """The model tensor names a payload's entries stand for (the entry that names each one)."""
    if method == "topk":
        return {
            key.removesuffix(codecs.INDICES_SUFFIX) for key in tensors if key.endswith(codecs.INDICES_SUFFIX)
        }
    return {key for key in tensors if "#" not in key}


def _decode(
    tensors: Mapping[str, torch.Tensor], config: CompressionConfig, shapes: Mapping[str, torch.Size]
) -> dict[str, torch.Tensor]:
    decoded: dict[str, torch.Tensor] = {}
    for name in sorted(shapes):
        if config.method == "fp16":
            decoded[name] = codecs.decode_fp16(name, tensors, shapes[name])
        elif config.method == "int8":
            decoded[name] = codecs.decode_int8(name, tensors, shapes[name])
        else:
            decoded[name] = codecs.decode_topk(name, tensors, shapes[name], config.topk_fraction)
    return decoded
