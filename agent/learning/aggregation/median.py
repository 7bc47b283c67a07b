"""Coordinate-wise median (Yin, Chen, Ramchandran and Bartlett, 2018, "Byzantine-Robust Distributed
Learning: Towards Optimal Statistical Rates", ICML).

Every coordinate of the merged delta is the median of that coordinate over the updates (for an even
count, the mean of the two middle values). Tolerates any minority of attackers (f < n/2): as long as most
values of a coordinate are honest, its median lies within the honest values' range. Costs a sort per
coordinate, done as a sorting network over whole tensors (O(d n log^2 n) element-wise comparisons), and
statistical efficiency: with few honest updates the median is noisier than the mean (about 1.25x the
standard error for Gaussian values), and it ignores sample counts.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from agent.learning.aggregation.arithmetic import sorted_rows
from agent.learning.aggregation.contribution import Aggregate, Contribution


def sorted_coordinates(contributions: Sequence[Contribution], name: str) -> list[torch.Tensor]:
    """Tensor ``name`` of every update, sorted coordinate by coordinate: item i holds the i-th smallest
    value of each coordinate (a sorting network of exact minimum and maximum operations)."""
    return sorted_rows([contribution.deltas[name] for contribution in contributions])


class CoordinateMedian:
    """The coordinate-wise median of the updates."""

    name = "median"

    def aggregate(self, contributions: Sequence[Contribution]) -> Aggregate:
        count = len(contributions)
        middle = count // 2
        delta: dict[str, torch.Tensor] = {}
        for name in sorted(contributions[0].deltas):
            ordered = sorted_coordinates(contributions, name)
            if count % 2:
                delta[name] = ordered[middle].clone()
            else:
                delta[name] = (ordered[middle - 1] + ordered[middle]) * 0.5
        return Aggregate(delta=delta)
