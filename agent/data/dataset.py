"""The one in-memory representation of an image data set that the rest of layerfed consumes.

Every reader (Fashion-MNIST, CIFAR-10, an image folder) returns an :class:`ImageDataset`, so training,
partitioning and evaluation never depend on where the pixels came from. Pixels stay ``uint8``: a
60,000-image set takes 47 MB instead of 188 MB as float32, which matters on a Raspberry Pi, and the
conversion to float happens per batch, where the augmentations run anyway.

Labels are kept only to partition the data across clients (to simulate non-IID splits) and to evaluate
the learnt representation (linear probe, k-NN); self-supervised training must never read them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from agent.errors import ConfigurationError, DataError


@dataclass(frozen=True, eq=False)
class ImageDataset:
    """Images, their class labels and the class names of one split of one data set.

    ``eq=False`` because element-wise tensor comparison has no single truth value; two data sets are
    equal only if they are the same object.

    Attributes:
        images: ``uint8`` pixels, shape ``[N, C, H, W]`` (channels first, as torch convolutions expect).
        labels: ``int64`` class indices, shape ``[N]``, each in ``range(len(classes))``.
        classes: human-readable class names; ``classes[label]`` names a label.
        name: where the data came from, e.g. ``"fashion-mnist/train"``; shown in logs and reports.
    """

    images: torch.Tensor
    labels: torch.Tensor
    classes: tuple[str, ...]
    name: str

    def __post_init__(self) -> None:
        """Reject malformed contents at construction, so that later code can rely on them unchecked."""
        if self.images.dtype != torch.uint8:
            raise DataError(f"{self.name}: images must be uint8, got {self.images.dtype}")
        if self.images.dim() != 4:
            raise DataError(
                f"{self.name}: images must have shape [N, C, H, W], got {list(self.images.shape)}"
            )
        if self.labels.dtype != torch.int64:
            raise DataError(f"{self.name}: labels must be int64, got {self.labels.dtype}")
        if self.labels.dim() != 1:
            raise DataError(f"{self.name}: labels must have shape [N], got {list(self.labels.shape)}")
        if self.images.shape[0] != self.labels.shape[0]:
            raise DataError(f"{self.name}: {self.images.shape[0]} images but {self.labels.shape[0]} labels")
        if not self.classes:
            raise DataError(f"{self.name}: a data set needs at least one class name")
        if self.labels.numel() > 0:
            smallest, largest = int(self.labels.min()), int(self.labels.max())
            if smallest < 0 or largest >= len(self.classes):
                raise DataError(
                    f"{self.name}: labels span [{smallest}, {largest}] but there are "
                    f"{len(self.classes)} classes"
                )

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def channels(self) -> int:
        """1 for grey, 3 for RGB: the encoder's first layer is built from it."""
        return int(self.images.shape[1])

    @property
    def image_size(self) -> tuple[int, int]:
        """``(height, width)`` of every image."""
        return int(self.images.shape[2]), int(self.images.shape[3])

    def subset(self, indices: torch.Tensor | Sequence[int]) -> ImageDataset:
        """Return the samples at ``indices`` (in that order) as a new data set with copied storage.

        This is how a client's shard is cut from the full set after partitioning. The copy lets the
        full set be freed once every shard is cut.

        Raises:
            ConfigurationError: ``indices`` is not one-dimensional integers within ``range(len(self))``.
        """
        index_tensor = torch.as_tensor(indices)
        if index_tensor.numel() == 0:
            index_tensor = index_tensor.reshape(0).to(torch.int64)
        if index_tensor.dim() != 1 or index_tensor.dtype not in (
            torch.int64,
            torch.int32,
            torch.int16,
            torch.int8,
            torch.uint8,
        ):
            raise ConfigurationError(
                f"{self.name}: subset indices must be a 1-D integer tensor, got "
                f"{index_tensor.dtype} with shape {list(index_tensor.shape)}"
            )
        index_tensor = index_tensor.to(torch.int64)
        if index_tensor.numel() > 0:
            smallest, largest = int(index_tensor.min()), int(index_tensor.max())
            if smallest < 0 or largest >= len(self):
                raise ConfigurationError(
                    f"{self.name}: subset indices span [{smallest}, {largest}] but the data set has "
                    f"{len(self)} samples"
                )
        return ImageDataset(
            images=self.images.index_select(0, index_tensor),
            labels=self.labels.index_select(0, index_tensor),
            classes=self.classes,
            name=self.name,
        )
