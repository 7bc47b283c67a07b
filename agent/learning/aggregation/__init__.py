"""Aggregation rules: how a round's updates become one model, deterministically and robustly.

Every rule is one module named for its algorithm, citing its paper, behind the :class:`AggregationRule`
interface. :func:`agent.learning.merging.merge_round` runs the pipeline every peer runs: canonical order,
float64 deltas, claims turned into weights, optional norm bounding, the rule, one rounding to float32.

The package itself imports nothing, so that the command line can read rule names and parameters
(:mod:`~agent.learning.aggregation.config`, :mod:`~agent.learning.aggregation.arguments`) without loading
torch; :func:`~agent.learning.aggregation.rules.build_rule` builds a rule.
"""
