"""The client step: train one stage on local, unlabeled images and return the update.

This is the function the agent calls every round and the benchmark measures, so both see the same code.
In ``lw`` mode the stages before the trained one run frozen (eval mode, no autograd graph), which is
where layer-wise training saves memory and compute: their activations are never kept for a backward
pass and they cost one forward pass instead of three passes' worth of FLOPs.
"""

from __future__ import annotations

import copy
import hashlib
import json
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

import torch
from lightly.loss import NTXentLoss
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from agent.errors import ConfigurationError
from agent.learning.aggregation.config import DEFAULT_AGGREGATION, LEGACY_FEDAVG, AggregationConfig
from agent.learning.compression.config import NO_COMPRESSION, CompressionConfig
from agent.learning.local_epochs import LocalTraining, resume_point, run_local_epochs
from agent.learning.model_state import extract_state, load_state
from agent.learning.modes import TrainingMode, exchanged_prefixes, head_stage, is_exchanged, trained_stages
from agent.learning.privacy.config import NO_PRIVACY, PrivacyConfig
from agent.learning.training_progress import TrainingHooks, run_fingerprint
from agent.learning.update import ModelUpdate
from models.augmentation import SimCLRAugmentation
from models.spec import EncoderSpec, ModelSpecError
from models.staged_model import StagedModel


@dataclass(frozen=True)
class TrainingConfig:
    """Everything a client needs to train a stage, besides the global model and its data."""

    spec: EncoderSpec
    mode: TrainingMode
    federation_seed: int
    local_epochs: int = 1
    batch_size: int = 128
    learning_rate: float = 1e-3
    weight_decay: float = 1e-4
    temperature: float = 0.5
    minimum_crop_scale: float = 0.2
    aggregation: AggregationConfig = DEFAULT_AGGREGATION
    privacy: PrivacyConfig = NO_PRIVACY
    compression: CompressionConfig = NO_COMPRESSION

    def __post_init__(self) -> None:
        if self.local_epochs < 1:
            raise ConfigurationError(f"local_epochs must be at least 1, not {self.local_epochs}")
        if self.batch_size < 2:
            raise ConfigurationError(
                f"batch_size must be at least 2 for a contrastive loss, not {self.batch_size}"
            )
        if self.learning_rate <= 0:
            raise ConfigurationError(f"learning_rate must be positive, not {self.learning_rate}")
        if self.temperature <= 0:
            raise ConfigurationError(f"temperature must be positive, not {self.temperature}")

    def to_dict(self) -> dict[str, Any]:
        values = asdict(self)
        values["spec"] = self.spec.to_dict()
        values["mode"] = self.mode.value
        if self.aggregation == LEGACY_FEDAVG:  # recipes from before rules existed: same digest as then
            del values["aggregation"]
        else:
            values["aggregation"] = self.aggregation.to_dict()
        if self.privacy == NO_PRIVACY:  # recipes from before privacy existed: same digest as then
            del values["privacy"]
        else:
            values["privacy"] = self.privacy.to_dict()
        if self.compression == NO_COMPRESSION:  # recipes from before compression: same digest as then
            del values["compression"]
        else:
            values["compression"] = self.compression.to_dict()
        return values

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> TrainingConfig:
        """Inverse of :meth:`to_dict`; unknown or missing keys raise ConfigurationError."""
        known = {field.name for field in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigurationError(f"unknown training config keys: {', '.join(unknown)}")
        converted = dict(values)
        try:
            converted["spec"] = EncoderSpec.from_dict(dict(values["spec"]))
            converted["mode"] = TrainingMode.parse(str(values["mode"]))
            converted["aggregation"] = (
                AggregationConfig.from_dict(values["aggregation"])
                if "aggregation" in values
                else LEGACY_FEDAVG
            )
            converted["privacy"] = (
                PrivacyConfig.from_dict(values["privacy"]) if "privacy" in values else NO_PRIVACY
            )
            converted["compression"] = (
                CompressionConfig.from_dict(values["compression"])
                if "compression" in values
                else NO_COMPRESSION
            )
            return cls(**converted)
        except (KeyError, TypeError) as exc:
            raise ConfigurationError(f"training config is incomplete or malformed: {exc}") from exc
        except ModelSpecError as exc:
            raise ConfigurationError(f"training config spec: {exc}") from exc

    def digest(self) -> bytes:
        """SHA-256 of the canonical JSON form: recorded on chain, so every peer provably runs this recipe."""
        canonical = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).digest()


@dataclass(frozen=True)
class TrainingMetrics:
    """What one client's round cost and achieved. ``flops`` counts forward and backward passes."""

    loss: float
    samples: int
    steps: int
    seconds: float
    flops: int
    update_bytes: int


@dataclass(frozen=True)
class ClientResult:
    update: ModelUpdate
    metrics: TrainingMetrics


def contrastive_loss(temperature: float) -> nn.Module:
    """NT-Xent (SimCLR, Chen et al., 2020) from lightly: the positive pair against 2N-2 negatives."""
    loss: nn.Module = NTXentLoss(temperature=temperature)
    return loss


class StageTrainer:
    """Splits a staged model into its frozen prefix and trained part for one (mode, stage)."""

    def __init__(self, model: StagedModel, mode: TrainingMode, stage: int) -> None:
        stages = model.spec.stages
        trained = trained_stages(mode, stage, stages)
        self.model = model
        self.first_trained = trained.start
        self.readout_stage = head_stage(mode, stage, stages)
        model.requires_grad_(False)
        model.eval()
        for index in trained:
            model.stages[index - 1].requires_grad_(True).train()
        model.heads[self.readout_stage - 1].requires_grad_(True).train()

    def parameters(self) -> list[nn.Parameter]:
        return [parameter for parameter in self.model.parameters() if parameter.requires_grad]

    def project(self, views: torch.Tensor) -> torch.Tensor:
        """Frozen stages without autograd, then trained stages and the head: [B, projection_dim]."""
        with torch.no_grad():
            hidden = self.model.hidden(views, self.first_trained - 1)
        for index in range(self.first_trained, self.readout_stage + 1):
            hidden = self.model.stages[index - 1](hidden)
        return self.model.project(self.model.pool(hidden), self.readout_stage)


# Deliberate repetition: TrainingBackend.train's signature (the torch backend forwards to this).
def train_client(
    global_state: Mapping[str, torch.Tensor],
    stage: int,
    images: torch.Tensor,
    config: TrainingConfig,
    seed: int,
    *,
    hooks: TrainingHooks | None = None,
) -> ClientResult:
    """Train ``stage`` from ``global_state`` on ``images`` (uint8 [N, C, H, W]) and return the update.

    ``seed`` fixes the shuffling and the augmentations; the update holds exactly the tensors ``config.mode``
    exchanges at ``stage``, as deltas from ``global_state``.

    ``hooks`` (optional) lets a long-running caller stop training between optimizer steps, save its
    progress, and later resume it: the resumed run returns the same update bytes as an uninterrupted one
    (see :mod:`agent.learning.training_progress`). Without it, training runs to the end as it always has.
    """
    check_client_images(images)
    started = time.perf_counter()
    spec = config.spec
    model = StagedModel(spec, config.federation_seed)
    load_state(model, global_state)
    trainer = StageTrainer(model, config.mode, stage)
    optimizer = torch.optim.AdamW(
        trainer.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay
    )
    augment = SimCLRAugmentation(spec.image_channels, spec.image_size, config.minimum_crop_scale)
    criterion = contrastive_loss(config.temperature)
    fingerprint = run_fingerprint(config.digest(), stage, seed, images) if hooks else ""
    hooks = hooks or TrainingHooks()
    resumed = resume_point(hooks, fingerprint)
    if resumed is not None:
        model.load_state_dict(resumed.model_state)
        optimizer.load_state_dict(resumed.optimizer_state)

    def step(batch: torch.Tensor, count_flops: bool) -> tuple[float, float]:
        if not count_flops:
            return _step(trainer, optimizer, criterion, augment, batch), 0.0
        with FlopCounterMode(display=False) as counter:
            loss = _step(trainer, optimizer, criterion, augment, batch)
        return loss, counter.get_total_flops() / len(batch)

    def snapshot() -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        model_state = {name: tensor.clone() for name, tensor in model.state_dict().items()}
        return model_state, copy.deepcopy(optimizer.state_dict())

    trained = run_local_epochs(
        images, config.local_epochs, config.batch_size, seed, step, snapshot, hooks, fingerprint
    )
    return client_result(global_state, extract_state(model), stage, len(images), config, trained, started)


def check_client_images(images: torch.Tensor) -> None:
    """What every backend requires of a client's images: uint8 [N, C, H, W], at least two of them."""
    if images.dtype != torch.uint8 or images.dim() != 4:
        raise ConfigurationError(
            f"images must be uint8 [N, C, H, W], got {images.dtype} {tuple(images.shape)}"
        )
    if len(images) < 2:
        raise ConfigurationError(f"a client needs at least 2 images to train, has {len(images)}")


def client_result(
    global_state: Mapping[str, torch.Tensor],
    trained_state: Mapping[str, torch.Tensor],
    stage: int,
    samples: int,
    config: TrainingConfig,
    trained: LocalTraining,
    started: float,
) -> ClientResult:
    """A backend's result: deltas of exactly the tensors the mode exchanges at ``stage`` (taken from
    ``trained_state``, which may hold more), and the round's metrics (``started``: ``perf_counter``)."""
    prefixes = exchanged_prefixes(config.mode, stage, config.spec.stages)
    deltas = {
        name: trained_state[name] - global_state[name]
        for name in trained_state
        if is_exchanged(name, prefixes)
    }
    update = ModelUpdate(mode=config.mode, stage=stage, samples=samples, deltas=deltas)
    metrics = TrainingMetrics(
        loss=sum(trained.losses) / len(trained.losses),
        samples=samples,
        steps=len(trained.losses),
        seconds=time.perf_counter() - started,
        flops=round(trained.flops_per_sample * trained.samples_seen),
        update_bytes=len(update.to_bytes()),
    )
    return ClientResult(update=update, metrics=metrics)


def _step(
    trainer: StageTrainer,
    optimizer: torch.optim.Optimizer,
    criterion: nn.Module,
    augment: SimCLRAugmentation,
    batch: torch.Tensor,
) -> float:
    """One SimCLR step: both views go through the model as one batch, then NT-Xent on the pair."""
    views = torch.cat([augment(batch), augment(batch)])
    projections = trainer.project(views)
    first, second = projections.chunk(2)
    loss: torch.Tensor = criterion(first, second)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()  # type: ignore[no-untyped-call]
    optimizer.step()
    return float(loss.detach())
