"""ImageDataset validation and subsetting, the stratified limit, and the package's public surface."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest
import torch

import agent.data
from agent.data import ImageDataset, held_out_split_indices, stratified_limit_indices
from agent.errors import ConfigurationError, DataError

PACKAGE_DIRECTORY = Path(agent.data.__file__).parent


def make_dataset(count: int = 6, classes: int = 3) -> ImageDataset:
    images = torch.arange(count, dtype=torch.uint8).reshape(count, 1, 1, 1).expand(count, 1, 2, 2).clone()
    labels = torch.arange(count, dtype=torch.int64) % classes
    return ImageDataset(images, labels, tuple(f"class{index}" for index in range(classes)), "toy")


def test_valid_dataset_reports_its_shape() -> None:
    dataset = make_dataset()
    assert len(dataset) == 6
    assert dataset.channels == 1
    assert dataset.image_size == (2, 2)


@pytest.mark.parametrize(
    ("images", "labels", "message"),
    [
        (torch.zeros(2, 1, 2, 2, dtype=torch.float32), torch.zeros(2, dtype=torch.int64), "uint8"),
        (torch.zeros(2, 2, 2, dtype=torch.uint8), torch.zeros(2, dtype=torch.int64), r"\[N, C, H, W\]"),
        (torch.zeros(2, 1, 2, 2, dtype=torch.uint8), torch.zeros(2, dtype=torch.int32), "int64"),
        (torch.zeros(2, 1, 2, 2, dtype=torch.uint8), torch.zeros(2, 1, dtype=torch.int64), r"\[N\]"),
        (
            torch.zeros(2, 1, 2, 2, dtype=torch.uint8),
            torch.zeros(3, dtype=torch.int64),
            "2 images but 3 labels",
        ),
        (torch.zeros(2, 1, 2, 2, dtype=torch.uint8), torch.tensor([0, 3]), r"span \[0, 3\] but there are 3"),
        (torch.zeros(2, 1, 2, 2, dtype=torch.uint8), torch.tensor([-1, 0]), r"span \[-1, 0\]"),
    ],
)
def test_malformed_contents_are_rejected(images: torch.Tensor, labels: torch.Tensor, message: str) -> None:
    with pytest.raises(DataError, match=message):
        ImageDataset(images, labels, ("a", "b", "c"), "bad")


def test_no_class_names_is_rejected() -> None:
    with pytest.raises(DataError, match="at least one class"):
        ImageDataset(torch.zeros(0, 1, 2, 2, dtype=torch.uint8), torch.zeros(0, dtype=torch.int64), (), "bad")


def test_dataset_is_frozen() -> None:
    dataset = make_dataset()
    with pytest.raises(AttributeError):
        dataset.name = "renamed"  # type: ignore[misc]


def test_subset_keeps_the_given_order_and_copies() -> None:
    dataset = make_dataset()
    part = dataset.subset(torch.tensor([4, 1]))
    assert part.images[:, 0, 0, 0].tolist() == [4, 1]
    assert part.labels.tolist() == [1, 1]
    assert part.classes == dataset.classes
    part.images[0] = 0
    assert int(dataset.images[4, 0, 0, 0]) == 4


def test_subset_accepts_a_list_and_an_empty_selection() -> None:
    dataset = make_dataset()
    assert dataset.subset([0, 5]).labels.tolist() == [0, 2]
    assert len(dataset.subset([])) == 0


@pytest.mark.parametrize("indices", [[6], [-1], [[0, 1]], [0.5]])
def test_subset_rejects_bad_indices(indices: list[object]) -> None:
    with pytest.raises(ConfigurationError, match="subset indices"):
        make_dataset().subset(indices)  # type: ignore[arg-type]


def test_stratified_limit_keeps_class_shares_and_is_exact() -> None:
    labels = torch.tensor([0] * 60 + [1] * 30 + [2] * 10)
    chosen = stratified_limit_indices(labels, 10)
    assert torch.bincount(labels[chosen]).tolist() == [6, 3, 1]
    # The first samples of each class, sorted.
    assert chosen.tolist() == [0, 1, 2, 3, 4, 5, 60, 61, 62, 90]
    assert len(stratified_limit_indices(labels, 7)) == 7
    assert torch.equal(stratified_limit_indices(labels, 500), torch.arange(100))


@pytest.mark.parametrize("limit", [0, -5, True])
def test_stratified_limit_rejects_non_positive_limits(limit: int) -> None:
    with pytest.raises(ConfigurationError, match="limit"):
        stratified_limit_indices(torch.zeros(5, dtype=torch.int64), limit)


def test_held_out_split_is_disjoint_complete_and_per_class() -> None:
    labels = torch.tensor([0] * 10 + [1] * 20)
    train, test = held_out_split_indices(labels, 0.25, seed=0)
    # 2.5 of class 0 rounds half up to 3; 5 of class 1 is exact.
    assert torch.bincount(labels[test]).tolist() == [3, 5]
    assert torch.equal(torch.sort(torch.cat([train, test])).values, torch.arange(30))
    assert torch.equal(train, torch.sort(train).values)
    again_train, again_test = held_out_split_indices(labels, 0.25, seed=0)
    assert torch.equal(train, again_train)
    assert torch.equal(test, again_test)
    assert not torch.equal(test, held_out_split_indices(labels, 0.25, seed=1)[1])


def test_held_out_split_with_zero_fraction_keeps_everything_for_training() -> None:
    train, test = held_out_split_indices(torch.tensor([0, 1, 1]), 0.0, seed=0)
    assert train.tolist() == [0, 1, 2]
    assert test.numel() == 0


@pytest.mark.parametrize(("fraction", "seed"), [(1.0, 0), (-0.1, 0), (0.2, -1)])
def test_held_out_split_rejects_bad_arguments(fraction: float, seed: int) -> None:
    with pytest.raises(ConfigurationError):
        held_out_split_indices(torch.tensor([0, 1]), fraction, seed)


def test_public_api_is_pinned() -> None:
    # Deliberate repetition of agent.data.__all__: a change to the public API must change this test too.
    assert sorted(agent.data.__all__) == [
        "DATASET_NAMES",
        "DEFAULT_FASHION_MNIST_DIRECTORY",
        "FASHION_MNIST_CLASSES",
        "IMAGE_EXTENSIONS",
        "ImageDataset",
        "RestrictedUnpickler",
        "held_out_split_indices",
        "load_cifar10",
        "load_dataset",
        "load_fashion_mnist",
        "load_image_folder",
        "partition_dirichlet",
        "partition_iid",
        "read_idx_file",
        "stratified_limit_indices",
    ]
    for name in agent.data.__all__:
        assert hasattr(agent.data, name)


def test_package_imports_only_numpy_torch_pillow_and_the_errors() -> None:
    """The data layer sits below the engine: it must not reach into the rest of layerfed."""
    allowed_roots = {"numpy", "torch", "PIL", "__future__"} | set(sys.stdlib_module_names)
    for module_path in PACKAGE_DIRECTORY.glob("*.py"):
        tree = ast.parse(module_path.read_text(), filename=str(module_path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module is not None:
                names = [node.module]
            else:
                continue
            for name in names:
                if name.startswith("agent."):
                    assert name == "agent.errors" or name.startswith("agent.data"), f"{module_path}: {name}"
                else:
                    assert name.split(".")[0] in allowed_roots, f"{module_path}: {name}"
