"""Model state as named float32 tensors, and its safetensors encoding.

A model state is what peers agree on: every floating-point parameter and buffer of the staged model
(BatchNorm running statistics included), in a fixed name order. Integer bookkeeping buffers such as
BatchNorm's ``num_batches_tracked`` are left out: they differ per peer and no computation reads them
(momentum is set).

safetensors is used for every payload because it stores raw tensors with a JSON header and can never
execute code on load, unlike pickle; its serialised size is what the benchmark counts as communication.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_tensors
from safetensors.torch import save as save_tensors
from torch import nn

from agent.errors import UpdateRejectedError

ModelState = dict[str, torch.Tensor]


def extract_state(model: nn.Module) -> ModelState:
    """Detached float32 copies of the model's floating-point tensors, in sorted name order."""
    state = model.state_dict()
    return {
        name: tensor.detach().to(torch.float32).clone()
        for name, tensor in sorted(state.items())
        if tensor.is_floating_point()
    }


def load_state(model: nn.Module, state: Mapping[str, torch.Tensor]) -> None:
    """Copy ``state`` into the model; every floating-point tensor of the model must be present."""
    own = {name for name, tensor in model.state_dict().items() if tensor.is_floating_point()}
    missing = sorted(own - set(state))
    if missing:
        raise UpdateRejectedError(f"model state lacks {len(missing)} tensors, first {missing[0]!r}")
    model.load_state_dict(dict(state), strict=False)


METADATA_KEY = "layerfed"


def encode_tensors(tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, str] | None = None) -> bytes:
    """safetensors bytes of ``tensors``; identical input gives identical bytes.

    safetensors writes its metadata map in hash order, which changes from process to process, so our
    metadata travels as one canonical JSON string under a single key: equal content, equal bytes, equal CID.
    """
    ordered = {name: tensors[name].contiguous() for name in sorted(tensors)}
    packed = {METADATA_KEY: json.dumps(dict(metadata), sort_keys=True)} if metadata else None
    return save_tensors(ordered, metadata=packed)


def decode_tensors(payload: bytes) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Tensors and metadata from safetensors bytes; malformed bytes raise UpdateRejectedError."""
    try:
        tensors = load_tensors(payload)
        header_length = int.from_bytes(payload[:8], "little")
        header = json.loads(payload[8 : 8 + header_length])
        packed = (header.get("__metadata__") or {}).get(METADATA_KEY)
        metadata = json.loads(packed) if packed else {}
        if not isinstance(metadata, dict):
            raise ValueError("metadata is not an object")
    except (SafetensorError, ValueError, UnicodeDecodeError) as exc:
        raise UpdateRejectedError(f"payload is not valid safetensors: {exc}") from exc
    return tensors, {str(key): str(value) for key, value in metadata.items()}
