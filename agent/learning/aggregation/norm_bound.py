"""Norm bounding (Sun, Kairouz, Suresh and McMahan, 2019, "Can You Really Backdoor Federated
Learning?", arXiv:1911.07963), with the bound set per round from the updates themselves.

Before any rule runs, every update's L2 norm is clipped, per tensor group (an encoder stage or a head),
to kappa times the median norm of that group over the round's updates. A minority of attackers cannot
move the median norm beyond the honest range, so an attacker's pull on an average is bounded by kappa
honest updates' worth. It does not remove attackers (an in-bound sign flip still counts against the mean)
and is meant to compose with every rule: it takes the scale out of scaling attacks before a robust rule
looks at directions. Costs one pass over the updates, O(n d).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from agent.learning.aggregation.arithmetic import median_of, squared_norm
from agent.learning.aggregation.contribution import Contribution, Decision

RULE_NAME = "norm_bound"


def tensor_group(name: str) -> str:
    """The group a tensor's norm is bounded in: its first two name parts (``stages.2``, ``heads.0``)."""
    return ".".join(name.split(".")[:2])


def group_names(names: Sequence[str]) -> dict[str, list[str]]:
    groups: dict[str, list[str]] = {}
    for name in sorted(names):
        groups.setdefault(tensor_group(name), []).append(name)
    return groups


def bound_norms(
    contributions: Sequence[Contribution], factor: float
) -> tuple[list[Contribution], list[Decision]]:
    """Contributions with every group clipped to ``factor`` times the group's median norm."""
    groups = group_names(list(contributions[0].deltas))
    scales: list[dict[str, float]] = [{} for _ in contributions]
    decisions: list[Decision] = []
    for group, names in groups.items():
        norms = [
            math.sqrt(squared_norm(contribution.deltas[name] for name in names))
            for contribution in contributions
        ]
        bound = factor * median_of(norms)
        for index, norm in enumerate(norms):
            if norm > bound:
                scales[index][group] = bound / norm
                decisions.append(
                    Decision(
                        label=contributions[index].label,
                        action="clipped",
                        rule=RULE_NAME,
                        detail=f"{group} norm {norm:.4g} > {factor:g} x median {bound / factor:.4g}",
                    )
                )
    clipped = []
    for contribution, scale in zip(contributions, scales, strict=True):
        if not scale:
            clipped.append(contribution)
            continue
        deltas: dict[str, torch.Tensor] = {}
        for name, delta in contribution.deltas.items():
            group = tensor_group(name)
            deltas[name] = delta * scale[group] if group in scale else delta
        clipped.append(Contribution(label=contribution.label, deltas=deltas, weight=contribution.weight))
    return clipped, decisions
