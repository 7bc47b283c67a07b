"""Merging a round's updates into the next global model, deterministically bit for bit.

Every peer merges on its own and must end with identical bytes, whatever order the updates arrived in
and whatever machine it runs on. So: updates are put in a canonical order (by the SHA-256 of their
serialised bytes, then their label, neither of which depends on who received them when), converted to
float64, every product and sum is a separate element-wise float64 operation or a fixed-order reduction
(:mod:`agent.learning.aggregation.arithmetic`), and the result is rounded to float32 once.

The pipeline is the same for every rule: claims become weights (:mod:`~agent.learning.aggregation.
sample_weights`), updates are clipped if the recipe bounds norms (:mod:`~agent.learning.aggregation.
norm_bound`), then the recipe's rule (:func:`~agent.learning.aggregation.rules.build_rule`) combines them.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch

from agent.errors import UpdateRejectedError
from agent.learning.aggregation.config import LEGACY_FEDAVG, WEIGHTED_RULES, AggregationConfig
from agent.learning.aggregation.contribution import Contribution, Decision
from agent.learning.aggregation.norm_bound import bound_norms
from agent.learning.aggregation.rules import build_rule
from agent.learning.aggregation.sample_weights import sample_weights
from agent.learning.model_state import ModelState
from agent.learning.update import ModelUpdate

LabelledUpdate = tuple[str, ModelUpdate]


@dataclass(frozen=True)
class MergeOutcome:
    """The merged model and what the rules did to individual updates (for logs and metrics)."""

    state: ModelState
    decisions: tuple[Decision, ...]


def canonical_order(updates: Sequence[ModelUpdate]) -> list[ModelUpdate]:
    """Updates sorted by the digest of their bytes: the same set gives the same order everywhere."""
    return sorted(updates, key=lambda update: hashlib.sha256(update.to_bytes()).digest())


def canonical_labelled_order(updates: Sequence[LabelledUpdate]) -> list[LabelledUpdate]:
    """Labelled updates sorted by (digest of the bytes, label): equal copies from two peers included."""
    return sorted(updates, key=lambda item: (hashlib.sha256(item[1].to_bytes()).digest(), item[0]))


def merge_round(
    global_state: Mapping[str, torch.Tensor],
    updates: Sequence[LabelledUpdate],
    aggregation: AggregationConfig,
) -> MergeOutcome:
    """New global state: ``global + rule(updates)`` on the exchanged tensors, and the rule's decisions.

    Labels name the sender (a peer address) in decisions; they affect the result only as the tie-break of
    identical updates. Tensors no update touches are returned unchanged (the same values, bit for bit).
    All updates must hold the same tensor names; validate each against the model first.
    """
    if not updates:
        raise UpdateRejectedError("nothing to merge: no updates")
    ordered = canonical_labelled_order(updates)
    names = sorted(ordered[0][1].deltas)
    for _, update in ordered[1:]:
        if sorted(update.deltas) != names:
            raise UpdateRejectedError("updates to merge hold different tensors")
    labels = [label for label, _ in ordered]
    weights, capped = sample_weights(
        aggregation.sample_weighting, [update.samples for _, update in ordered], labels
    )
    # A capped claim is news to an operator only where the weight counts: under an order statistic
    # every honest peer with a larger shard than the median would be reported, every round, for nothing.
    decisions = capped if aggregation.rule in WEIGHTED_RULES else []
    contributions = [
        Contribution(
            label=label,
            deltas={name: update.deltas[name].to(torch.float64) for name in names},
            weight=weight,
        )
        for (label, update), weight in zip(ordered, weights, strict=True)
    ]
    if aggregation.norm_bound is not None:
        contributions, clipped = bound_norms(contributions, aggregation.norm_bound)
        decisions += clipped
    aggregate = build_rule(aggregation).aggregate(contributions)
    merged: ModelState = {name: tensor.clone() for name, tensor in global_state.items()}
    for name in names:
        merged[name] = valid_statistic(
            name, (global_state[name].to(torch.float64) + aggregate.delta[name]).to(torch.float32)
        )
    return MergeOutcome(state=merged, decisions=(*decisions, *aggregate.decisions))


RUNNING_VARIANCE_SUFFIX = ".running_var"


def valid_statistic(name: str, merged: torch.Tensor) -> torch.Tensor:
    """A BatchNorm running variance never below zero; every other tensor as merged.

    Honest updates cannot make one negative (every rule's result lies within the peers' own positive
    variances, and norm bounding only shrinks deltas toward the global model), so for them this changes
    no bit. Noised updates can (differential privacy adds Gaussian noise to every exchanged coordinate,
    running statistics included, which are data-dependent and must be protected like weights), and so
    can an attacker under FedAvg; a negative variance would turn every later forward pass of a frozen
    stage into NaN. Clamping is exact, so peers still agree bit for bit.
    """
    if name.endswith(RUNNING_VARIANCE_SUFFIX):
        return merged.clamp(min=0.0)
    return merged


def merge_updates(
    global_state: Mapping[str, torch.Tensor],
    updates: Sequence[ModelUpdate],
    aggregation: AggregationConfig = LEGACY_FEDAVG,
) -> ModelState:
    """:func:`merge_round` for unlabelled updates (labelled by position), returning only the model."""
    labelled = [(f"update-{index}", update) for index, update in enumerate(updates)]
    return merge_round(global_state, labelled, aggregation).state
