"""Coordinate-wise trimmed mean (Yin, Chen, Ramchandran and Bartlett, 2018, "Byzantine-Robust
Distributed Learning: Towards Optimal Statistical Rates", ICML).

For every coordinate, the k = floor(beta * n) largest and k smallest values over the updates are cut and
the rest averaged. Tolerates up to k attackers per coordinate (f <= beta * n, beta < 1/2): whatever they
send, each surviving value is bounded by honest ones. With beta = 0.3 that is 1 of 5 and 2 of 7. Costs a
sort per coordinate (a sorting network, O(d n log^2 n)); keeps n - 2k values, so it is closer to the
mean than the median is.
Unweighted: a claimed sample count does not move an order statistic.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from agent.learning.aggregation.contribution import Aggregate, Contribution
from agent.learning.aggregation.median import sorted_coordinates


def trimmed_count(count: int, trim_fraction: float) -> int:
    """k, the values cut at each end: floor(beta * n), but always leaving at least one value."""
    return min(int(trim_fraction * count), (count - 1) // 2)


class TrimmedMean:
    """The coordinate-wise beta-trimmed mean of the updates."""

    name = "trimmed_mean"

    def __init__(self, trim_fraction: float) -> None:
        self.trim_fraction = trim_fraction

    def aggregate(self, contributions: Sequence[Contribution]) -> Aggregate:
        count = len(contributions)
        cut = trimmed_count(count, self.trim_fraction)
        kept = count - 2 * cut
        delta: dict[str, torch.Tensor] = {}
        for name in sorted(contributions[0].deltas):
            ordered = sorted_coordinates(contributions, name)
            accumulated = torch.zeros(ordered[0].shape, dtype=torch.float64)
            for row in range(cut, count - cut):
                accumulated = accumulated + ordered[row]
            delta[name] = accumulated / float(kept)
        return Aggregate(delta=delta)
