"""SimCLR augmentations for small images, applied per sample on whole batches with kornia.

SimCLR (Chen et al., 2020) learns by pulling two random views of the same image together. For 28-32 px
images the views are a random resized crop, a horizontal flip and colour jitter (brightness and contrast
only for grey images; saturation, hue and random greyscale for colour). Gaussian blur is left out, as in
SimCLR's CIFAR-10 setup, because it destroys most of a 32 px image.

Batched kornia augmentation on tensors was chosen over lightly's per-image PIL transforms because it is
much faster on an edge CPU (see the README's measurement), and it draws from torch's generator, so a seed
makes a view reproducible.
"""

from __future__ import annotations

import kornia.augmentation as augmentation
import torch
from torch import nn

PIXEL_MEAN = 0.5
PIXEL_STANDARD_DEVIATION = 0.25


class SimCLRAugmentation(nn.Module):
    """Turns a uint8 batch [B, C, H, W] into a normalised, randomly augmented float batch."""

    def __init__(self, image_channels: int, image_size: int, minimum_crop_scale: float = 0.2) -> None:
        super().__init__()
        steps: list[nn.Module] = [
            augmentation.RandomResizedCrop((image_size, image_size), scale=(minimum_crop_scale, 1.0)),
            augmentation.RandomHorizontalFlip(),
        ]
        if image_channels == 3:
            steps.append(augmentation.ColorJitter(0.4, 0.4, 0.4, 0.1, p=0.8))
            steps.append(augmentation.RandomGrayscale(p=0.2))
        else:
            steps.append(augmentation.ColorJitter(0.4, 0.4, 0.0, 0.0, p=0.8))
        self.pipeline = nn.Sequential(*steps)
        self.normalise = Normalisation(image_channels)

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        augmented: torch.Tensor = self.pipeline(images.float() / 255.0)
        normalised: torch.Tensor = self.normalise(augmented)
        return normalised


class Normalisation(nn.Module):
    """Maps [0, 1] pixels to roughly zero mean and unit variance (0.5 / 0.25 per channel)."""

    def __init__(self, image_channels: int) -> None:
        super().__init__()
        self.mean = nn.Buffer(torch.full((1, image_channels, 1, 1), PIXEL_MEAN))
        self.std = nn.Buffer(torch.full((1, image_channels, 1, 1), PIXEL_STANDARD_DEVIATION))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return (images - self.mean) / self.std


def prepare_for_evaluation(images: torch.Tensor) -> torch.Tensor:
    """The deterministic view used for evaluation: scale and normalise, no augmentation."""
    return (images.float() / 255.0 - PIXEL_MEAN) / PIXEL_STANDARD_DEVIATION
