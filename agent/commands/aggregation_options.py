"""The aggregation options of the commands that start federations (``contract deploy``, ``demo``).

They are the benchmark's options (:mod:`agent.learning.aggregation.arguments`), so that a rule measured
with ``layerfed bench --aggregator X`` is deployed with ``layerfed contract deploy --aggregator X``; the
command line reaches them through this module, as it reaches everything, through the commands.
"""

from __future__ import annotations

from agent.learning.aggregation.arguments import (
    add_aggregation_arguments,
    aggregation_from_arguments,
    any_aggregation_argument,
)

__all__ = ["add_aggregation_arguments", "aggregation_from_arguments", "any_aggregation_argument"]
