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


def pairwise_row_sums(matrix: torch.Tensor) -> torch.Tensor:
    """Sum of each row of a 2-d tensor by the same fixed tree :func:`pairwise_sum` uses, all rows at once."""
    rows, count = matrix.shape
    if count == 0:
        return torch.zeros(rows, dtype=torch.float64)
    size = 1 << (count - 1).bit_length()
    level = torch.zeros(rows, size, dtype=torch.float64)
    level[:, :count] = matrix
    while level.shape[1] > 1:
        half = level.shape[1] // 2
        level = level[:, :half] + level[:, half:]
    return level[:, 0]


def odd_even_merge_comparators(count: int) -> list[tuple[int, int]]:
    """Batcher's odd-even merge sort network for ``count`` inputs: the (lower, upper) index pairs.

    Built for the next power of two; pairs that reach past ``count`` would compare with +infinity
    padding, which never moves, so they are left out. O(n log^2 n) pairs (63 for 16 inputs).
    """
    size = 1 << max(0, (count - 1).bit_length())
    pairs = []
    block = 1
    while block < size:
        step = block
        while step >= 1:
            for start in range(step % block, size - step, 2 * step):
                for offset in range(min(step, size - start - step)):
                    lower, upper = offset + start, offset + start + step
                    if lower // (2 * block) == upper // (2 * block) and upper < count:
                        pairs.append((lower, upper))
            step //= 2
        block *= 2
    return pairs


def sorted_rows(rows: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """Element-wise sort across equally shaped float64 tensors: result[i] holds every coordinate's
    i-th smallest value.

    A sorting network of element-wise minimum and maximum, which are exact, over whole tensors at once:
    no library sort whose tie handling or kernel may differ between machines, and much faster than
    sorting millions of short columns. Zeros are made +0.0 first, so that -0.0 and +0.0, which compare
    equal, cannot land differently on different machines.
    """
    values = [row + 0.0 for row in rows]  # IEEE: -0.0 + 0.0 == +0.0
    for lower, upper in odd_even_merge_comparators(len(values)):
        smaller = torch.minimum(values[lower], values[upper])
        values[upper] = torch.maximum(values[lower], values[upper])
        values[lower] = smaller
    return values
