"""Load a data set by name, the one entry point the CLI and the engine use.

Names, paths and options come from configuration files and command lines, so every mistake in them is
reported as a :class:`~agent.errors.ConfigurationError` that lists what would have been accepted.

Splits:
    ``fashion-mnist`` and ``cifar10`` ship their own train and test splits. An ``image-folder`` has no
    split of its own: ``test`` is a class-stratified held-out part of it, ``test_fraction`` (default
    0.2) of every class chosen by a generator seeded with ``split_seed`` (default 0), and ``train`` is
    the rest. The same folder, fraction and seed always give the same, disjoint pair.

Limit:
    ``limit=N`` keeps a class-stratified N samples of the chosen split (each class in proportion to its
    frequency, its first samples in file order; see :func:`stratified_limit_indices`). It is
    deterministic and uses no seed, so small runs and tests are cheap and repeatable.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from agent.data.cifar10 import load_cifar10
from agent.data.dataset import ImageDataset
from agent.data.fashion_mnist import DEFAULT_FASHION_MNIST_DIRECTORY, load_fashion_mnist
from agent.data.image_folder import load_image_folder
from agent.data.splits import held_out_split_indices, stratified_limit_indices
from agent.errors import ConfigurationError

DATASET_NAMES: tuple[str, ...] = ("fashion-mnist", "cifar10", "image-folder")
SPLITS: tuple[str, ...] = ("train", "test")

DEFAULT_IMAGE_SIZE = 32
DEFAULT_TEST_FRACTION = 0.2
DEFAULT_SPLIT_SEED = 0

_IMAGE_FOLDER_OPTIONS: tuple[str, ...] = ("image_size", "color_mode", "test_fraction", "split_seed")


def load_dataset(
    name: str,
    path: str | Path | None,
    split: Literal["train", "test"],
    *,
    limit: int | None = None,
    **options: object,
) -> ImageDataset:
    """Load split ``split`` of data set ``name`` from ``path``, optionally cut to ``limit`` samples.

    Args:
        name: ``"fashion-mnist"``, ``"cifar10"`` or ``"image-folder"``.
        path: the data's directory. ``None`` means the installed Debian package for ``fashion-mnist``;
            ``cifar10`` and ``image-folder`` cannot be installed, so they require a path.
        split: ``"train"`` or ``"test"`` (for ``image-folder``, see the module docstring).
        limit: keep at most this many samples, class-stratified and deterministic.
        options: ``image-folder`` only: ``image_size`` (int, default 32), ``color_mode`` (``"rgb"`` or
            ``"grey"``), ``test_fraction`` (float in [0, 1), default 0.2), ``split_seed`` (int, default 0).

    Raises:
        ConfigurationError: unknown name, split or option, a missing path, or a bad option value.
        DataError: the files themselves are missing, truncated or corrupt.
    """
    if split not in SPLITS:
        raise ConfigurationError(f"unknown split {split!r}; valid splits: {', '.join(SPLITS)}")
    if name == "fashion-mnist":
        _reject_options(name, options, ())
        dataset = load_fashion_mnist(DEFAULT_FASHION_MNIST_DIRECTORY if path is None else path, split)
    elif name == "cifar10":
        _reject_options(name, options, ())
        dataset = load_cifar10(_require_path(name, path), split)
    elif name == "image-folder":
        dataset = _load_image_folder_split(_require_path(name, path), split, options)
    else:
        raise ConfigurationError(f"unknown data set {name!r}; valid names: {', '.join(DATASET_NAMES)}")
    if limit is not None:
        dataset = dataset.subset(stratified_limit_indices(dataset.labels, limit))
    return dataset


def _load_image_folder_split(path: Path, split: str, options: dict[str, object]) -> ImageDataset:
    _reject_options("image-folder", options, _IMAGE_FOLDER_OPTIONS)
    image_size = options.get("image_size", DEFAULT_IMAGE_SIZE)
    color_mode = options.get("color_mode", "rgb")
    test_fraction = options.get("test_fraction", DEFAULT_TEST_FRACTION)
    split_seed = options.get("split_seed", DEFAULT_SPLIT_SEED)
    if not isinstance(image_size, int):
        raise ConfigurationError(f"image-folder: image_size must be an integer, got {image_size!r}")
    if color_mode not in ("rgb", "grey"):
        raise ConfigurationError(f"image-folder: color_mode must be 'rgb' or 'grey', got {color_mode!r}")
    if not isinstance(test_fraction, int | float):
        raise ConfigurationError(f"image-folder: test_fraction must be a number, got {test_fraction!r}")
    if not isinstance(split_seed, int):
        raise ConfigurationError(f"image-folder: split_seed must be an integer, got {split_seed!r}")
    whole = load_image_folder(
        path, image_size=image_size, color_mode="rgb" if color_mode == "rgb" else "grey"
    )
    train_indices, test_indices = held_out_split_indices(whole.labels, float(test_fraction), split_seed)
    return whole.subset(train_indices if split == "train" else test_indices)


def _require_path(name: str, path: str | Path | None) -> Path:
    if path is None:
        raise ConfigurationError(f"{name}: a path to the data is required (it cannot be installed here)")
    return Path(path)


def _reject_options(name: str, options: dict[str, object], accepted: tuple[str, ...]) -> None:
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        accepted_text = ", ".join(accepted) if accepted else "none"
        raise ConfigurationError(f"{name}: unknown option(s) {', '.join(unknown)}; accepted: {accepted_text}")
