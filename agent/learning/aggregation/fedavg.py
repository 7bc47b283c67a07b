"""FedAvg: the weighted mean of the updates (McMahan et al., 2017, "Communication-Efficient Learning of
Deep Networks from Decentralized Data", AISTATS).

Tolerates no attacker at all: a single update of any finite size moves the mean anywhere, and a single
inflated weight owns it. Use it only where every participant is trusted, or behind ``norm_bound`` (which
limits, but does not remove, an attacker's pull). Cost: one pass over the updates, O(n d).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from agent.learning.aggregation.contribution import Aggregate, Contribution


def weighted_mean(contributions: Sequence[Contribution]) -> dict[str, torch.Tensor]:
    """``sum(w_i * delta_i) / sum(w_i)``, one element-wise float64 product and sum at a time, in order."""
    total_weight = 0.0
    for contribution in contributions:
        total_weight = total_weight + contribution.weight
    names = sorted(contributions[0].deltas)
    mean: dict[str, torch.Tensor] = {}
    for name in names:
        accumulated = torch.zeros(contributions[0].deltas[name].shape, dtype=torch.float64)
        for contribution in contributions:
            accumulated = accumulated + contribution.deltas[name] * contribution.weight
        mean[name] = accumulated / total_weight
    return mean


class FederatedAveraging:
    """The weighted mean of every update."""

    name = "fedavg"

    def aggregate(self, contributions: Sequence[Contribution]) -> Aggregate:
        return Aggregate(delta=weighted_mean(contributions))
