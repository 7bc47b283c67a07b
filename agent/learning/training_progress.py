"""Local training that can stop between optimizer steps and continue later with bit-identical results.

A device is stopped (``systemctl stop``, an upgrade, a power cut) in the middle of local training far more
often than a server is. Retraining the round from scratch would waste minutes of an edge CPU, so
:func:`agent.learning.training.train_client` checks :class:`TrainingHooks` after every optimizer step and
can hand back a :class:`TrainingProgress`: everything that determines the rest of the run (model and
optimizer state, the epoch's sample order, where in it training stands, both random generators, the losses
so far). Continuing from it produces the same update bytes as an uninterrupted run, so a restarted peer
submits exactly what it would have submitted anyway and the federation's determinism is untouched.

Progress is serialized with ``torch.save`` (optimizer state is nested and not a flat tensor map, so
safetensors does not fit) and loaded with ``weights_only=True``, which refuses anything but tensors and
plain containers: a progress file can never execute code. It only ever comes from this device's own state
directory.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any

import torch

from agent.errors import LayerfedError

FORMAT_VERSION = 1


class TrainingInterrupted(Exception):  # noqa: N818 - a signal to the caller, not a failure
    """Raised by ``train_client`` when :attr:`TrainingHooks.should_stop` says so; carries the progress.

    Not a :class:`LayerfedError`: it never reaches the CLI, because only a caller that passed
    ``should_stop`` can receive it, and that caller saves :attr:`progress` and stops.
    """

    def __init__(self, progress: TrainingProgress) -> None:
        super().__init__(f"training stopped after step {progress.steps_done}")
        self.progress = progress


class TrainingProgressError(LayerfedError):
    """A progress file is unreadable or belongs to another training run (the caller starts afresh)."""


def _never() -> bool:
    return False


@dataclass(frozen=True)
class TrainingHooks:
    """What a caller of ``train_client`` may ask for between optimizer steps; the default asks nothing.

    ``resume_from``: continue this progress instead of starting at step 0.
    ``should_stop``: checked after every step; True makes ``train_client`` raise :class:`TrainingInterrupted`.
    ``should_save`` / ``save``: checked after every step; True hands the progress to ``save`` (periodic
    checkpoints, so that a power cut, which gives no warning, loses at most the time since the last one).

    After a resume, the result's ``metrics.seconds`` counts the resumed part only; its loss, steps and
    FLOPs cover the whole run, as if it had never stopped.
    """

    resume_from: TrainingProgress | None = None
    should_stop: Callable[[], bool] = _never
    should_save: Callable[[], bool] = _never
    save: Callable[[TrainingProgress], None] | None = None


@dataclass(frozen=True)
class TrainingProgress:
    """Local training after a completed optimizer step: enough to continue it bit-exactly."""

    run_fingerprint: str  # which training run this belongs to (see :func:`run_fingerprint`)
    epoch: int  # the epoch in progress, 0-based
    next_batch_start: int  # index into ``order`` of the next batch to train on
    order: torch.Tensor  # the epoch's sample order (drawn at its start)
    model_state: dict[str, torch.Tensor]  # every parameter and buffer of the model
    optimizer_state: dict[str, Any]  # ``optimizer.state_dict()``
    generator_state: torch.Tensor  # the shuffling generator, after this epoch's order was drawn
    random_state: torch.Tensor  # torch's global CPU generator (augmentations)
    losses: tuple[float, ...]  # one per completed step
    samples_seen: int
    flops_per_sample: float

    @property
    def steps_done(self) -> int:
        return len(self.losses)

    def to_bytes(self) -> bytes:
        values = {field.name: getattr(self, field.name) for field in fields(self)}
        values["losses"] = list(self.losses)
        values["format_version"] = FORMAT_VERSION
        buffer = io.BytesIO()
        torch.save(values, buffer)
        return buffer.getvalue()

    @classmethod
    def from_bytes(cls, payload: bytes) -> TrainingProgress:
        """Inverse of :meth:`to_bytes`; raises TrainingProgressError for anything else."""
        try:
            values = torch.load(io.BytesIO(payload), weights_only=True)
        except Exception as error:  # damaged bytes make torch.load raise almost any type (IndexError...)
            raise TrainingProgressError(f"not a training progress file: {error!r}") from error
        if not isinstance(values, dict) or values.pop("format_version", None) != FORMAT_VERSION:
            raise TrainingProgressError("training progress of an unknown format version")
        try:
            values["losses"] = tuple(float(loss) for loss in values["losses"])
            return cls(**values)
        except (KeyError, TypeError) as error:
            raise TrainingProgressError(f"training progress is incomplete: {error}") from error


def run_fingerprint(config_digest: bytes, stage: int, seed: int, images: torch.Tensor) -> str:
    """Names one training run: the recipe, the stage, the seed and the images (shape and bytes).

    The base model is not hashed here: the engine keys progress by the base model's CID. The images are,
    because an operator may add or remove some between a stop and a restart, and progress made on other
    data would silently produce an update nobody could reproduce.
    """
    digest = hashlib.sha256(f"{config_digest.hex()}:{stage}:{seed}:{tuple(images.shape)}:".encode())
    digest.update(images.contiguous().numpy().data)
    return digest.hexdigest()
