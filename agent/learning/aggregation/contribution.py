"""What an aggregation rule works on and what it reports back: the interface every rule implements.

A rule receives the round's updates as float64 deltas in canonical order (the caller sorts them; a rule
must not depend on anything but that order and the values) and returns one float64 delta plus the
decisions it took about individual updates, so that peers can log and count who was filtered and why.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

import torch

DeltaState = dict[str, torch.Tensor]


@dataclass(frozen=True)
class Contribution:
    """One update as a rule sees it: who sent it (for reports), its float64 deltas and its weight."""

    label: str
    deltas: Mapping[str, torch.Tensor]
    weight: float


@dataclass(frozen=True)
class Decision:
    """What a rule did to one update: ``discarded``, ``clipped`` or ``weight_capped``, and why."""

    label: str
    action: str
    rule: str
    detail: str


@dataclass(frozen=True)
class Aggregate:
    """A rule's result: the float64 delta to add to the global model, and its decisions."""

    delta: DeltaState
    decisions: tuple[Decision, ...] = ()


class AggregationRule(Protocol):
    """Turns a round's contributions (canonical order, same tensor names) into one delta."""

    name: str

    def aggregate(self, contributions: Sequence[Contribution]) -> Aggregate: ...
