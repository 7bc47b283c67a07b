"""The shared batch schedule: which batches a backend's step sees, and stopping and resuming it exactly."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch

from agent.learning.local_epochs import LocalTraining, resume_point, run_local_epochs
from agent.learning.training_progress import (
    TrainingHooks,
    TrainingInterrupted,
    TrainingProgress,
    TrainingProgressError,
)

IMAGES = torch.arange(11, dtype=torch.uint8).reshape(11, 1, 1, 1)  # image i holds the value i


class RecordingBackend:
    """A step that records its batches and one augmentation draw from torch's global generator."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []
        self.draws: list[float] = []

    def step(self, batch: torch.Tensor, count_flops: bool) -> tuple[float, float]:
        self.batches.append(batch.flatten().tolist())
        self.draws.append(float(torch.rand(())))
        return float(len(self.batches)), 10.0 if count_flops else 0.0

    def snapshot(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        return {"steps": torch.tensor(len(self.batches))}, {}


def run(backend: RecordingBackend, hooks: TrainingHooks, epochs: int = 2, batch: int = 5) -> LocalTraining:
    return run_local_epochs(IMAGES, epochs, batch, 7, backend.step, backend.snapshot, hooks, "run")


def test_every_epoch_shuffles_all_images_and_skips_a_one_image_batch() -> None:
    backend = RecordingBackend()
    trained = run(backend, TrainingHooks())
    # 11 images in batches of 5: 5 + 5 + 1, and the single image is skipped (NT-Xent needs a negative).
    assert [len(batch) for batch in backend.batches] == [5, 5, 5, 5]
    first_epoch = backend.batches[0] + backend.batches[1]
    assert len(set(first_epoch)) == 10 and first_epoch != sorted(first_epoch)
    assert backend.batches[:2] != backend.batches[2:]  # a new order each epoch
    assert trained.losses == (1.0, 2.0, 3.0, 4.0)
    assert trained.samples_seen == 20
    assert trained.flops_per_sample == 10.0  # counted on the first step only
    again = RecordingBackend()
    run(again, TrainingHooks())
    assert (again.batches, again.draws) == (backend.batches, backend.draws)


def test_the_callers_random_state_is_left_untouched() -> None:
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    run(RecordingBackend(), TrainingHooks())
    assert torch.equal(torch.rand(3), expected)


def stop_at(step: int) -> Callable[[], bool]:
    """A ``should_stop`` that says yes the ``step``-th time it is asked."""
    asked = iter(range(1, 1_000))
    return lambda: next(asked) == step


def test_stopping_after_any_step_and_resuming_repeats_the_uninterrupted_run() -> None:
    uninterrupted = RecordingBackend()
    expected = run(uninterrupted, TrainingHooks())
    for stop_after in range(1, len(expected.losses)):
        first = RecordingBackend()
        with pytest.raises(TrainingInterrupted) as stopped:
            run(first, TrainingHooks(should_stop=stop_at(stop_after)))
        progress = stopped.value.progress
        assert progress.steps_done == stop_after
        assert progress.model_state["steps"].item() == stop_after
        second = RecordingBackend()
        resumed = run(second, TrainingHooks(resume_from=progress))
        assert first.batches + second.batches == uninterrupted.batches
        assert first.draws + second.draws == uninterrupted.draws
        assert resumed.samples_seen == expected.samples_seen
        assert resumed.flops_per_sample == expected.flops_per_sample
        assert resumed.losses[:stop_after] == expected.losses[:stop_after]


def test_periodic_saves_hand_out_progress_without_stopping() -> None:
    saved: list[TrainingProgress] = []
    backend = RecordingBackend()
    run(backend, TrainingHooks(should_save=lambda: True, save=saved.append))
    assert [item.steps_done for item in saved] == [1, 2, 3, 4]
    assert [item.epoch for item in saved] == [0, 0, 1, 1]


def test_progress_of_another_run_is_refused() -> None:
    backend = RecordingBackend()
    with pytest.raises(TrainingInterrupted) as stopped:
        run(backend, TrainingHooks(should_stop=lambda: True))
    hooks = TrainingHooks(resume_from=stopped.value.progress)
    assert resume_point(hooks, "run") is stopped.value.progress
    assert resume_point(TrainingHooks(), "run") is None
    with pytest.raises(TrainingProgressError, match="another run"):
        resume_point(hooks, "another fingerprint")
