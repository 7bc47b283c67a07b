"""How much a claimed sample count weighs in the averaging rules.

A sample count is self-reported: nobody can check how many images a device trained on. Under FedAvg
weighting by claims, one peer that claims 10**6 samples owns the mean. Three policies:

- ``claimed``: weights are the claims (FedAvg as published); only the recipe's ``maximum_samples`` (which
  validation enforces, and the contract refuses above) bounds the lever.
- ``median_capped``: each claim is capped at the round's median claim. A minority cannot raise the median,
  so a liar gets at most the weight of a typical honest peer, while honest peers with smaller shards keep
  their smaller weight (what FedAvg's weighting is for on non-IID data).
- ``equal``: every update weighs the same.
"""

from __future__ import annotations

from collections.abc import Sequence

from agent.learning.aggregation.arithmetic import median_of
from agent.learning.aggregation.contribution import Decision

RULE_NAME = "sample_weighting"


def sample_weights(
    policy: str, samples: Sequence[int], labels: Sequence[str]
) -> tuple[list[float], list[Decision]]:
    """The weights of updates claiming ``samples`` under ``policy``, and which claims were capped."""
    if policy == "equal":
        return [1.0] * len(samples), []
    if policy == "claimed":
        return [float(claim) for claim in samples], []
    cap = median_of([float(claim) for claim in samples])
    decisions = [
        Decision(
            label=label, action="weight_capped", rule=RULE_NAME, detail=f"claimed {claim} > median {cap:g}"
        )
        for label, claim in zip(labels, samples, strict=True)
        if claim > cap
    ]
    return [min(float(claim), cap) for claim in samples], decisions
