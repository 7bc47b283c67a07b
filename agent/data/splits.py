"""Class-stratified subsets of one data set: a cheap ``limit`` for small runs and a held-out test split.

Both keep every class's share of the data, because an image folder is stored class by class: its first
N samples would all be one class, and a linear probe or a test split built from them would be useless.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from agent.errors import ConfigurationError


def stratified_limit_indices(labels: torch.Tensor, limit: int) -> torch.Tensor:
    """Choose ``limit`` samples, each class in proportion to its frequency, taking its first samples.

    No randomness: the same labels and limit always give the same, sorted indices. Each class gets
    ``floor(limit * share)`` samples; the places left over go to the classes with the largest remainders
    (ties to the lower label), so the total is exactly ``limit``. A ``limit`` at least the number of
    samples returns every index.

    Raises:
        ConfigurationError: ``limit`` is not a positive integer.
    """
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise ConfigurationError(f"limit must be a positive integer, got {limit!r}")
    label_array = labels.numpy()
    sample_count = label_array.shape[0]
    if limit >= sample_count:
        return torch.arange(sample_count, dtype=torch.int64)
    classes, class_sizes = np.unique(label_array, return_counts=True)
    quotas = class_sizes * limit / sample_count
    counts = np.floor(quotas).astype(np.int64)
    remainders = quotas - counts
    # Stable sort on the negated remainder: largest remainder first, lower label first among equals.
    for position in np.argsort(-remainders, kind="stable")[: limit - int(counts.sum())]:
        counts[position] += 1
    chosen = [
        np.flatnonzero(label_array == label)[:count] for label, count in zip(classes, counts, strict=True)
    ]
    return torch.from_numpy(np.sort(np.concatenate(chosen)).astype(np.int64))


def held_out_split_indices(
    labels: torch.Tensor, test_fraction: float, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Split samples into ``(train, test)`` indices, holding out ``test_fraction`` of every class.

    For each class, ``round(test_fraction * class size)`` samples drawn by a generator seeded with
    ``seed`` go to the test split, the rest to the training split; both index tensors are sorted. The
    split depends only on the labels, the fraction and the seed, so train and test never overlap however
    often and wherever they are loaded.

    Raises:
        ConfigurationError: ``test_fraction`` is outside ``[0, 1)`` or ``seed`` is negative.
    """
    if not (isinstance(test_fraction, int | float) and 0.0 <= test_fraction < 1.0):
        raise ConfigurationError(f"test_fraction must be in [0, 1), got {test_fraction!r}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ConfigurationError(f"seed must be a non-negative integer, got {seed!r}")
    generator = np.random.default_rng(seed)
    label_array = labels.numpy()
    test_parts: list[np.ndarray] = []
    for label in np.unique(label_array):
        members = np.flatnonzero(label_array == label)
        test_count = math.floor(test_fraction * members.size + 0.5)
        test_parts.append(generator.permutation(members)[:test_count])
    test_mask = np.zeros(label_array.shape[0], dtype=bool)
    if test_parts:
        test_mask[np.concatenate(test_parts)] = True
    return (
        torch.from_numpy(np.flatnonzero(~test_mask).astype(np.int64)),
        torch.from_numpy(np.flatnonzero(test_mask).astype(np.int64)),
    )
