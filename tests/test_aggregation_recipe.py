"""The aggregation rule as part of the training recipe: validation, round trips, and unchanged digests.

The recipe's digest is on chain, so a federation deployed before rules existed must keep its digest
(its recipe has no ``aggregation`` key and means claim-weighted FedAvg), and a recipe every peer accepts
must never fail later inside a merge.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pytest
import torch

from agent.errors import ConfigurationError, UpdateRejectedError
from agent.learning.aggregation.config import DEFAULT_AGGREGATION, LEGACY_FEDAVG, AggregationConfig
from agent.learning.merging import merge_round
from agent.learning.modes import TrainingMode
from agent.learning.training import TrainingConfig
from agent.learning.update import ModelUpdate, validate_update
from models.spec import EncoderSpec

SPEC = EncoderSpec(architecture="resnet", stages=3, widths=(4, 8, 8), projection_dim=8)

# A recipe as a federation deployed before issue 9 stored it: no "aggregation" key.
LEGACY_RECIPE: dict[str, Any] = {
    "spec": SPEC.to_dict(),
    "mode": "lw",
    "federation_seed": 3,
    "local_epochs": 1,
    "batch_size": 8,
    "learning_rate": 1e-3,
    "weight_decay": 1e-4,
    "temperature": 0.5,
    "minimum_crop_scale": 0.2,
}


def canonical_digest(values: dict[str, Any]) -> bytes:
    return hashlib.sha256(json.dumps(values, sort_keys=True, separators=(",", ":")).encode()).digest()


BAD_VALUES: list[dict[str, Any]] = [
    {"rule": "krum"},
    {"rule": ""},
    {"rule": None},
    {"rule": ["median"]},
    {"sample_weighting": "capped"},
    {"sample_weighting": 1},
    {"trim_fraction": -0.1},
    {"trim_fraction": 0.5},
    {"trim_fraction": float("nan")},
    {"trim_fraction": "0.1"},
    {"trim_fraction": True},
    {"trim_fraction": None},
    {"assumed_attacker_fraction": 0.5},
    {"assumed_attacker_fraction": -1e-9},
    {"assumed_attacker_fraction": float("nan")},
    {"assumed_attacker_fraction": None},
    {"krum_selection": 0},
    {"krum_selection": -3},
    {"krum_selection": 3.0},
    {"krum_selection": 2.5},
    {"krum_selection": True},
    {"krum_selection": "3"},
    {"norm_bound": 0},
    {"norm_bound": -1.0},
    {"norm_bound": float("nan")},
    {"norm_bound": float("inf")},
    {"norm_bound": "3"},
    {"norm_bound": False},
    {"maximum_samples": 0},
    {"maximum_samples": 10**9 + 1},
    {"maximum_samples": 2.5},
    {"maximum_samples": 1000.0},
    {"maximum_samples": None},
    {"maximum_samples": True},
    {"tolerance": 1},
]


@pytest.mark.parametrize("values", BAD_VALUES, ids=repr)
def test_every_bad_value_is_a_configuration_error(values: dict[str, Any]) -> None:
    with pytest.raises(ConfigurationError):
        AggregationConfig.from_dict(values)
    recipe = TrainingConfig(spec=SPEC, mode=TrainingMode.LAYER_WISE, federation_seed=3).to_dict()
    recipe["aggregation"] = {**DEFAULT_AGGREGATION.to_dict(), **values}
    with pytest.raises(ConfigurationError):
        TrainingConfig.from_dict(recipe)
    if "tolerance" not in values:
        with pytest.raises(ConfigurationError):
            AggregationConfig(**values)


@pytest.mark.parametrize("aggregation", ["median", ["rule", "median"], 3, None])
def test_an_aggregation_entry_that_is_no_mapping_is_a_configuration_error(aggregation: object) -> None:
    recipe = dict(LEGACY_RECIPE, aggregation=aggregation)
    with pytest.raises(ConfigurationError):
        TrainingConfig.from_dict(recipe)


GOOD_CONFIGS = [
    DEFAULT_AGGREGATION,
    LEGACY_FEDAVG,
    AggregationConfig(rule="median", norm_bound=None, sample_weighting="equal"),
    AggregationConfig(rule="trimmed_mean", trim_fraction=0.0, norm_bound=1, maximum_samples=1),
    AggregationConfig(rule="multi_krum", assumed_attacker_fraction=0.2, krum_selection=3, norm_bound=2.5),
    AggregationConfig(rule="fedavg", sample_weighting="median_capped", maximum_samples=10**9),
]


@pytest.mark.parametrize("aggregation", GOOD_CONFIGS, ids=lambda config: config.describe())
def test_the_rule_round_trips_through_the_recipe(aggregation: AggregationConfig) -> None:
    assert AggregationConfig.from_dict(aggregation.to_dict()) == aggregation
    config = TrainingConfig(
        spec=SPEC, mode=TrainingMode.LAYER_WISE, federation_seed=3, aggregation=aggregation
    )
    through_json = json.loads(json.dumps(config.to_dict(), sort_keys=True))
    decoded = TrainingConfig.from_dict(through_json)
    assert decoded == config
    assert decoded.digest() == config.digest()


def test_a_legacy_recipe_means_legacy_fedavg_and_keeps_its_digest() -> None:
    decoded = TrainingConfig.from_dict(LEGACY_RECIPE)
    assert decoded.aggregation == LEGACY_FEDAVG
    assert decoded.aggregation.rule == "fedavg" and decoded.aggregation.norm_bound is None
    assert decoded.aggregation.sample_weighting == "claimed"
    assert decoded.to_dict() == LEGACY_RECIPE
    assert decoded.digest() == canonical_digest(LEGACY_RECIPE)


def test_every_other_rule_changes_the_digest() -> None:
    digests = {
        TrainingConfig.from_dict(dict(LEGACY_RECIPE, aggregation=config.to_dict())).digest()
        for config in GOOD_CONFIGS
    }
    assert len(digests) == len(GOOD_CONFIGS)
    default = TrainingConfig(spec=SPEC, mode=TrainingMode.LAYER_WISE, federation_seed=3, batch_size=8)
    assert default.aggregation == DEFAULT_AGGREGATION
    assert default.digest() != canonical_digest(LEGACY_RECIPE)
    assert default.digest() == canonical_digest(
        dict(LEGACY_RECIPE, aggregation=DEFAULT_AGGREGATION.to_dict())
    )
    # one parameter is enough to change it: peers cannot disagree on kappa unnoticed
    other = TrainingConfig.from_dict(
        dict(LEGACY_RECIPE, aggregation={**DEFAULT_AGGREGATION.to_dict(), "norm_bound": 2.0})
    )
    assert other.digest() != default.digest()


def test_new_federations_default_to_a_robust_rule() -> None:
    assert DEFAULT_AGGREGATION.rule != "fedavg"
    assert DEFAULT_AGGREGATION.sample_weighting != "claimed"
    assert DEFAULT_AGGREGATION.maximum_samples < LEGACY_FEDAVG.maximum_samples


def update_claiming(samples: int) -> tuple[ModelUpdate, dict[str, torch.Tensor]]:
    reference = {"stages.0.weight": torch.zeros(2), "heads.0.weight": torch.zeros(1)}
    deltas = {name: torch.ones_like(tensor) for name, tensor in reference.items()}
    return ModelUpdate(TrainingMode.LAYER_WISE, 1, samples, deltas), reference


def test_validate_update_rejects_claims_above_the_recipe_limit() -> None:
    limit = DEFAULT_AGGREGATION.maximum_samples
    update, reference = update_claiming(limit)
    validate_update(update, reference, TrainingMode.LAYER_WISE, 1, 1, limit)
    for claim in (limit + 1, 10**6, 10**9):
        update, reference = update_claiming(claim)
        with pytest.raises(UpdateRejectedError, match=f"limit is {limit}"):
            validate_update(update, reference, TrainingMode.LAYER_WISE, 1, 1, limit)
    update, reference = update_claiming(10**6)
    validate_update(update, reference, TrainingMode.LAYER_WISE, 1, 1)  # without a recipe limit: 10**9
    for claim in (0, -1):
        update, reference = update_claiming(claim)
        with pytest.raises(UpdateRejectedError):
            validate_update(update, reference, TrainingMode.LAYER_WISE, 1, 1, limit)


def test_an_inflated_claim_is_reported_only_where_weights_count() -> None:
    state = {"w": torch.zeros(1)}
    updates = [
        (f"peer-{index}", ModelUpdate(TrainingMode.LAYER_WISE, 1, claim, {"w": torch.tensor([float(index)])}))
        for index, claim in enumerate([100, 100, 100, 10**5])
    ]
    for rule in ("fedavg", "multi_krum"):
        outcome = merge_round(state, updates, AggregationConfig(rule=rule, norm_bound=None))
        capped = [decision for decision in outcome.decisions if decision.action == "weight_capped"]
        assert [decision.label for decision in capped] == ["peer-3"], rule
    fedavg = merge_round(state, updates, AggregationConfig(rule="fedavg", norm_bound=None))
    assert fedavg.state["w"].tolist() == [1.5]  # capped at the median 100: (0 + 1 + 2 + 3) / 4
    for rule in ("median", "trimmed_mean"):
        # an order statistic ignores weights: nobody is "capped", so nobody is reported
        outcome = merge_round(state, updates, AggregationConfig(rule=rule, norm_bound=None))
        assert outcome.decisions == (), rule
