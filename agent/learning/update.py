"""A client's update: the change it made to the tensors its mode exchanges, and how to check one.

An update carries deltas (trained minus global) rather than weights so that merging is a weighted sum
that leaves untouched tensors bit-identical, and so that a zero delta costs nothing to reason about.
Every update that arrives from a peer is validated against the local model before it is merged: exactly
the expected tensor names, the same shapes, float32, finite values, a positive sample count.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch

from agent.errors import UpdateRejectedError
from agent.learning.model_state import ModelState, decode_tensors, encode_tensors
from agent.learning.modes import TrainingMode, exchanged_prefixes, is_exchanged

UPDATE_FORMAT = "layerfed-update/1"
MAXIMUM_SAMPLES = 10**9


@dataclass(frozen=True)
class ModelUpdate:
    """Deltas of the exchanged tensors, and the number of samples they were trained on."""

    mode: TrainingMode
    stage: int
    samples: int
    deltas: ModelState

    def to_bytes(self) -> bytes:
        metadata = {
            "format": UPDATE_FORMAT,
            "mode": self.mode.value,
            "stage": str(self.stage),
            "samples": str(self.samples),
        }
        return encode_tensors(self.deltas, metadata)

    @classmethod
    def from_bytes(cls, payload: bytes) -> ModelUpdate:
        tensors, metadata = decode_tensors(payload)
        if metadata.get("format") != UPDATE_FORMAT:
            raise UpdateRejectedError(
                f"update format is {metadata.get('format')!r}, expected {UPDATE_FORMAT}"
            )
        mode, stage, samples = read_header(metadata)
        return cls(mode=mode, stage=stage, samples=samples, deltas=tensors)


def read_header(metadata: Mapping[str, str]) -> tuple[TrainingMode, int, int]:
    """Mode, stage and claimed samples of a payload's metadata (plain or compressed update)."""
    try:
        return TrainingMode(metadata["mode"]), int(metadata["stage"]), int(metadata["samples"])
    except (KeyError, ValueError) as exc:
        raise UpdateRejectedError(f"update metadata is malformed: {exc}") from exc


def capped_claim(update: ModelUpdate, maximum_samples: int) -> ModelUpdate:
    """``update`` claiming at most the recipe's ``maximum_samples``.

    A device with more images than the limit would otherwise have its update rejected by every peer,
    itself included; claiming the limit keeps its work in the merge at the largest weight allowed.
    """
    if update.samples <= maximum_samples:
        return update
    return ModelUpdate(mode=update.mode, stage=update.stage, samples=maximum_samples, deltas=update.deltas)


def expected_update_names(
    reference: Mapping[str, torch.Tensor], mode: TrainingMode, stage: int, stages: int
) -> list[str]:
    """Names of the tensors an update for ``stage`` must hold, in sorted order."""
    prefixes = exchanged_prefixes(mode, stage, stages)
    return [name for name in sorted(reference) if is_exchanged(name, prefixes)]


def validate_update(
    update: ModelUpdate,
    reference: Mapping[str, torch.Tensor],
    mode: TrainingMode,
    stage: int,
    stages: int,
    maximum_samples: int = MAXIMUM_SAMPLES,
) -> None:
    """Raise UpdateRejectedError unless ``update`` is exactly what ``mode`` exchanges at ``stage`` and
    claims between 1 and ``maximum_samples`` (the recipe's limit) samples."""
    if update.mode is not mode or update.stage != stage:
        raise UpdateRejectedError(
            f"update is for mode {update.mode.value} stage {update.stage}, "
            f"expected {mode.value} stage {stage}"
        )
    if not 0 < update.samples <= maximum_samples:
        raise UpdateRejectedError(f"update claims {update.samples} samples, the limit is {maximum_samples}")
    expected = expected_update_names(reference, mode, stage, stages)
    received = sorted(update.deltas)
    if received != expected:
        unexpected = sorted(set(received) - set(expected))
        missing = sorted(set(expected) - set(received))
        raise UpdateRejectedError(
            f"update tensors differ: unexpected {unexpected[:3]}, missing {missing[:3]}"
        )
    for name in expected:
        delta = update.deltas[name]
        if delta.dtype != torch.float32:
            raise UpdateRejectedError(f"tensor {name!r} has dtype {delta.dtype}, expected float32")
        if delta.shape != reference[name].shape:
            raise UpdateRejectedError(
                f"tensor {name!r} has shape {tuple(delta.shape)}, expected {tuple(reference[name].shape)}"
            )
        if not bool(torch.isfinite(delta).all()):
            raise UpdateRejectedError(f"tensor {name!r} holds NaN or infinite values")
