"""Encoding one delta tensor compactly, and decoding it the same way, bit for bit, on every peer.

Encoding runs on the sending device only, so it may use any torch operation; decoding runs on every peer
before the merge and must give identical float32 values everywhere, so each decoder is a single
element-wise IEEE operation (a float16 -> float32 conversion, one float32 multiply, a scatter of exact
values into zeros), never a reduction. Decoders trust nothing: every malformed field raises
UpdateRejectedError with the tensor's name.

The shapes come from the receiver's own model (``reference``), never from the payload: a peer cannot make
another allocate a tensor larger than the model's.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch

from agent.errors import UpdateRejectedError

SCALE_SUFFIX = "#scale"
INDICES_SUFFIX = "#indices"
VALUES_SUFFIX = "#values"
INT8_LIMIT = 127
FLOAT16_MAXIMUM = float(torch.finfo(torch.float16).max)

Tensors = dict[str, torch.Tensor]


def encode_fp16(name: str, delta: torch.Tensor) -> Tensors:
    """float16, saturating at its largest finite value (a delta beyond 65504 would decode as infinity)."""
    return {name: delta.clamp(-FLOAT16_MAXIMUM, FLOAT16_MAXIMUM).to(torch.float16)}


def decode_fp16(name: str, tensors: Mapping[str, torch.Tensor], shape: torch.Size) -> torch.Tensor:
    value = _take(tensors, name, torch.float16, shape)
    return value.to(torch.float32)


def int8_rows(shape: torch.Size) -> int:
    """How many scales a tensor of ``shape`` has: one per row of dimension 0, one for a 1-D tensor."""
    return shape[0] if len(shape) >= 2 else 1


def encode_int8(name: str, delta: torch.Tensor) -> Tensors:
    """Symmetric per-channel int8: ``scale = max|row| / 127``, ``q = round_half_even(x / scale)``.

    A row of zeros has scale 0 and decodes to zeros. Values lie in [-127, 127], so -128 never occurs and
    the decoder refuses it.
    """
    rows = int8_rows(delta.shape)
    flat = delta.reshape(rows, -1)
    scale = flat.abs().amax(dim=1) / INT8_LIMIT
    safe = torch.where(scale > 0, scale, torch.ones_like(scale))
    quantised = torch.round(flat / safe.unsqueeze(1)).clamp(-INT8_LIMIT, INT8_LIMIT)  # half to even
    return {
        name: quantised.to(torch.int8).reshape(delta.shape),
        name + SCALE_SUFFIX: scale.to(torch.float32).contiguous(),
    }


def decode_int8(name: str, tensors: Mapping[str, torch.Tensor], shape: torch.Size) -> torch.Tensor:
    quantised = _take(tensors, name, torch.int8, shape)
    rows = int8_rows(shape)
    scale = _take(tensors, name + SCALE_SUFFIX, torch.float32, torch.Size([rows]))
    if not bool(torch.isfinite(scale).all()) or bool((scale < 0).any()):
        raise UpdateRejectedError(f"tensor {name!r} has a negative or non-finite int8 scale")
    if bool((quantised == -INT8_LIMIT - 1).any()):
        raise UpdateRejectedError(f"tensor {name!r} holds -128, outside the symmetric int8 range")
    return (quantised.reshape(rows, -1).to(torch.float32) * scale.unsqueeze(1)).reshape(shape)


def topk_count(numel: int, fraction: float) -> int:
    """Entries a top-k update keeps of a tensor: ``ceil(fraction * numel)``, at least one, at most all."""
    return min(numel, max(1, math.ceil(fraction * numel)))


def encode_topk(name: str, delta: torch.Tensor, fraction: float) -> Tensors:
    """The largest-magnitude entries, ties to the lower index (a stable sort), indices ascending."""
    flat = delta.reshape(-1)
    count = topk_count(flat.numel(), fraction)
    order = torch.argsort(flat.abs(), descending=True, stable=True)[:count]
    indices = torch.sort(order).values
    return {
        name + INDICES_SUFFIX: indices.to(torch.int32),
        name + VALUES_SUFFIX: flat[indices].to(torch.float32).contiguous(),
    }


def decode_topk(
    name: str, tensors: Mapping[str, torch.Tensor], shape: torch.Size, fraction: float
) -> torch.Tensor:
    numel = math.prod(shape)
    count = topk_count(numel, fraction)
    indices = _take(tensors, name + INDICES_SUFFIX, torch.int32, torch.Size([count]))
    values = _take(tensors, name + VALUES_SUFFIX, torch.float32, torch.Size([count]))
    as_long = indices.to(torch.int64)
    if bool((as_long < 0).any()) or bool((as_long >= numel).any()):
        raise UpdateRejectedError(f"tensor {name!r} has top-k indices outside 0..{numel - 1}")
    if count > 1 and not bool((as_long[1:] > as_long[:-1]).all()):
        raise UpdateRejectedError(f"tensor {name!r} has top-k indices that are not strictly ascending")
    dense = torch.zeros(numel, dtype=torch.float32)
    dense[as_long] = values  # distinct indices: each position written once, so the order cannot matter
    return dense.reshape(shape)


def encoded_names(name: str, method: str) -> tuple[str, ...]:
    """The payload entries that carry tensor ``name`` under ``method``."""
    if method == "int8":
        return (name, name + SCALE_SUFFIX)
    if method == "topk":
        return (name + INDICES_SUFFIX, name + VALUES_SUFFIX)
    return (name,)


def _take(
    tensors: Mapping[str, torch.Tensor], key: str, dtype: torch.dtype, shape: torch.Size
) -> torch.Tensor:
    if key not in tensors:
        raise UpdateRejectedError(f"compressed update lacks {key!r}")
    value = tensors[key]
    if value.dtype != dtype or value.shape != shape:
        raise UpdateRejectedError(
            f"{key!r} is {value.dtype} {tuple(value.shape)}, expected {dtype} {tuple(shape)}"
        )
    return value
