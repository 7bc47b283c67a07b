"""The registry of aggregation rules: a rule name and parameters from the recipe -> the rule object."""

from __future__ import annotations

from agent.learning.aggregation.config import AggregationConfig
from agent.learning.aggregation.contribution import AggregationRule
from agent.learning.aggregation.fedavg import FederatedAveraging
from agent.learning.aggregation.median import CoordinateMedian
from agent.learning.aggregation.multi_krum import MultiKrum
from agent.learning.aggregation.trimmed_mean import TrimmedMean


def build_rule(config: AggregationConfig) -> AggregationRule:
    """The rule ``config`` names, with its parameters."""
    if config.rule == "median":
        return CoordinateMedian()
    if config.rule == "trimmed_mean":
        return TrimmedMean(config.trim_fraction)
    if config.rule == "multi_krum":
        return MultiKrum(config.assumed_attacker_fraction, config.krum_selection)
    return FederatedAveraging()
