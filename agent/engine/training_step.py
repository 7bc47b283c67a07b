"""The training-step checkpoint: local training's progress within a round, kept across stops and power cuts.

``checkpoint.json`` (:mod:`agent.engine.checkpoint`) records a round's milestones once they are reached
(update pinned, model merged, attested). Training itself takes minutes on an edge device, so the engine
also keeps where it stands inside training: on SIGTERM (``systemctl stop``), and every few minutes against
power cuts, it writes ``training-step.pt`` here; a restarted agent continues from that optimizer step and
produces the same update as an uninterrupted run. The file is deleted once the update is pinned.

The file is a one-line JSON header naming the round and base model it belongs to, then the progress
bytes (:class:`agent.learning.training_progress.TrainingProgress`). It is written atomically (temporary
file, fsync, rename), so a power cut leaves the previous step checkpoint or the new one, never half of one.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from pathlib import Path

import torch

from agent.atomic_file import write_atomically
from agent.learning.backends import TrainingBackend
from agent.learning.backends.torch_backend import TorchBackend
from agent.learning.model_state import ModelState
from agent.learning.training import ClientResult, TrainingConfig
from agent.learning.training_progress import (
    TrainingHooks,
    TrainingInterrupted,
    TrainingProgress,
    TrainingProgressError,
)

logger = logging.getLogger(__name__)

TRAINING_STEP_FILE = "training-step.pt"


class TrainingStepFile:
    """Saves, loads and discards the training-step checkpoint of one state directory."""

    def __init__(self, directory: Path) -> None:
        self.path = directory / TRAINING_STEP_FILE
        directory.mkdir(parents=True, exist_ok=True)

    def save(self, round_number: int, base_model_cid: str, progress: TrainingProgress) -> None:
        header = json.dumps({"round": round_number, "base_model_cid": base_model_cid}, sort_keys=True)
        write_atomically(self.path, header.encode() + b"\n" + progress.to_bytes())

    def load(self, round_number: int, base_model_cid: str) -> TrainingProgress | None:
        """The saved progress if it belongs to this round and base model; None (and the file gone) if not.

        An unreadable file costs only retraining, never correctness, so it is logged and discarded.
        """
        try:
            payload = self.path.read_bytes()
        except FileNotFoundError:
            return None
        header, _, body = payload.partition(b"\n")
        try:
            key = json.loads(header)
            if key != {"round": round_number, "base_model_cid": base_model_cid}:
                logger.info("discarding the training-step checkpoint of another round: %s", key)
                self.discard()
                return None
            return TrainingProgress.from_bytes(body)
        except (ValueError, TrainingProgressError) as error:
            logger.warning("discarding the unreadable training-step checkpoint %s: %s", self.path, error)
            self.discard()
            return None

    def discard(self) -> None:
        self.path.unlink(missing_ok=True)


class ResumableTraining:
    """Runs the training backend for the engine so that a stop or a power cut costs at most one step.

    On stop (``should_stop`` turns true) the progress is saved and :meth:`train` returns None; every
    ``checkpoint_seconds`` (0: never) it is saved while training goes on. The next :meth:`train` of the
    same round and base model continues from the saved step. ``backend`` defaults to torch; progress
    saved by another backend (the device's backend was changed between a stop and a restart) is refused
    by the one now running, and that round is retrained from the start.
    """

    def __init__(
        self, directory: Path, checkpoint_seconds: float = 0.0, backend: TrainingBackend | None = None
    ) -> None:
        self.file = TrainingStepFile(directory)
        self.checkpoint_seconds = checkpoint_seconds
        self.backend: TrainingBackend = backend or TorchBackend()
        self._last_saved = 0.0

    def train(
        self,
        round_number: int,
        base_model_cid: str,
        base: ModelState,
        stage: int,
        images: torch.Tensor,
        config: TrainingConfig,
        seed: int,
        should_stop: Callable[[], bool],
    ) -> ClientResult | None:
        """The round's training result, or None when stopped (the step is saved for the next call)."""
        resume_from = self.file.load(round_number, base_model_cid)
        if resume_from is None:
            logger.info("round %d stage %d: training from the start", round_number, stage)
        else:
            logger.info("round %d: resuming training after step %d", round_number, resume_from.steps_done)

        def save(progress: TrainingProgress) -> None:
            self.file.save(round_number, base_model_cid, progress)
            self._last_saved = time.monotonic()

        self._last_saved = time.monotonic()
        hooks = TrainingHooks(
            resume_from=resume_from, should_stop=should_stop, should_save=self._save_due, save=save
        )
        try:
            return self.backend.train(base, stage, images, config, seed, hooks=hooks)
        except TrainingProgressError as error:
            logger.warning("round %d: %s; training from the start", round_number, error)
            self.file.discard()
            return self.train(round_number, base_model_cid, base, stage, images, config, seed, should_stop)
        except TrainingInterrupted as interruption:
            save(interruption.progress)
            logger.info(
                "round %d: training stopped after step %d, saved in %s",
                round_number,
                interruption.progress.steps_done,
                self.file.path,
            )
            return None

    def discard(self) -> None:
        """Forget the saved step: the round's update is pinned and recorded in ``checkpoint.json``."""
        self.file.discard()

    def _save_due(self) -> bool:
        return self.checkpoint_seconds > 0 and time.monotonic() - self._last_saved >= self.checkpoint_seconds
