"""The robustness grid: its plan, each cell's configuration, the counting of filter decisions, the table,
and (slow, in CI) the smoke preset with one attacker, where FedAvg breaks and the default rule does not."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from agent.benchmark import runner
from agent.benchmark.presets import preset_config
from agent.benchmark.results import ModeResult, RoundResult
from agent.benchmark.robustness import (
    NO_ATTACK,
    Cell,
    cell_config,
    parse_scenarios,
    planned_cells,
    render_robustness,
    summarise_cell,
)
from agent.errors import ConfigurationError
from agent.learning.aggregation.arguments import parse_variant
from agent.learning.aggregation.config import DEFAULT_AGGREGATION


def test_scenarios_parse_and_bad_ones_are_refused() -> None:
    assert parse_scenarios("1/5, 2/7") == ((1, 5), (2, 7))
    with pytest.raises(ConfigurationError, match="ATTACKERS/CLIENTS"):
        parse_scenarios("1-5")


def test_the_plan_has_a_clean_run_and_every_attack_per_rule_and_scenario() -> None:
    cells = planned_cells(["fedavg", "median"], ["scale", "copy"], [(1, 5), (2, 7)])
    assert len(cells) == 2 * 2 * 3
    assert Cell("median", NO_ATTACK, 0, 7) in cells
    assert Cell("fedavg", "copy", 2, 7) in cells
    with pytest.raises(ConfigurationError):
        planned_cells(["fedavg"], ["bribe"], [(1, 5)])
    with pytest.raises(ConfigurationError):
        planned_cells(["fedmean"], ["scale"], [(1, 5)])


def test_a_rule_alone_has_no_norm_bound_and_the_default_is_trimmed_mean_with_one() -> None:
    assert parse_variant("trimmed_mean").norm_bound is None
    assert parse_variant("median").norm_bound is None
    assert parse_variant("trimmed_mean+norm_bound") == DEFAULT_AGGREGATION
    fedavg = parse_variant("fedavg")
    assert (fedavg.norm_bound, fedavg.sample_weighting) == (None, "claimed")
    with pytest.raises(ConfigurationError):
        parse_variant("median+norm_bound+x")


def test_a_cell_keeps_images_per_client_and_sets_rule_and_attack() -> None:
    base = preset_config("resnet", "robustness")
    per_client = (base.train_limit or 0) // base.clients
    config = cell_config(base, Cell("multi_krum+norm_bound", "sign-flip", 2, 7))
    assert config.clients == 7 and config.train_limit == 7 * per_client
    assert config.aggregation.rule == "multi_krum" and config.aggregation.norm_bound is not None
    assert (config.attack, config.attackers) == ("sign-flip", 2)
    clean = cell_config(base, Cell("fedavg", NO_ATTACK, 0, 5))
    assert clean.attack is None and clean.attackers == 0
    assert clean.aggregation.sample_weighting == "claimed" and clean.aggregation.norm_bound is None


def mode_result(decisions: tuple[str, ...], accuracy: float) -> ModeResult:
    record = RoundResult(
        round_index=0,
        stage=1,
        loss=1.0,
        gflops_per_client=1.0,
        upload_bytes_per_client=1.0,
        download_bytes_per_client=1.0,
        peak_train_memory_bytes=1,
        client_peak_train_memory_bytes=(1,),
        wall_seconds=2.0,
        merge_seconds=0.004,
        decisions=decisions,
    )
    return ModeResult(
        mode="lw",
        linear_probe_accuracy=accuracy,
        knn_accuracy=accuracy,
        peak_train_memory_bytes=1,
        gflops_per_client=1.0,
        bytes_per_client=1.0,
        upload_bytes_per_client=1.0,
        download_bytes_per_client=1.0,
        wall_seconds=2.0,
        evaluation_seconds=0.0,
        process_seconds=2.0,
        memory_method="kernel",
        clients=5,
        stages=(),
        rounds=(record, record),
    )


def test_decisions_are_counted_for_attackers_and_honest_clients_apart() -> None:
    decisions = (
        "client-4 clipped by norm_bound",
        "client-4 discarded by multi_krum",
        "client-1 discarded by multi_krum",
        "client-2 weight_capped by sample_weighting",
    )
    summary = summarise_cell(Cell("multi_krum", "scale", 1, 5), mode_result(decisions, 0.7))
    # two rounds of the same decisions
    assert (summary.attacker_discarded, summary.attacker_clipped) == (2, 2)
    assert (summary.honest_discarded, summary.honest_clipped) == (2, 0)
    assert summary.merge_seconds_per_round == pytest.approx(0.004)
    assert summary.rounds == 2


def test_the_table_shows_each_rule_and_attack_per_scenario() -> None:
    cells = [
        summarise_cell(Cell("fedavg", NO_ATTACK, 0, 5), mode_result((), 0.78)),
        summarise_cell(Cell("fedavg", "scale", 1, 5), mode_result((), 0.10)),
        summarise_cell(Cell("median", NO_ATTACK, 0, 5), mode_result((), 0.77)),
        summarise_cell(Cell("median", "scale", 1, 5), mode_result(("client-4 clipped by x",), 0.765)),
    ]
    document = {
        "config": preset_config("resnet", "robustness").to_dict(),
        "random_init": {"linear_probe_accuracy": 0.744},
        "cells": [cell.to_dict() for cell in cells],
    }
    table = render_robustness(document)
    assert "## 1 attacker(s) of 5" in table
    assert "| fedavg | 78.0% | 10.0% |" in table
    assert "| median | 77.0% | 76.5% |" in table
    assert "| random init | 74.4% |" in table
    assert "2 / 0 |" in table  # median's attacker clipped in both rounds, nobody honest


def parse(*arguments: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    runner.add_arguments(parser)
    return parser.parse_args(list(arguments))


def test_attack_and_aggregation_options_reach_the_configuration() -> None:
    config = runner.config_from_arguments(
        parse("--attack", "noise", "--attackers", "2", "--attack-scale", "3", "--aggregator", "median")
    )
    assert (config.attack, config.attackers, config.attack_scale) == ("noise", 2, 3.0)
    assert config.aggregation.rule == "median"
    assert runner.config_from_arguments(parse("--attack", "copy")).attackers == 1
    assert runner.config_from_arguments(parse()).aggregation == DEFAULT_AGGREGATION


@pytest.mark.slow
def test_the_smoke_grid_with_one_attacker_breaks_fedavg_and_not_the_default_rule(tmp_path: Path) -> None:
    arguments = parse(
        "--model",
        "resnet",
        "--preset",
        "smoke",
        "--robustness",
        "--aggregators",
        "fedavg,trimmed_mean+norm_bound",
        "--attacks",
        "scale",
        "--scenarios",
        "1/3",
        "--out",
        str(tmp_path),
    )
    assert runner.run(arguments) == 0
    document = json.loads((tmp_path / "results.json").read_text())
    cells = {(cell["aggregator"], cell["attack"]): cell for cell in document["cells"]}
    assert len(cells) == 4
    random_init = document["random_init"]["linear_probe_accuracy"]
    # x50 from one of three clients: FedAvg's model ends below an untrained encoder (measured: 55.0% against
    # 61.7%; before merges clamped BatchNorm variances at zero its features were NaN, at chance) ...
    assert cells["fedavg", "scale"]["linear_probe_accuracy"] < random_init - 0.05
    # ... while the default rule clips the attacker every round and keeps a working encoder.
    defended = cells["trimmed_mean+norm_bound", "scale"]
    assert defended["linear_probe_accuracy"] > random_init - 0.05
    # clipped in each round, in both tensor groups lw exchanges (the stage and its head)
    assert defended["attacker_clipped"] == 2 * defended["rounds"] and defended["honest_clipped"] == 0
    assert "| fedavg |" in (tmp_path / "results.md").read_text()
