"""The staged SimCLR model: S encoder stages plus one projection head per stage.

Parameter names are the contract between training, merging and the network: every tensor of stage ``s``
(1-based) lives under ``stages.{s-1}.`` and its head under ``heads.{s-1}.``. An update for a stage is
exactly the tensors under those prefixes.

Each stage and head is built under its own seed derived from (federation seed, kind, stage), so a peer
joining at stage 3 builds the same initial block 3 as everyone else without downloading it, and adding
a stage never changes the weights of the others.
"""

from __future__ import annotations

import torch
from lightly.models.modules import SimCLRProjectionHead
from torch import nn

from models.resnet import build_resnet_stage, pool_feature_map
from models.seeding import derive_seed, seeded_global_generator
from models.spec import EncoderSpec
from models.vit import PatchEmbedding, VisionTransformerStage, pool_tokens


def stage_prefix(stage: int) -> str:
    """Name prefix of encoder stage ``stage`` (1-based)."""
    return f"stages.{stage - 1}."


def head_prefix(stage: int) -> str:
    """Name prefix of the projection head of stage ``stage`` (1-based)."""
    return f"heads.{stage - 1}."


class StagedModel(nn.Module):
    """Encoder stages and per-stage projection heads, with readout after any stage."""

    def __init__(self, spec: EncoderSpec, federation_seed: int) -> None:
        super().__init__()
        self.spec = spec
        stages: list[nn.Module] = []
        heads: list[nn.Module] = []
        for stage in range(1, spec.stages + 1):
            with seeded_global_generator(derive_seed(federation_seed, "stage", stage)):
                stages.append(_build_stage(spec, stage))
            with seeded_global_generator(derive_seed(federation_seed, "head", stage)):
                feature_dim = spec.feature_dim(stage)
                heads.append(
                    SimCLRProjectionHead(
                        feature_dim, spec.projection_hidden_width(stage), spec.projection_dim
                    )
                )
        self.stages = nn.ModuleList(stages)
        self.heads = nn.ModuleList(heads)

    def pool(self, hidden: torch.Tensor) -> torch.Tensor:
        """Features from a stage's raw output: [B, feature_dim]."""
        if self.spec.architecture == "resnet":
            return pool_feature_map(hidden)
        return pool_tokens(hidden)

    def hidden(self, images: torch.Tensor, through_stage: int) -> torch.Tensor:
        """Raw output of stage ``through_stage`` (feature map or tokens)."""
        hidden = images
        for stage in self.stages[:through_stage]:
            hidden = stage(hidden)
        return hidden

    def features(self, images: torch.Tensor, through_stage: int | None = None) -> torch.Tensor:
        """Pooled encoder features after ``through_stage`` (default: the last stage)."""
        last = self.spec.stages if through_stage is None else through_stage
        return self.pool(self.hidden(images, last))

    def project(self, features: torch.Tensor, stage: int) -> torch.Tensor:
        """Head ``stage`` applied to pooled features: [B, projection_dim]."""
        head: nn.Module = self.heads[stage - 1]
        projected: torch.Tensor = head(features)
        return projected


def _build_stage(spec: EncoderSpec, stage: int) -> nn.Module:
    if spec.architecture == "resnet":
        return build_resnet_stage(stage, spec.image_channels, spec.widths)
    patch_embedding = (
        PatchEmbedding(spec.image_channels, spec.image_size, spec.patch_size, spec.embed_dim)
        if stage == 1
        else None
    )
    module = VisionTransformerStage(
        spec.depth // spec.stages, spec.embed_dim, spec.attention_heads, spec.mlp_ratio, patch_embedding
    )
    for submodule in module.modules():
        if isinstance(submodule, nn.Linear):
            nn.init.trunc_normal_(submodule.weight, std=0.02)
            nn.init.zeros_(submodule.bias)
    return module
