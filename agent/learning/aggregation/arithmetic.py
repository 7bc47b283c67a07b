"""Reductions that give the same bits on every machine.

Library reductions (``torch.sum``, ``numpy.sum``) may split a sum into blocks whose size depends on the
SIMD width, the thread count or the library version, and floating-point addition is not associative,
so two peers could get different last bits and attest different models. Here every reduction is a fixed
tree of element-wise float64 operations, each of which IEEE 754 rounds exactly one way: the result depends
only on the values and their order.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch


def pairwise_sum(values: torch.Tensor) -> float:
    """Sum of a tensor's elements in float64 by a fixed pairwise tree of element-wise additions."""
    flat = values.to(torch.float64).reshape(-1)
    count = flat.numel()
    if count == 0:
        return 0.0
    size = 1 << (count - 1).bit_length()
    level = torch.zeros(size, dtype=torch.float64)
    level[:count] = flat
    while level.numel() > 1:
        half = level.numel() // 2
        level = level[:half] + level[half:]
    return float(level[0])


def sequential_sum(values: Iterable[float]) -> float:
    """Left-to-right sum of Python floats (float64), in the order given."""
    total = 0.0
    for value in values:
        total = total + value
    return total


def squared_norm(tensors: Iterable[torch.Tensor]) -> float:
    """Sum of squares of every element, tensor by tensor in the order given."""
    return sequential_sum(
        pairwise_sum(tensor.to(torch.float64) * tensor.to(torch.float64)) for tensor in tensors
    )


def median_of(values: Sequence[float]) -> float:
    """The median of floats: the middle value, or the mean of the two middle values for an even count."""
    if not values:
        raise ValueError("median of no values")
    ordered = sorted(values)
    middle = len(ordered) // 2
    if len(ordered) % 2:
        return ordered[middle]
    return (ordered[middle - 1] + ordered[middle]) * 0.5
