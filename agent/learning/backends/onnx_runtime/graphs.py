"""The torch modules the ``ort`` backend exports to ONNX, and the stage plan they follow.

For one (mode, stage) a client's work splits in two (see :class:`agent.learning.training.StageTrainer`):

- the frozen prefix, encoder stages ``1..first_trained-1`` in eval mode (``lw`` only), exported as
  :class:`FrozenPrefix` and run as a plain ONNX Runtime ``InferenceSession``;
- the trained part, stages ``first_trained..readout_stage``, the readout head and the NT-Xent loss,
  exported as :class:`TrainedObjective` in training mode; ONNX Runtime derives its gradient graph.

Both wrappers hold the whole :class:`StagedModel`'s ``stages`` and ``heads`` lists under those same
attribute names, so every exported initializer carries the global state's tensor name
(``stages.1.conv1.weight``): reading parameters in and out needs no mapping. Only the modules a forward
pass uses end up in the graph.

NT-Xent is computed inside the graph (ONNX Runtime's ``loss=None``) with element-wise ops whose gradients
it knows (LpNormalization has none). It is lightly's ``NTXentLoss`` written on the full 2B x 2B similarity
matrix: each row's own similarity is pushed to -1e9 by an additive mask (exp of it is exactly 0 in
float32, so it drops out of the softmax as lightly's removed diagonal does) and the positive (the other
view of the same image) is picked by a one-hot mask. The masks are graph inputs, built per batch size, so
one graph serves every batch size, the smaller last batch included.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import torch
from torch import nn

from agent.learning.modes import TrainingMode, head_stage, trained_stages
from models.resnet import pool_feature_map
from models.spec import EncoderSpec
from models.staged_model import StagedModel
from models.vit import pool_tokens

SELF_SIMILARITY_MASK = -1e9
NORM_FLOOR = 1e-12  # torch.nn.functional.normalize's eps, which lightly's NT-Xent uses

TRAINING_INPUTS = ("inputs", "logits_mask", "positive_mask")
PREFIX_INPUT = "images"
PREFIX_OUTPUT = "hidden"
LOSS_OUTPUT = "loss"


@dataclass(frozen=True)
class StagePlan:
    """Which stages a (mode, stage) runs frozen, trains, and reads out after."""

    first_trained: int
    readout_stage: int

    @classmethod
    def of(cls, mode: TrainingMode, stage: int, stages: int) -> StagePlan:
        trained = trained_stages(mode, stage, stages)
        return cls(first_trained=trained.start, readout_stage=head_stage(mode, stage, stages))

    @property
    def frozen_stages(self) -> int:
        """Number of leading stages that run frozen (0: the trained part reads the images)."""
        return self.first_trained - 1


def pool(spec: EncoderSpec, hidden: torch.Tensor) -> torch.Tensor:
    """Pooled features of a stage's output, as :meth:`StagedModel.pool`."""
    return pool_feature_map(hidden) if spec.architecture == "resnet" else pool_tokens(hidden)


def contrastive_loss_with_masks(
    projections: torch.Tensor, logits_mask: torch.Tensor, positive_mask: torch.Tensor, temperature: float
) -> torch.Tensor:
    """NT-Xent of projections [2B, D] (first view's B rows, then the second view's), as lightly's."""
    norms = torch.sqrt((projections * projections).sum(dim=1, keepdim=True))
    normalized = projections / torch.clamp(norms, min=NORM_FLOOR)
    logits = normalized @ normalized.t() / temperature + logits_mask  # [2B, 2B]
    log_probabilities = torch.log_softmax(logits, dim=1)
    return -(log_probabilities * positive_mask).sum(dim=1).mean()


def contrastive_masks(batch: int) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]:
    """The additive self-similarity mask and the one-hot positive mask for ``batch`` images (2B views)."""
    views = 2 * batch
    logits_mask = np.zeros((views, views), dtype=np.float32)
    np.fill_diagonal(logits_mask, SELF_SIMILARITY_MASK)
    positive_mask = np.zeros((views, views), dtype=np.float32)
    rows = np.arange(views)
    positive_mask[rows, (rows + batch) % views] = 1.0
    return logits_mask, positive_mask


class TrainedObjective(nn.Module):
    """Trained stages, the readout head and NT-Xent: views (or frozen features) in, the loss out."""

    def __init__(self, model: StagedModel, plan: StagePlan, temperature: float) -> None:
        super().__init__()
        self.spec = model.spec
        self.plan = plan
        self.temperature = temperature
        self.stages = model.stages
        self.heads = model.heads

    def forward(
        self, inputs: torch.Tensor, logits_mask: torch.Tensor, positive_mask: torch.Tensor
    ) -> torch.Tensor:
        hidden = inputs
        for index in range(self.plan.first_trained, self.plan.readout_stage + 1):
            hidden = self.stages[index - 1](hidden)
        projections = self.heads[self.plan.readout_stage - 1](pool(self.spec, hidden))  # [2B, D]
        return contrastive_loss_with_masks(projections, logits_mask, positive_mask, self.temperature)


class FrozenPrefix(nn.Module):
    """The frozen leading stages in eval mode: images in, the last frozen stage's raw output out."""

    def __init__(self, model: StagedModel, plan: StagePlan) -> None:
        super().__init__()
        self.plan = plan
        self.stages = model.stages

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        hidden = images
        for index in range(1, self.plan.frozen_stages + 1):
            hidden = self.stages[index - 1](hidden)
        return hidden
