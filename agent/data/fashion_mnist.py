"""Fashion-MNIST (Xiao, Rasul and Vollgraf, 2017) read from its four idx ``.gz`` files.

Fashion-MNIST is the one labelled natural-image set that installs from a package registry on the
target machines (Debian's ``dataset-fashion-mnist``, also on Raspberry Pi OS), so it is the default data
set: no download step, no network at start-up.

The idx format (http://yann.lecun.com/exdb/mnist/) is parsed here with numpy rather than through
torchvision, so that a truncated or corrupt file fails with a :class:`~agent.errors.DataError` that
names the file and the problem instead of a bare ``EOFError`` or a silently short tensor.
"""

from __future__ import annotations

import gzip
import math
import zlib
from pathlib import Path
from typing import Literal

import numpy as np
import numpy.typing as npt
import torch

from agent.data.dataset import ImageDataset
from agent.errors import ConfigurationError, DataError

DEFAULT_FASHION_MNIST_DIRECTORY = Path("/usr/share/datasets/fashion-mnist")
"""Where Debian's ``dataset-fashion-mnist`` package installs the files."""

FASHION_MNIST_CLASSES: tuple[str, ...] = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)

IDX_IMAGES_MAGIC = 0x00000803
"""Unsigned bytes, three dimensions (count, rows, columns)."""

IDX_LABELS_MAGIC = 0x00000801
"""Unsigned bytes, one dimension (count)."""

FASHION_MNIST_IMAGE_SIZE = 28

_SPLIT_FILES: dict[str, tuple[str, str]] = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}


def read_idx_file(path: Path, expected_magic: int) -> npt.NDArray[np.uint8]:
    """Decompress and parse one gzipped idx file of unsigned bytes.

    The header is a big-endian magic number whose low byte is the number of dimensions, followed by one
    big-endian ``uint32`` per dimension. The payload must hold exactly the product of those dimensions:
    fewer bytes means a truncated file, more means the file is not what its header claims.

    Raises:
        DataError: the file is missing or unreadable, is not valid gzip, ends early, has another magic
            number, or its payload size disagrees with its header. The message names ``path``.
    """
    raw = _decompress(path)
    dimension_count = expected_magic & 0xFF
    header_size = 4 + 4 * dimension_count
    if len(raw) < 4:
        raise DataError(f"{path}: truncated: {len(raw)} bytes, too short for an idx magic number")
    magic = int.from_bytes(raw[:4], "big")
    if magic != expected_magic:
        raise DataError(f"{path}: wrong magic number 0x{magic:08x}, expected 0x{expected_magic:08x}")
    if len(raw) < header_size:
        raise DataError(f"{path}: truncated: {len(raw)} bytes, the idx header alone needs {header_size}")
    dimensions = tuple(int(size) for size in np.frombuffer(raw, dtype=">u4", count=dimension_count, offset=4))
    expected_payload = math.prod(dimensions)
    payload = len(raw) - header_size
    if payload < expected_payload:
        raise DataError(
            f"{path}: truncated: header declares dimensions {dimensions} ({expected_payload} bytes) "
            f"but only {payload} bytes follow"
        )
    if payload > expected_payload:
        raise DataError(
            f"{path}: {payload - expected_payload} unexpected bytes after the {expected_payload} that "
            f"the header's dimensions {dimensions} declare"
        )
    # Copy: frombuffer over immutable bytes is read-only, and torch warns about wrapping such arrays.
    return np.frombuffer(raw, dtype=np.uint8, offset=header_size).reshape(dimensions).copy()


def _decompress(path: Path) -> bytes:
    """Read a whole gzip file, translating each way it can fail into a DataError naming ``path``."""
    if not path.is_file():
        raise DataError(f"{path}: missing: no such file")
    try:
        with gzip.open(path, "rb") as stream:
            return stream.read()
    except EOFError as exc:
        raise DataError(f"{path}: truncated: the gzip stream ends early ({exc})") from exc
    except gzip.BadGzipFile as exc:
        raise DataError(f"{path}: corrupt: not a valid gzip file ({exc})") from exc
    except zlib.error as exc:
        raise DataError(f"{path}: corrupt: the compressed data is damaged ({exc})") from exc
    except OSError as exc:
        raise DataError(f"{path}: unreadable ({exc})") from exc


def load_fashion_mnist(
    directory: str | Path = DEFAULT_FASHION_MNIST_DIRECTORY,
    split: Literal["train", "test"] = "train",
) -> ImageDataset:
    """Load the 60,000-image training split or the 10,000-image test split.

    Returns:
        An :class:`ImageDataset` of ``uint8`` images shaped ``[N, 1, 28, 28]`` named
        ``"fashion-mnist/<split>"``.

    Raises:
        ConfigurationError: ``split`` is neither ``"train"`` nor ``"test"``.
        DataError: a file is missing, truncated or corrupt, the images are not 28x28, the image and
            label counts disagree, or a label is outside 0-9.
    """
    if split not in _SPLIT_FILES:
        raise ConfigurationError(f"fashion-mnist: unknown split {split!r}; expected 'train' or 'test'")
    images_name, labels_name = _SPLIT_FILES[split]
    images_path = Path(directory) / images_name
    labels_path = Path(directory) / labels_name
    images = read_idx_file(images_path, IDX_IMAGES_MAGIC)
    labels = read_idx_file(labels_path, IDX_LABELS_MAGIC)
    if images.shape[1:] != (FASHION_MNIST_IMAGE_SIZE, FASHION_MNIST_IMAGE_SIZE):
        raise DataError(
            f"{images_path}: images are {images.shape[1]}x{images.shape[2]}, Fashion-MNIST's are "
            f"{FASHION_MNIST_IMAGE_SIZE}x{FASHION_MNIST_IMAGE_SIZE}"
        )
    if images.shape[0] != labels.shape[0]:
        raise DataError(
            f"{images_path} holds {images.shape[0]} images but {labels_path} holds {labels.shape[0]} labels"
        )
    if labels.size > 0 and int(labels.max()) >= len(FASHION_MNIST_CLASSES):
        raise DataError(
            f"{labels_path}: label {int(labels.max())} is outside 0-{len(FASHION_MNIST_CLASSES) - 1}"
        )
    return ImageDataset(
        images=torch.from_numpy(images).unsqueeze(1),
        labels=torch.from_numpy(labels.astype(np.int64)),
        classes=FASHION_MNIST_CLASSES,
        name=f"fashion-mnist/{split}",
    )
