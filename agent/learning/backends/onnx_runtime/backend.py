"""The ``ort`` backend: one client's local training with ONNX Runtime's on-device training API.

Per round: find (or build once) the stage's artifacts, load the global state into a fresh checkpoint state,
and train it with ``onnxruntime.training.api.Module`` and ``Optimizer`` (AdamW with torch's update rule,
learning rate, betas, eps and the recipe's weight decay). In ``lw`` from stage 2 on, the frozen stages run
as a plain ``InferenceSession`` on the cached prefix model with the global state's tensors written in.

The loop around the steps is :func:`agent.learning.local_epochs.run_local_epochs`, the one the torch
backend drives: the same shuffling generator, the same seeded global generator for the augmentations
(the same :class:`SimCLRAugmentation`, in torch, on the input side), the same skipped one-image batch.
So both backends train on the same views in the same order, which is what the parity test relies on, and the
result is the same :class:`ClientResult`: deltas of exactly the exchanged tensors, read back from the
checkpoint state (BatchNorm running statistics included), and the same metrics. FLOPs are counted as
the torch backend counts them, on the same computation traced on torch's meta device (no memory, no
data), since ONNX Runtime's kernels cannot be counted the same way.

Stopping and resuming between steps works as with torch: the progress carries ONNX Runtime's own
checkpoint (parameters, BatchNorm statistics and AdamW moments and step) as bytes, and resuming from it
repeats the uninterrupted run exactly. Progress saved by the other backend, or under other artifacts,
does not match this run's fingerprint and is refused, so the engine retrains that round from the start.
"""

from __future__ import annotations

import hashlib
import shutil
import tempfile
import time
import weakref
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import onnx
import onnx.numpy_helper
import onnxruntime
import torch
from onnxruntime.training.api import CheckpointState, Module, Optimizer
from torch.utils.flop_counter import FlopCounterMode

from agent.learning.backends import ONNX_RUNTIME_BACKEND
from agent.learning.backends.onnx_runtime.artifacts import (
    ArtifactCache,
    StageArtifacts,
    artifact_digest,
    artifact_key,
)
from agent.learning.backends.onnx_runtime.graphs import (
    PREFIX_INPUT,
    contrastive_loss_with_masks,
    contrastive_masks,
)
from agent.learning.local_epochs import resume_point, run_local_epochs
from agent.learning.training import (
    ClientResult,
    StageTrainer,
    TrainingConfig,
    check_client_images,
    client_result,
)
from agent.learning.training_progress import (
    TrainingHooks,
    TrainingProgress,
    TrainingProgressError,
    run_fingerprint,
)
from models.augmentation import SimCLRAugmentation
from models.spec import Architecture
from models.staged_model import StagedModel

# How many views the frozen prefix runs on at a time, per encoder family (None: the whole batch at once).
# Nothing flows back through the prefix and every view is computed independently (BatchNorm is folded
# into its convolution), so this changes how many activations exist at once, not the result (tested).
# Measured with scripts/backend_speed.py (paper presets, 1 thread, ort, lw): a ViT block's intermediates
# (4x-wide MLP, attention) are several times its output, so chunks of 64 of the 512 views lowered stage 6
# from 290-305 to 278-280 MiB and 1.11-1.30 to 0.95-1.08 s per step (32: 267 MiB, 1.47 s; 128: 283 MiB,
# 0.97 s). A ResNet stage's output is as large as its intermediates, and chunks only added copies and
# heap fragmentation: stage 2 took 390 MiB in chunks of 64 against 236 MiB at once (312 MiB when the
# chunks were copied into one preallocated array), at the same 0.76 s per step.
PREFIX_CHUNK_VIEWS: dict[Architecture, int | None] = {"vit": 64, "resnet": None}
CHECKPOINT_KEY = "onnxruntime_checkpoint"  # where the progress's optimizer_state keeps ORT's checkpoint
SEVERITY_ERROR = 3

onnxruntime.set_default_logger_severity(SEVERITY_ERROR)  # its INFO lines flood stderr while exporting


class OnnxRuntimeBackend:
    """Trains with ``onnxruntime-training``; artifacts are cached in ``cache_directory``.

    Without a cache directory, artifacts go to a temporary directory that lives as long as the backend.
    """

    def __init__(self, cache_directory: Path | None = None) -> None:
        if cache_directory is None:
            cache_directory = Path(tempfile.mkdtemp(prefix="layerfed-ort-"))
            # Not a TemporaryDirectory: its implicit clean-up warns (ResourceWarning) when collected.
            weakref.finalize(self, shutil.rmtree, cache_directory, ignore_errors=True)
        self.cache = ArtifactCache(cache_directory)

    @property
    def name(self) -> str:
        return ONNX_RUNTIME_BACKEND

    def prepare(self, config: TrainingConfig, stage: int) -> None:
        """Export the stage's training graphs into the cache unless they are there already."""
        self.cache.artifacts(config, stage)

    # Deliberate repetition: the TrainingBackend.train signature, repeated by every backend.
    def train(
        self,
        global_state: Mapping[str, torch.Tensor],
        stage: int,
        images: torch.Tensor,
        config: TrainingConfig,
        seed: int,
        *,
        hooks: TrainingHooks | None = None,
    ) -> ClientResult:
        check_client_images(images)
        started = time.perf_counter()
        spec = config.spec
        artifacts = self.cache.artifacts(config, stage)
        fingerprint = ""
        if hooks:
            backend_digest = hashlib.sha256(
                config.digest()
                + f":{ONNX_RUNTIME_BACKEND}:".encode()
                + artifact_digest(artifact_key(config, stage)).encode()
            ).digest()
            fingerprint = run_fingerprint(backend_digest, stage, seed, images)
        hooks = hooks or TrainingHooks()
        resumed = resume_point(hooks, fingerprint)
        session = _StageSession(
            artifacts,
            global_state,
            config.learning_rate,
            resumed,
            prefix_chunk_views=PREFIX_CHUNK_VIEWS[spec.architecture],
        )
        augment = SimCLRAugmentation(spec.image_channels, spec.image_size, config.minimum_crop_scale)

        def step(batch: torch.Tensor, count_flops: bool) -> tuple[float, float]:
            flops = count_flops_per_sample(config, stage, len(batch)) if count_flops else 0.0
            return session.step(torch.cat([augment(batch), augment(batch)]).numpy()), flops

        def snapshot() -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
            return {}, {CHECKPOINT_KEY: session.checkpoint_bytes()}

        trained = run_local_epochs(
            images, config.local_epochs, config.batch_size, seed, step, snapshot, hooks, fingerprint
        )
        trained_state = {name: session.parameter(name) for name in artifacts.trained_names}
        return client_result(global_state, trained_state, stage, len(images), config, trained, started)


def count_flops_per_sample(config: TrainingConfig, stage: int, batch: int) -> float:
    """FLOPs per image of one training step, as the torch backend counts them, on torch's meta device.

    The frozen prefix counts its forward pass, the trained part forward and backward, the loss included.
    """
    spec = config.spec
    with torch.device("meta"):
        model = StagedModel(spec, config.federation_seed)
        views = torch.empty(2 * batch, spec.image_channels, spec.image_size, spec.image_size)
        logits_mask = torch.empty(2 * batch, 2 * batch)
        positive_mask = torch.empty(2 * batch, 2 * batch)
    trainer = StageTrainer(model, config.mode, stage)
    with FlopCounterMode(display=False) as counter:
        projections = trainer.project(views)
        loss = contrastive_loss_with_masks(projections, logits_mask, positive_mask, config.temperature)
        loss.backward()  # type: ignore[no-untyped-call]
    return float(counter.get_total_flops()) / batch


def _session_options() -> onnxruntime.SessionOptions:
    """Settings of both sessions (training Module, frozen prefix).

    As many intra-op threads as torch uses, so that both backends get the same cores. No memory arena:
    ONNX Runtime's CPU arena grows in powers of two and keeps what it grew for the session's lifetime, so
    the prefix session's activations stayed held while the Module trained; measured on the paper presets
    (1 thread), ``lw`` at the last stage peaked at 421 MiB (ViT) and 403 MiB (ResNet) with arenas and at
    285-330 MiB and 155-165 MiB without, for 5-10 % more time per step.
    """
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    options.inter_op_num_threads = 1
    options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
    options.enable_cpu_mem_arena = False
    return options


class _StageSession:
    """ONNX Runtime's state of one round: checkpoint state, training Module, optimizer, frozen prefix."""

    def __init__(
        self,
        artifacts: StageArtifacts,
        global_state: Mapping[str, torch.Tensor],
        learning_rate: float,
        resumed: TrainingProgress | None,
        prefix_chunk_views: int | None = None,
    ) -> None:
        if resumed is None:
            self.state = CheckpointState.load_checkpoint(str(artifacts.checkpoint))
        else:
            self.state = _restored_state(resumed)
        self.module = Module(
            str(artifacts.training_model), self.state, device="cpu", session_options=_session_options()
        )
        if resumed is None:
            # Only now: before a Module is built on the state, ONNX Runtime 1.19 has not allocated the
            # parameters' buffers, and writing one crashes the process (segmentation fault).
            for name in artifacts.trained_names:
                self.state.parameters[name].data = _as_array(global_state[name])
        self.optimizer = Optimizer(str(artifacts.optimizer_model), self.module)
        self.optimizer.set_learning_rate(learning_rate)
        self.module.train()
        self.prefix = (
            _FrozenPrefixSession(artifacts, global_state, prefix_chunk_views)
            if artifacts.prefix_model
            else None
        )
        self._masks: dict[int, tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]] = {}

    def step(self, views: npt.NDArray[np.float32]) -> float:
        """One AdamW step on the views of a batch ([2B, C, H, W], both views); returns the loss."""
        batch = len(views) // 2
        if batch not in self._masks:
            self._masks[batch] = contrastive_masks(batch)
        inputs = self.prefix.run(views) if self.prefix is not None else views
        loss = self.module(inputs, *self._masks[batch])
        self.optimizer.step()
        self.module.lazy_reset_grad()
        return float(loss)

    def parameter(self, name: str) -> torch.Tensor:
        """A copy of one tensor of the checkpoint state (trained parameter or BatchNorm statistic)."""
        return torch.from_numpy(np.array(self.state.parameters[name].data, dtype=np.float32))

    def checkpoint_bytes(self) -> torch.Tensor:
        """ONNX Runtime's checkpoint with the optimizer's moments and step, as a uint8 tensor."""
        with tempfile.TemporaryDirectory(prefix="layerfed-ort-progress-") as folder:
            path = Path(folder) / "checkpoint"
            CheckpointState.save_checkpoint(self.state, str(path), include_optimizer_state=True)
            return torch.frombuffer(bytearray(path.read_bytes()), dtype=torch.uint8).clone()


def _as_array(tensor: torch.Tensor) -> npt.NDArray[np.float32]:
    return np.ascontiguousarray(tensor.detach().to(torch.float32).numpy())


def _restored_state(progress: TrainingProgress) -> CheckpointState:
    saved = progress.optimizer_state.get(CHECKPOINT_KEY)
    if not isinstance(saved, torch.Tensor) or saved.dtype != torch.uint8:
        raise TrainingProgressError("the progress holds no ONNX Runtime checkpoint")
    with tempfile.TemporaryDirectory(prefix="layerfed-ort-progress-") as folder:
        path = Path(folder) / "checkpoint"
        path.write_bytes(saved.numpy().tobytes())
        try:
            return CheckpointState.load_checkpoint(str(path))
        except Exception as error:  # ORT raises its own, untyped, exception classes
            raise TrainingProgressError(
                f"the ONNX Runtime checkpoint in the progress is unreadable: {error}"
            ) from error


class _FrozenPrefixSession:
    """The frozen stages as an InferenceSession on a copy of the prefix model holding the global state.

    Measured against running them in torch without autograd (paper presets, 1 thread, ``lw`` at the
    last stage): the same peak memory for ViT, a third less time; for ResNet 160 MiB against 315 MiB and
    1.0 s per step against 1.6 s, because ONNX Runtime folds each frozen BatchNorm into its convolution.

    The tensors are written into the model itself rather than passed as ``SessionOptions.add_initializer``
    overrides: ONNX Runtime 1.19 folds BatchNorm into the preceding convolution with the file's values
    before applying overrides, so overridden prefixes computed wrong features (measured: off by 0.06 on
    features of magnitude 2) unless graph optimizations were turned off.
    """

    def __init__(
        self,
        artifacts: StageArtifacts,
        global_state: Mapping[str, torch.Tensor],
        chunk_views: int | None = None,
    ) -> None:
        assert artifacts.prefix_model is not None
        self.chunk_views = chunk_views
        model = onnx.load(str(artifacts.prefix_model))
        for initializer in model.graph.initializer:
            array = _as_array(global_state[initializer.name])
            initializer.CopyFrom(onnx.numpy_helper.from_array(array, initializer.name))
        self.session = onnxruntime.InferenceSession(
            model.SerializeToString(), sess_options=_session_options(), providers=["CPUExecutionProvider"]
        )

    def run(self, views: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        """The frozen stages' output for ``views``, ``chunk_views`` views at a time (see
        :data:`PREFIX_CHUNK_VIEWS`)."""
        chunk = self.chunk_views
        if chunk is None or chunk >= len(views):
            (hidden,) = self.session.run(None, {PREFIX_INPUT: views})
            return np.asarray(hidden, dtype=np.float32)
        chunks = [
            self.session.run(None, {PREFIX_INPUT: views[start : start + chunk]})[0]
            for start in range(0, len(views), chunk)
        ]
        return np.asarray(np.concatenate(chunks), dtype=np.float32)
