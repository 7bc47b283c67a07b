"""Command-line options that choose an aggregation rule: shared by ``contract deploy``, ``demo`` and the
benchmark, so the three spell every rule and parameter the same way.

A rule named without parameters runs alone: ``fedavg`` means FedAvg as published (claim weights, no
clipping); every robust rule takes :data:`DEFAULT_AGGREGATION`'s parameters but no norm bound. A variant
such as ``trimmed_mean+norm_bound`` adds norm bounding (``trimmed_mean+norm_bound`` is the default rule),
and ``--norm-bound`` sets kappa or switches it on or off for any rule.
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from typing import Any

from agent.errors import ConfigurationError
from agent.learning.aggregation.config import (
    DEFAULT_AGGREGATION,
    RULE_NAMES,
    WEIGHTING_NAMES,
    AggregationConfig,
)

NORM_BOUND_SUFFIX = "+norm_bound"
DEFAULT_NORM_BOUND = DEFAULT_AGGREGATION.norm_bound or 3.0  # what +norm_bound adds: the default's kappa


def rule_defaults(rule: str) -> AggregationConfig:
    """The parameters a rule runs with when only its name is given."""
    if rule not in RULE_NAMES:
        raise ConfigurationError(f"unknown aggregation rule {rule!r}; choose from {', '.join(RULE_NAMES)}")
    if rule == "fedavg":
        return replace(DEFAULT_AGGREGATION, rule=rule, norm_bound=None, sample_weighting="claimed")
    return replace(DEFAULT_AGGREGATION, rule=rule, norm_bound=None)


def parse_variant(text: str) -> AggregationConfig:
    """``rule`` or ``rule+norm_bound`` (kappa 3) as a configuration."""
    rule, suffix, rest = text.partition(NORM_BOUND_SUFFIX)
    if rest:
        raise ConfigurationError(f"unknown aggregation variant {text!r}")
    config = rule_defaults(rule)
    if suffix:
        config = replace(config, norm_bound=config.norm_bound or DEFAULT_NORM_BOUND)
    return config


def add_aggregation_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("aggregation (part of the training recipe)")
    group.add_argument(
        "--aggregator",
        help=f"merge rule: {', '.join(RULE_NAMES)}, optionally +norm_bound "
        f"(default {DEFAULT_AGGREGATION.describe()})",
    )
    group.add_argument("--trim-fraction", type=float, help="trimmed_mean: beta cut at each end")
    group.add_argument(
        "--krum-attacker-fraction", type=float, help="multi_krum: assumed attackers f as a fraction of n"
    )
    group.add_argument("--krum-selection", type=int, help="multi_krum: updates averaged (default n - f)")
    group.add_argument(
        "--norm-bound", help="clip each update to KAPPA x the round's median norm, or 'none' to switch off"
    )
    group.add_argument("--sample-weighting", choices=WEIGHTING_NAMES, help="how claims weigh in averages")
    group.add_argument("--maximum-samples", type=int, help="largest sample count an update may claim")


AGGREGATION_OPTIONS = (
    "aggregator",
    "trim_fraction",
    "krum_attacker_fraction",
    "krum_selection",
    "norm_bound",
    "sample_weighting",
    "maximum_samples",
)


def any_aggregation_argument(arguments: argparse.Namespace) -> bool:
    """Whether any aggregation option was given."""
    return any(getattr(arguments, name, None) is not None for name in AGGREGATION_OPTIONS)


def aggregation_from_arguments(arguments: argparse.Namespace) -> AggregationConfig:
    """The configuration the options describe (the default rule where none is named)."""
    config = parse_variant(arguments.aggregator) if arguments.aggregator else DEFAULT_AGGREGATION
    overrides: dict[str, Any] = {
        "trim_fraction": arguments.trim_fraction,
        "assumed_attacker_fraction": arguments.krum_attacker_fraction,
        "krum_selection": arguments.krum_selection,
        "sample_weighting": arguments.sample_weighting,
        "maximum_samples": arguments.maximum_samples,
    }
    config = replace(config, **{name: value for name, value in overrides.items() if value is not None})
    if arguments.norm_bound is None:
        return config
    text = str(arguments.norm_bound).strip().lower()  # None is a value here: "none" switches clipping off
    try:
        return replace(config, norm_bound=None if text == "none" else float(text))
    except ValueError:
        raise ConfigurationError(f"--norm-bound takes a number or 'none', not {text!r}") from None
