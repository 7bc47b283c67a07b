#!/usr/bin/env python3
"""Time SimCLR augmentation of one batch two ways: kornia on the batch tensor versus lightly per image.

    .venv/bin/python scripts/augmentation_speed.py --batch 256 --repeats 5

This is the measurement behind the choice of kornia in ``models/augmentation.py``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import cast

import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from models.augmentation import SimCLRAugmentation


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    arguments = parser.parse_args()
    torch.set_num_threads(arguments.threads)
    from lightly.transforms.simclr_transform import SimCLRTransform

    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (arguments.batch, 1, 28, 28), generator=generator, dtype=torch.uint8)
    kornia_augmentation = SimCLRAugmentation(1, 28)
    lightly_transform = SimCLRTransform(input_size=28, gaussian_blur=0.0, min_scale=0.2)
    pictures = [Image.fromarray(image[0].numpy()).convert("RGB") for image in images]

    def kornia_views() -> None:
        kornia_augmentation(images)
        kornia_augmentation(images)

    def lightly_views() -> None:
        # Each call gives both views, as tensors (the transform ends with ToTensor).
        views = [cast(list[torch.Tensor], lightly_transform(picture)) for picture in pictures]
        torch.stack([view[0] for view in views])
        torch.stack([view[1] for view in views])

    for name, function in (("kornia, batched", kornia_views), ("lightly, per image", lightly_views)):
        function()  # warm-up
        seconds = []
        for _ in range(arguments.repeats):
            started = time.perf_counter()
            function()
            seconds.append(time.perf_counter() - started)
        median = statistics.median(seconds) * 1000
        print(f"{name:20s} two views of {arguments.batch} images: median {median:.1f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
