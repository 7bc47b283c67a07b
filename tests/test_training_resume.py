"""Stopping local training between optimizer steps and resuming it gives the same update, to the byte.

Three levels: ``train_client`` itself (stopped after every possible step, progress round-tripped through
bytes), the engine's training-step file (saved on stop, kept per round and base model, discarded when
stale or unreadable), and a whole engine on the embedded services, stopped mid-training and restarted
from its state directory, whose submitted update must be the one an uninterrupted run computes.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import pytest
import torch

from agent import content_id
from agent.commands.local_federation import LocalFederation
from agent.engine.checkpoint import CheckpointFile
from agent.engine.round_engine import EngineOptions, RoundEngine
from agent.engine.training_step import TRAINING_STEP_FILE, ResumableTraining, TrainingStepFile
from agent.learning.modes import TrainingMode
from agent.learning.simulation import initial_state
from agent.learning.training import TrainingConfig, train_client
from agent.learning.training_progress import (
    TrainingHooks,
    TrainingInterrupted,
    TrainingProgress,
    TrainingProgressError,
)
from models.seeding import derive_seed
from models.spec import EncoderSpec

CONFIG = TrainingConfig(
    spec=EncoderSpec(architecture="resnet", stages=2, widths=(8, 16), image_size=16, projection_dim=8),
    mode=TrainingMode.LAYER_WISE,
    federation_seed=5,
    batch_size=8,
    local_epochs=2,
)
STEPS = 10  # 2 epochs of 40 images in batches of 8
ENGINE_CONFIG = TrainingConfig(  # one stage, 28x28 images: a whole federation trains it in seconds
    spec=EncoderSpec(architecture="resnet", stages=1, widths=(8,), projection_dim=8),
    mode=TrainingMode.LAYER_WISE,
    federation_seed=3,
    batch_size=8,
    local_epochs=2,
)


def images(count: int = 40, seed: int = 0, size: int = 16) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (count, 1, size, size), generator=generator, dtype=torch.uint8)


def stop_after(steps: int) -> TrainingHooks:
    calls = [0]

    def should_stop() -> bool:
        calls[0] += 1
        return calls[0] >= steps

    return TrainingHooks(should_stop=should_stop)


def interrupted_progress(state: dict[str, torch.Tensor], stage: int, steps: int) -> TrainingProgress:
    with pytest.raises(TrainingInterrupted) as interrupted:
        train_client(state, stage, images(), CONFIG, seed=9, hooks=stop_after(steps))
    return interrupted.value.progress


@pytest.mark.parametrize("stage", [1, 2])
def test_resuming_after_any_step_gives_the_uninterrupted_update_bytes(stage: int) -> None:
    state = initial_state(CONFIG)
    uninterrupted = train_client(state, stage, images(), CONFIG, seed=9)
    assert uninterrupted.metrics.steps == STEPS
    # The first step, mid-epoch, the last of epoch 1 (epoch 2's order is drawn after resuming), the first
    # of epoch 2, the very last.
    for steps in (1, 3, 5, 6, STEPS):
        progress = interrupted_progress(state, stage, steps)
        assert progress.steps_done == steps
        restored = TrainingProgress.from_bytes(progress.to_bytes())  # as it comes back from disk
        resumed = train_client(
            state, stage, images(), CONFIG, seed=9, hooks=TrainingHooks(resume_from=restored)
        )
        assert resumed.update.to_bytes() == uninterrupted.update.to_bytes(), f"stopped after step {steps}"
        assert resumed.metrics.loss == uninterrupted.metrics.loss
        assert resumed.metrics.steps == STEPS and resumed.metrics.flops == uninterrupted.metrics.flops


def test_without_hooks_training_is_what_it_always_was() -> None:
    state = initial_state(CONFIG)
    plain = train_client(state, 1, images(), CONFIG, seed=9)
    never_stopped = train_client(state, 1, images(), CONFIG, seed=9, hooks=TrainingHooks())
    assert plain.update.to_bytes() == never_stopped.update.to_bytes()


def test_progress_of_another_run_is_refused() -> None:
    state = initial_state(CONFIG)
    progress = interrupted_progress(state, 1, 3)
    for stage, data, seed in ((2, images(), 9), (1, images(seed=1), 9), (1, images(), 10)):
        with pytest.raises(TrainingProgressError, match="another run"):
            train_client(state, stage, data, CONFIG, seed=seed, hooks=TrainingHooks(resume_from=progress))
    with pytest.raises(TrainingProgressError):
        TrainingProgress.from_bytes(b"not a progress file")


def test_the_step_file_belongs_to_one_round_and_base_model(tmp_path: Path) -> None:
    progress = interrupted_progress(initial_state(CONFIG), 1, 4)
    steps = TrainingStepFile(tmp_path)
    steps.save(3, "bafy-base", progress)
    loaded = steps.load(3, "bafy-base")
    assert loaded is not None and loaded.steps_done == 4
    assert steps.load(4, "bafy-base") is None  # another round: stale, discarded
    assert not (tmp_path / TRAINING_STEP_FILE).exists()
    (tmp_path / TRAINING_STEP_FILE).write_bytes(b'{"round": 3, "base_model_cid": "bafy-base"}\ntruncated')
    assert steps.load(3, "bafy-base") is None
    assert not (tmp_path / TRAINING_STEP_FILE).exists()
    assert [path.name for path in tmp_path.iterdir()] == []  # no temporary files left behind


def test_resumable_training_saves_on_stop_and_periodically(tmp_path: Path) -> None:
    state = initial_state(CONFIG)
    expected = train_client(state, 1, images(), CONFIG, seed=9).update.to_bytes()
    saved: list[int] = []
    training = ResumableTraining(tmp_path, checkpoint_seconds=1e-9)  # save after every step
    original_save = training.file.save

    def recording_save(round_number: int, base_model_cid: str, progress: TrainingProgress) -> None:
        saved.append(progress.steps_done)
        original_save(round_number, base_model_cid, progress)

    training.file.save = recording_save  # type: ignore[method-assign]
    calls = [0]

    def stop_at_step_six() -> bool:
        calls[0] += 1
        return calls[0] >= 6

    assert training.train(1, "base", state, 1, images(), CONFIG, 9, stop_at_step_six) is None
    assert saved == [1, 2, 3, 4, 5, 6]  # periodic saves, then the one on stop
    result = training.train(1, "base", state, 1, images(), CONFIG, 9, lambda: False)
    assert result is not None and result.update.to_bytes() == expected
    training.discard()
    assert not (tmp_path / TRAINING_STEP_FILE).exists()


class StopDuringTraining(threading.Event):
    """A stop event that sets itself once the engine has trained ``steps`` optimizer steps.

    The engine asks ``is_set`` after every step while its activity is "training"; counting those asks
    stops it mid-training at an exact step, without timing.
    """

    def __init__(self, steps: int) -> None:
        super().__init__()
        self.steps = steps
        self.engine: RoundEngine | None = None
        self.training_asks = 0

    def is_set(self) -> bool:
        if self.engine is not None and self.engine.activity == "training":
            self.training_asks += 1
            if self.training_asks >= self.steps:
                self.set()
        return super().is_set()


def stop_mid_training_and_restart(federation: LocalFederation, data: torch.Tensor) -> str:
    """Run peer 0 until its fifth training step, stop it, restart it to the end; the final model's CID."""
    options = EngineOptions(poll_seconds=0.05)
    first = federation.engine(0, data, options)
    stop = StopDuringTraining(steps=5)
    stop.engine = first
    first.run(stop)
    first.bus.close()
    state_directory = federation.peer_directory(0)
    assert (state_directory / TRAINING_STEP_FILE).exists()
    assert CheckpointFile(state_directory).load().update_cid == ""
    assert federation.observer.submissions(1) == ()
    final_model = federation.engine(0, data, options).run(threading.Event())
    assert not (state_directory / TRAINING_STEP_FILE).exists()
    return final_model


def test_an_engine_stopped_mid_training_resumes_and_submits_the_uninterrupted_update(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config = ENGINE_CONFIG
    data = images(count=48, seed=4, size=28)
    with LocalFederation(config, peers=1, rounds_per_stage=1, work_directory=tmp_path) as federation:
        caplog.set_level(logging.INFO, logger="agent.engine.training_step")
        final_model = stop_mid_training_and_restart(federation, data)
        assert "round 1: resuming training after step 5" in caplog.text
        assert final_model == federation.observer.latest_canonical_model()

        seed = derive_seed(config.federation_seed, "train", 1, federation.accounts[0].address.lower())
        reference = train_client(initial_state(config), 1, data, config, seed)
        (submission,) = federation.observer.submissions(1)
        assert submission.update_cid == content_id.compute(reference.update.to_bytes())
