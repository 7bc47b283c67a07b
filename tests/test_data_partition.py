"""IID and Dirichlet partitions: disjoint, complete, seeded, and as skewed as alpha says."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from agent.data import partition_dirichlet, partition_iid
from agent.errors import ConfigurationError

CLASS_COUNT = 10
PER_CLASS = 100


@pytest.fixture
def balanced_labels() -> torch.Tensor:
    """1,000 samples, 100 of each of 10 classes, interleaved so that index order says nothing about class."""
    return torch.arange(CLASS_COUNT * PER_CLASS, dtype=torch.int64) % CLASS_COUNT


def class_counts(labels: torch.Tensor, shards: list[torch.Tensor]) -> np.ndarray:
    """``[client, class]`` sample counts."""
    return np.stack([np.bincount(labels[shard].numpy(), minlength=CLASS_COUNT) for shard in shards])


def assert_disjoint_complete_sorted(shards: list[torch.Tensor], sample_count: int) -> None:
    for shard in shards:
        assert shard.dtype == torch.int64
        assert shard.dim() == 1
        assert torch.equal(shard, torch.sort(shard).values)
    joined = torch.cat(shards)
    assert joined.numel() == sample_count  # no sample given twice...
    assert torch.equal(torch.sort(joined).values, torch.arange(sample_count))  # ...and none left out


def same_shards(first: list[torch.Tensor], second: list[torch.Tensor]) -> bool:
    return len(first) == len(second) and all(torch.equal(a, b) for a, b in zip(first, second, strict=True))


# IID -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("sample_count", "clients"), [(1000, 10), (1003, 7), (5, 5), (1, 1)])
def test_iid_is_disjoint_complete_and_balanced_within_one(sample_count: int, clients: int) -> None:
    shards = partition_iid(sample_count, clients, seed=0)
    assert len(shards) == clients
    assert_disjoint_complete_sorted(shards, sample_count)
    sizes = [len(shard) for shard in shards]
    assert max(sizes) - min(sizes) <= 1


def test_iid_is_shuffled_not_contiguous() -> None:
    shards = partition_iid(1000, 4, seed=0)
    assert not torch.equal(shards[0], torch.arange(250))
    assert int(shards[0].max()) - int(shards[0].min()) > 900


def test_iid_is_deterministic_from_the_seed() -> None:
    assert same_shards(partition_iid(500, 5, seed=7), partition_iid(500, 5, seed=7))
    assert not same_shards(partition_iid(500, 5, seed=7), partition_iid(500, 5, seed=8))


@pytest.mark.parametrize(
    ("sample_count", "clients", "seed", "message"),
    [(10, 0, 0, "clients"), (3, 4, 0, "4 clients"), (10, 2, -1, "seed"), (10, True, 0, "clients")],
)
def test_iid_rejects_bad_arguments(sample_count: int, clients: int, seed: int, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        partition_iid(sample_count, clients, seed)


# Dirichlet -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("alpha", [0.1, 1.0, 100.0])
def test_dirichlet_is_disjoint_and_complete(balanced_labels: torch.Tensor, alpha: float) -> None:
    shards = partition_dirichlet(balanced_labels, clients=10, alpha=alpha, seed=3)
    assert len(shards) == 10
    assert_disjoint_complete_sorted(shards, len(balanced_labels))


def test_dirichlet_is_deterministic_from_the_seed(balanced_labels: torch.Tensor) -> None:
    first = partition_dirichlet(balanced_labels, 8, 0.5, seed=11)
    assert same_shards(first, partition_dirichlet(balanced_labels, 8, 0.5, seed=11))
    assert not same_shards(first, partition_dirichlet(balanced_labels, 8, 0.5, seed=12))


def test_small_alpha_gives_each_client_few_classes(balanced_labels: torch.Tensor) -> None:
    """With alpha 0.1 a client holds about 4-5 of the 10 classes (measured 4.0-5.3 over 30 seeds)."""
    shards = partition_dirichlet(balanced_labels, 10, alpha=0.1, seed=0)
    counts = class_counts(balanced_labels, shards)
    classes_per_client = (counts > 0).sum(axis=1)
    assert classes_per_client.mean() < 6.5
    # A class's samples pile up on a few clients instead of 10 each.
    assert counts.max(axis=0).min() > 30


def test_large_alpha_is_close_to_uniform(balanced_labels: torch.Tensor) -> None:
    """With alpha 100 every client gets about 10 of each class (at most 3 off over 30 seeds)."""
    shards = partition_dirichlet(balanced_labels, 10, alpha=100.0, seed=0)
    counts = class_counts(balanced_labels, shards)
    assert (counts > 0).all()
    assert np.abs(counts - PER_CLASS // 10).max() <= 5


def test_minimum_per_client_is_respected(balanced_labels: torch.Tensor) -> None:
    """alpha 0.1 over 10 clients leaves someone under 40 samples in about 93% of draws; redrawing fixes it."""
    single_draw = partition_dirichlet(balanced_labels, 10, 0.1, seed=0, minimum_per_client=0)
    assert min(len(shard) for shard in single_draw) < 40
    shards = partition_dirichlet(balanced_labels, 10, 0.1, seed=0, minimum_per_client=40)
    assert min(len(shard) for shard in shards) >= 40
    assert_disjoint_complete_sorted(shards, len(balanced_labels))


def test_unreachable_minimum_gives_up_after_the_attempts(balanced_labels: torch.Tensor) -> None:
    with pytest.raises(ConfigurationError, match="in 5 attempts; raise alpha"):
        partition_dirichlet(balanced_labels, 10, 0.01, seed=0, minimum_per_client=99, maximum_attempts=5)


def test_labels_may_be_numpy_or_a_list(balanced_labels: torch.Tensor) -> None:
    from_tensor = partition_dirichlet(balanced_labels, 4, 1.0, seed=5)
    assert same_shards(from_tensor, partition_dirichlet(balanced_labels.numpy(), 4, 1.0, seed=5))
    assert same_shards(from_tensor, partition_dirichlet(balanced_labels.tolist(), 4, 1.0, seed=5))


@pytest.mark.parametrize(
    ("clients", "alpha", "minimum", "message"),
    [
        (0, 1.0, 1, "clients"),
        (5, 0.0, 1, "alpha"),
        (5, -1.0, 1, "alpha"),
        (5, float("nan"), 1, "alpha"),
        (5, float("inf"), 1, "alpha"),
        (1001, 1.0, 0, "1001 clients"),
        (10, 1.0, 101, "minimum_per_client=101"),
        (10, 1.0, -1, "minimum_per_client"),
    ],
)
def test_dirichlet_rejects_bad_arguments(
    balanced_labels: torch.Tensor, clients: int, alpha: float, minimum: int, message: str
) -> None:
    with pytest.raises(ConfigurationError, match=message):
        partition_dirichlet(balanced_labels, clients, alpha, seed=0, minimum_per_client=minimum)


def test_dirichlet_rejects_labels_that_are_not_integers() -> None:
    with pytest.raises(ConfigurationError, match="labels"):
        partition_dirichlet(torch.rand(100), 2, 1.0, seed=0)
    with pytest.raises(ConfigurationError, match="labels"):
        partition_dirichlet(torch.zeros(10, 2, dtype=torch.int64), 2, 1.0, seed=0)
