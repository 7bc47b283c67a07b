"""The file a model travels in: its tensors plus the training recipe that produced it.

The genesis model carries the federation's whole recipe (encoder spec, mode, hyperparameters, seed) in
its metadata, and the recipe's digest is recorded on the coordinator contract. A device that joins needs
only the contract's address: it fetches the genesis model, checks the recipe against the digest on
chain, and can then build, train and validate everything else itself.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

import torch

from agent.errors import ConfigurationError, UpdateRejectedError
from agent.learning.model_state import ModelState, decode_tensors, encode_tensors
from agent.learning.training import TrainingConfig

MODEL_FORMAT = "layerfed-model/1"


def encode_model(state: Mapping[str, torch.Tensor], config: TrainingConfig) -> bytes:
    """Deterministic bytes of a model state with its recipe: equal models get equal CIDs."""
    metadata = {"format": MODEL_FORMAT, "training_config": json.dumps(config.to_dict(), sort_keys=True)}
    return encode_tensors(state, metadata)


def decode_model(payload: bytes) -> tuple[ModelState, TrainingConfig]:
    """Tensors and recipe from model bytes; UpdateRejectedError for anything that is not a model file."""
    tensors, metadata = decode_tensors(payload)
    if metadata.get("format") != MODEL_FORMAT:
        raise UpdateRejectedError(f"model format is {metadata.get('format')!r}, expected {MODEL_FORMAT}")
    try:
        config = TrainingConfig.from_dict(json.loads(metadata["training_config"]))
    except (KeyError, ValueError, ConfigurationError) as exc:
        raise UpdateRejectedError(f"model file carries no usable training config: {exc}") from exc
    return tensors, config


def validate_model(state: Mapping[str, torch.Tensor], reference: Mapping[str, torch.Tensor]) -> None:
    """Raise UpdateRejectedError unless ``state`` has the reference's names, shapes, dtype, finite values."""
    if sorted(state) != sorted(reference):
        difference = sorted(set(state) ^ set(reference))
        raise UpdateRejectedError(f"model tensors differ from the recipe's model: {difference[:3]}")
    for name, tensor in state.items():
        if tensor.dtype != torch.float32 or tensor.shape != reference[name].shape:
            raise UpdateRejectedError(f"model tensor {name!r} is {tensor.dtype} {tuple(tensor.shape)}")
        if not bool(torch.isfinite(tensor).all()):
            raise UpdateRejectedError(f"model tensor {name!r} holds NaN or infinite values")
