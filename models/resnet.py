"""A ResNet-style CNN for small images (28-32 px), split into one residual block per stage.

Stage 1 is a 3x3 stem plus a residual block at full resolution; each later stage is a residual block
that halves the resolution and changes the width. Widths grow with depth, so later stages hold most of
the parameters: layer-wise training saves less here than on a transformer, where every stage costs
the same.
"""

from __future__ import annotations

import torch
from torch import nn


class ResidualBlock(nn.Module):
    """The basic two-convolution residual block of He et al. (2016), with a projection shortcut."""

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.norm1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.norm2 = nn.BatchNorm2d(out_channels)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        hidden = torch.relu(self.norm1(self.conv1(inputs)))
        hidden = self.norm2(self.conv2(hidden))
        return torch.relu(hidden + self.shortcut(inputs))


class ResNetStemStage(nn.Module):
    """Stage 1: stem convolution and a residual block at the input resolution."""

    def __init__(self, image_channels: int, width: int) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(image_channels, width, 3, padding=1, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(inplace=True),
        )
        self.block = ResidualBlock(width, width, stride=1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        features: torch.Tensor = self.block(self.stem(images))  # [B, width, H, W]
        return features


def build_resnet_stage(stage: int, image_channels: int, widths: tuple[int, ...]) -> nn.Module:
    """The module of ``stage`` (1-based): the stem stage, or a downsampling residual block."""
    if stage == 1:
        return ResNetStemStage(image_channels, widths[0])
    return ResidualBlock(widths[stage - 2], widths[stage - 1], stride=2)


def pool_feature_map(feature_map: torch.Tensor) -> torch.Tensor:
    """Global average pooling: [B, C, H, W] -> [B, C]."""
    return feature_map.mean(dim=(2, 3))
