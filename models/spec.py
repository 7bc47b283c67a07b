"""The encoder specification: everything needed to rebuild the same model on any device.

Peers agree on a model through its specification (its digest is recorded on the coordinator contract) and
a federation seed; from those two every peer builds bit-identical initial weights for every stage.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, fields
from typing import Any, Literal


class ModelSpecError(ValueError):
    """A specification that names no buildable encoder.

    ``models`` imports nothing of ``agent`` (``agent`` builds on ``models``, never the other way round), so
    the layer that reads a specification from a user (``agent.learning.training.TrainingConfig.from_dict``)
    turns this into its configuration error.
    """


Architecture = Literal["resnet", "vit"]
ARCHITECTURES: tuple[Architecture, ...] = ("resnet", "vit")


@dataclass(frozen=True)
class EncoderSpec:
    """Shape of a staged encoder and its per-stage SimCLR projection heads.

    ``projection_hidden_dim`` defaults to the feature width, as in SimCLR; a wide head would dominate
    what a layer-wise update carries.

    ``stages`` is the number of training stages S. For ``resnet`` each stage is one residual block whose
    output width is ``widths[s-1]``. For ``vit`` the ``depth`` transformer blocks are grouped into S equal
    stages (the patch embedding belongs to stage 1), so every stage costs the same: that is where
    layer-wise training saves the most memory.
    """

    architecture: Architecture = "resnet"
    stages: int = 4
    image_channels: int = 1
    image_size: int = 28
    widths: tuple[int, ...] = (32, 64, 128, 256)
    embed_dim: int = 192
    depth: int = 12
    attention_heads: int = 3
    patch_size: int = 4
    mlp_ratio: float = 4.0
    projection_hidden_dim: int | None = None
    projection_dim: int = 128

    def __post_init__(self) -> None:
        if self.architecture not in ARCHITECTURES:
            raise ModelSpecError(f"architecture must be one of {ARCHITECTURES}, not {self.architecture!r}")
        if self.stages < 1:
            raise ModelSpecError(f"stages must be at least 1, not {self.stages}")
        if self.image_channels not in (1, 3):
            raise ModelSpecError(f"image_channels must be 1 or 3, not {self.image_channels}")
        if self.architecture == "resnet" and len(self.widths) != self.stages:
            raise ModelSpecError(
                f"resnet needs one width per stage: {len(self.widths)} widths for {self.stages} stages"
            )
        if self.architecture == "vit":
            if self.depth % self.stages != 0:
                raise ModelSpecError(f"vit depth {self.depth} is not divisible into {self.stages} stages")
            if self.embed_dim % self.attention_heads != 0:
                raise ModelSpecError(
                    f"embed_dim {self.embed_dim} is not divisible by attention_heads {self.attention_heads}"
                )
            if self.image_size % self.patch_size != 0:
                raise ModelSpecError(
                    f"image_size {self.image_size} is not divisible by patch_size {self.patch_size}"
                )

    def feature_dim(self, stage: int) -> int:
        """Width of the pooled features after ``stage`` (1-based)."""
        if self.architecture == "resnet":
            return self.widths[stage - 1]
        return self.embed_dim

    def projection_hidden_width(self, stage: int) -> int:
        """Hidden width of head ``stage``: as SimCLR, the feature width unless set explicitly."""
        return self.projection_hidden_dim or self.feature_dim(stage)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> EncoderSpec:
        known = {field.name for field in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ModelSpecError(f"unknown model spec keys: {', '.join(unknown)}")
        converted = dict(values)
        if "widths" in converted:
            converted["widths"] = tuple(converted["widths"])
        return cls(**converted)

    def digest(self) -> str:
        """SHA-256 of the canonical JSON form: the value recorded on chain to pin the model shape."""
        canonical = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()
