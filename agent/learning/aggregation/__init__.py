"""Aggregation rules: how a round's updates become one model, deterministically and robustly.

Every rule is one module named for its algorithm, citing its paper, behind the :class:`AggregationRule`
interface. :func:`agent.learning.merging.merge_round` runs the pipeline every peer runs: canonical order,
float64 deltas, claims turned into weights, optional norm bounding, the rule, one rounding to float32.
"""

from __future__ import annotations

from agent.learning.aggregation.config import (
    DEFAULT_AGGREGATION,
    LEGACY_FEDAVG,
    RULE_NAMES,
    WEIGHTING_NAMES,
    AggregationConfig,
)
from agent.learning.aggregation.contribution import Aggregate, AggregationRule, Contribution, Decision
from agent.learning.aggregation.fedavg import FederatedAveraging
from agent.learning.aggregation.median import CoordinateMedian
from agent.learning.aggregation.multi_krum import MultiKrum
from agent.learning.aggregation.trimmed_mean import TrimmedMean

__all__ = [
    "DEFAULT_AGGREGATION",
    "LEGACY_FEDAVG",
    "RULE_NAMES",
    "WEIGHTING_NAMES",
    "Aggregate",
    "AggregationConfig",
    "AggregationRule",
    "Contribution",
    "Decision",
    "build_rule",
]


def build_rule(config: AggregationConfig) -> AggregationRule:
    """The rule ``config`` names, with its parameters."""
    if config.rule == "median":
        return CoordinateMedian()
    if config.rule == "trimmed_mean":
        return TrimmedMean(config.trim_fraction)
    if config.rule == "multi_krum":
        return MultiKrum(config.assumed_attacker_fraction, config.krum_selection)
    return FederatedAveraging()
