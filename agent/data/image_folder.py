"""A folder of images sorted into one sub-folder per class, the layout of torchvision's ``ImageFolder``.

This is how a user brings their own data to an edge device: ``root/cat/001.jpg``, ``root/dog/a.png``...
The class of an image is the name of the sub-folder directly under ``root`` that holds it (images may sit
deeper inside it); classes are numbered in sorted name order, so every peer that holds the same class
folders agrees on the labels without exchanging them.

Every image is decoded with Pillow, turned upright according to its EXIF orientation (phone photos),
converted to RGB or grey, then scaled and centre-cropped to a square (``ImageOps.fit``), which keeps the
aspect ratio instead of stretching. All images are decoded up front into one ``uint8`` tensor: a folder
that fits on an edge device at training resolution fits in its memory.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np
import torch
from PIL import Image, ImageOps

from agent.data.dataset import ImageDataset
from agent.errors import ConfigurationError, DataError

IMAGE_EXTENSIONS: frozenset[str] = frozenset(
    {".bmp", ".gif", ".jpeg", ".jpg", ".pgm", ".png", ".ppm", ".tif", ".tiff", ".webp"}
)
"""Files with other extensions (notes, ``.DS_Store``, labels files) are ignored, as ImageFolder does."""

ColorMode = Literal["rgb", "grey"]
_PIL_MODES: dict[str, str] = {"rgb": "RGB", "grey": "L"}


def find_class_folders(root: Path) -> list[Path]:
    """The non-hidden sub-folders of ``root``, sorted by name: their order defines the label numbers."""
    if not root.is_dir():
        raise DataError(f"{root}: missing: no such directory")
    folders = sorted(
        (entry for entry in root.iterdir() if entry.is_dir() and not entry.name.startswith(".")),
        key=lambda entry: entry.name,
    )
    if not folders:
        raise DataError(f"{root}: empty: no class sub-folders (expected root/<class>/<image>)")
    return folders


def find_images(class_folder: Path) -> list[Path]:
    """The image files anywhere under ``class_folder``, in sorted path order for reproducible indices."""
    return sorted(
        path
        for path in class_folder.rglob("*")
        if path.is_file()
        and path.suffix.lower() in IMAGE_EXTENSIONS
        and not any(part.startswith(".") for part in path.relative_to(class_folder).parts)
    )


def read_image(path: Path, image_size: int, color_mode: ColorMode) -> np.ndarray:
    """Decode one image into a ``uint8`` array shaped ``[channels, image_size, image_size]``.

    Raises:
        DataError: Pillow cannot open or fully decode the file (not an image, truncated, corrupt, too
            large). The message names ``path``.
    """
    try:
        with Image.open(path) as opened:
            opened.load()
            image = ImageOps.exif_transpose(opened)
            if image.mode in ("P", "PA", "LA", "La", "RGBa") or "transparency" in image.info:
                # Palette and alpha images go through RGBA, the one conversion Pillow does without
                # warning about transparency; the alpha channel is then dropped.
                image = image.convert("RGBA")
            image = image.convert(_PIL_MODES[color_mode])
            image = ImageOps.fit(image, (image_size, image_size), method=Image.Resampling.BICUBIC)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise DataError(f"{path}: unreadable image ({type(exc).__name__}: {exc})") from exc
    pixels = np.asarray(image, dtype=np.uint8)
    # Pillow gives [H, W] for grey and [H, W, C] for colour; torch wants channels first.
    pixels = pixels[np.newaxis, :, :] if pixels.ndim == 2 else pixels.transpose(2, 0, 1)
    return np.ascontiguousarray(pixels)


def load_image_folder(
    root: str | Path,
    image_size: int = 32,
    color_mode: ColorMode = "rgb",
) -> ImageDataset:
    """Read every image under ``root/<class>/`` into one data set.

    Args:
        root: the folder holding one sub-folder per class.
        image_size: side of the square every image is scaled and centre-cropped to.
        color_mode: ``"rgb"`` for 3 channels, ``"grey"`` for 1.

    Returns:
        An :class:`ImageDataset` named ``"image-folder:<root folder name>"``; samples are ordered by class,
        then by path.

    Raises:
        ConfigurationError: ``image_size`` is not a positive integer or ``color_mode`` is unknown.
        DataError: ``root`` is missing or has no class folders, a class folder holds no images, or an
            image cannot be read (the message names it).
    """
    if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 1:
        raise ConfigurationError(f"image-folder: image_size must be a positive integer, got {image_size!r}")
    if color_mode not in _PIL_MODES:
        raise ConfigurationError(
            f"image-folder: unknown color_mode {color_mode!r}; expected one of {sorted(_PIL_MODES)}"
        )
    root_path = Path(root)
    class_folders = find_class_folders(root_path)
    channels = 3 if color_mode == "rgb" else 1
    images: list[np.ndarray] = []
    labels: list[int] = []
    for label, class_folder in enumerate(class_folders):
        image_paths = find_images(class_folder)
        if not image_paths:
            raise DataError(
                f"{class_folder}: empty class folder: no files with an image extension "
                f"({', '.join(sorted(IMAGE_EXTENSIONS))})"
            )
        for image_path in image_paths:
            images.append(read_image(image_path, image_size, color_mode))
            labels.append(label)
    return ImageDataset(
        images=torch.from_numpy(np.stack(images)).reshape(-1, channels, image_size, image_size),
        labels=torch.tensor(labels, dtype=torch.int64),
        classes=tuple(folder.name for folder in class_folders),
        name=f"image-folder:{root_path.name}",
    )
