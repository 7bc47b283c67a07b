"""The batch schedule of one client's local training: the loop every training backend drives.

Which images a step trains on, in which order, with which augmentations, and where training may stop and
resume, must not depend on the backend: the parity of ``torch`` and ``ort`` and the bit-exact resume of a
stopped round both rest on it. So the loop lives here once, and a backend only supplies what differs: how
to train one batch, and how to capture its own model and optimizer state for a progress file.

Per epoch, the sample order is drawn from a generator seeded with the round's ``seed``; the augmentations
draw from torch's global generator, also seeded with ``seed`` inside
:func:`models.seeding.seeded_global_generator`, so that the caller's random state is left untouched. That
generator is one per process: clients that train in threads of one process (the demo's peers) take turns
there, or their draws would interleave and two runs of the same federation would train different models.
A batch of one image
is skipped (NT-Xent needs a negative). After every optimizer step the hooks are asked whether to stop or
save, and the progress handed out then holds everything needed to continue exactly (see
:mod:`agent.learning.training_progress`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from agent.learning.training_progress import (
    TrainingHooks,
    TrainingInterrupted,
    TrainingProgress,
    TrainingProgressError,
)
from models.seeding import seeded_global_generator

# Trains one optimizer step on a batch of uint8 images; with ``count_flops`` it also returns the step's
# FLOPs per image (0.0 otherwise). Returns (loss, FLOPs per image).
BatchStep = Callable[[torch.Tensor, bool], tuple[float, float]]
# The backend's model and optimizer state, for a progress file: (model_state, optimizer_state).
StateSnapshot = Callable[[], tuple[dict[str, torch.Tensor], dict[str, Any]]]


@dataclass(frozen=True)
class LocalTraining:
    """What the loop did: one loss per optimizer step, images trained on, FLOPs per image of a step."""

    losses: tuple[float, ...]
    samples_seen: int
    flops_per_sample: float


def resume_point(hooks: TrainingHooks, fingerprint: str) -> TrainingProgress | None:
    """The progress to continue from, or None to start at step 0.

    Raises TrainingProgressError when the progress belongs to another run (backend, recipe, stage, seed
    or data), so that the caller discards it and trains the round from the start.
    """
    resumed = hooks.resume_from
    if resumed is not None and resumed.run_fingerprint != fingerprint:
        raise TrainingProgressError(
            "the progress belongs to another run (backend, recipe, stage, seed or data)"
        )
    return resumed


def run_local_epochs(
    images: torch.Tensor,
    local_epochs: int,
    batch_size: int,
    seed: int,
    step: BatchStep,
    snapshot: StateSnapshot,
    hooks: TrainingHooks,
    fingerprint: str,
) -> LocalTraining:
    """Drive ``step`` over ``local_epochs`` epochs of ``images``, from the start or from the hooks'
    progress (already checked with :func:`resume_point` and loaded into the backend's state).

    Raises :class:`TrainingInterrupted` when ``hooks.should_stop`` says so after a step.
    """
    generator = torch.Generator().manual_seed(seed)
    resumed = hooks.resume_from
    losses: list[float] = []
    samples_seen = 0
    flops_per_sample = 0.0
    if resumed is not None:
        generator.set_state(resumed.generator_state)
        losses, samples_seen = list(resumed.losses), resumed.samples_seen
        flops_per_sample = resumed.flops_per_sample
    with seeded_global_generator(seed):
        if resumed is not None:
            torch.set_rng_state(resumed.random_state)
        for epoch in range(resumed.epoch if resumed else 0, local_epochs):
            if resumed is not None and epoch == resumed.epoch:
                order, first_start = resumed.order, resumed.next_batch_start
            else:
                order, first_start = torch.randperm(len(images), generator=generator), 0
            for start in range(first_start, len(images), batch_size):
                batch = images[order[start : start + batch_size]]
                if len(batch) < 2:
                    continue
                count_flops = flops_per_sample == 0.0
                loss, counted = step(batch, count_flops)
                if count_flops:
                    flops_per_sample = counted
                losses.append(loss)
                samples_seen += len(batch)
                stop = hooks.should_stop()
                if stop or (hooks.save is not None and hooks.should_save()):
                    model_state, optimizer_state = snapshot()
                    progress = TrainingProgress(
                        run_fingerprint=fingerprint,
                        epoch=epoch,
                        next_batch_start=start + batch_size,
                        order=order,
                        model_state=model_state,
                        optimizer_state=optimizer_state,
                        generator_state=generator.get_state(),
                        random_state=torch.get_rng_state(),
                        losses=tuple(losses),
                        samples_seen=samples_seen,
                        flops_per_sample=flops_per_sample,
                    )
                    if stop:
                        raise TrainingInterrupted(progress)
                    if hooks.save is not None:
                        hooks.save(progress)
    return LocalTraining(losses=tuple(losses), samples_seen=samples_seen, flops_per_sample=flops_per_sample)
