"""Multi-Krum (Blanchard, El Mhamdi, Guerraoui and Stainer, 2017, "Machine Learning with Adversaries:
Byzantine Tolerant Gradient Descent", NeurIPS).

Each update is scored by the sum of squared L2 distances to its n - f - 2 nearest other updates; the m
updates with the lowest scores are averaged (weighted), the others discarded. Tolerates f attackers when
n > 2f + 2 (with f = floor(0.3 n): 1 of 5, 2 of 7). An attacker far from the honest cluster is never
selected; one that stays close to it is selected but then moves the mean little. Costs n(n-1)/2 distance
computations, O(n^2 d), and keeps whole updates (no per-coordinate mixing). Ties in score are broken by
the canonical order, so every peer selects the same set.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from agent.learning.aggregation.arithmetic import pairwise_row_sums, sequential_sum
from agent.learning.aggregation.contribution import Aggregate, Contribution, Decision
from agent.learning.aggregation.fedavg import weighted_mean


def assumed_attackers(count: int, attacker_fraction: float) -> int:
    """f: floor(fraction * n), lowered until Krum's condition n > 2f + 2 holds (0 for n <= 2)."""
    attackers = int(attacker_fraction * count)
    return max(0, min(attackers, (count - 3) // 2))


def flattened(contribution: Contribution) -> torch.Tensor:
    """Every tensor of an update, in sorted name order, as one float64 vector."""
    return torch.cat([contribution.deltas[name].reshape(-1) for name in sorted(contribution.deltas)])


def squared_distances(contributions: Sequence[Contribution]) -> list[list[float]]:
    """||u_i - u_j||^2 for every pair, each a fixed-tree sum over the flattened updates; one update
    against all later ones at a time, so the work is vectorised and memory stays at two n x d blocks."""
    count = len(contributions)
    vectors = torch.stack([flattened(contribution) for contribution in contributions])
    distances = [[0.0] * count for _ in range(count)]
    for first in range(count - 1):
        differences = vectors[first + 1 :] - vectors[first]
        sums = pairwise_row_sums(differences * differences).tolist()
        for offset, distance in enumerate(sums):
            second = first + 1 + offset
            distances[first][second] = distances[second][first] = distance
    return distances


def krum_scores(contributions: Sequence[Contribution], attackers: int) -> list[float]:
    """Each update's sum of squared distances to its n - f - 2 closest others (all others if n <= 2)."""
    count = len(contributions)
    distances = squared_distances(contributions)
    neighbours = max(1, count - attackers - 2) if count > 2 else count - 1
    scores = []
    for index in range(count):
        others = sorted(distances[index][other] for other in range(count) if other != index)
        scores.append(sequential_sum(others[:neighbours]))
    return scores


class MultiKrum:
    """Average of the m updates with the lowest Krum scores."""

    name = "multi_krum"

    def __init__(self, attacker_fraction: float, selection: int | None) -> None:
        self.attacker_fraction = attacker_fraction
        self.selection = selection

    def aggregate(self, contributions: Sequence[Contribution]) -> Aggregate:
        count = len(contributions)
        attackers = assumed_attackers(count, self.attacker_fraction)
        selected_count = min(count, self.selection if self.selection is not None else count - attackers)
        scores = krum_scores(contributions, attackers)
        ranking = sorted(range(count), key=lambda index: (scores[index], index))
        selected = sorted(ranking[:selected_count])
        decisions = tuple(
            Decision(
                label=contributions[index].label,
                action="discarded",
                rule=self.name,
                detail=f"score {scores[index]:.4g} ranks {ranking.index(index) + 1} of {count}, "
                f"{selected_count} selected (f={attackers})",
            )
            for index in ranking[selected_count:]
        )
        return Aggregate(
            delta=weighted_mean([contributions[index] for index in selected]), decisions=decisions
        )
