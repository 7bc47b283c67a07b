"""The benchmark: its report maths on hand-made results, and the smoke preset end to end (slow, in CI)."""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from agent.benchmark import runner
from agent.benchmark.presets import BenchmarkConfig, preset_config, with_overrides
from agent.benchmark.report import compare, compare_modes, ratio, render_markdown
from agent.benchmark.results import BenchmarkResults, ModeResult, ReferenceAccuracy, RoundResult, StageResult
from agent.benchmark.seeds import figure_statistics, seed_figures, summarise
from agent.benchmark.seeds import render_markdown as render_seed_markdown
from agent.errors import ConfigurationError

MODES = ("lw", "prog", "e2e")


def hand_made(
    mode: str, memory: int, gflops: float, exchanged: float, linear_probe: float, knn: float
) -> ModeResult:
    """A two-stage result whose totals are the given figures."""
    stages = tuple(
        StageResult(
            stage=stage,
            readout_stage=stage,
            linear_probe_accuracy=linear_probe,
            knn_accuracy=knn,
            peak_train_memory_bytes=memory,
            cumulative_gflops_per_client=gflops * stage / 2,
            cumulative_bytes_per_client=exchanged * stage / 2,
            cumulative_wall_seconds=float(stage),
        )
        for stage in (1, 2)
    )
    rounds = tuple(
        RoundResult(
            round_index=stage - 1,
            stage=stage,
            loss=4.0,
            gflops_per_client=gflops / 2,
            upload_bytes_per_client=exchanged / 6,
            download_bytes_per_client=exchanged / 3,
            peak_train_memory_bytes=memory,
            client_peak_train_memory_bytes=(memory, memory - 1),
            wall_seconds=1.0,
        )
        for stage in (1, 2)
    )
    return ModeResult(
        mode=mode,
        linear_probe_accuracy=linear_probe,
        knn_accuracy=knn,
        peak_train_memory_bytes=memory,
        gflops_per_client=gflops,
        bytes_per_client=exchanged,
        upload_bytes_per_client=exchanged / 3,
        download_bytes_per_client=2 * exchanged / 3,
        wall_seconds=2.0,
        evaluation_seconds=0.5,
        process_seconds=3.0,
        memory_method="kernel",
        clients=3,
        stages=stages,
        rounds=rounds,
    )


def hand_made_modes() -> dict[str, ModeResult]:
    return {
        "lw": hand_made("lw", memory=100, gflops=10.0, exchanged=2_000.0, linear_probe=0.80, knn=0.70),
        "prog": hand_made("prog", memory=200, gflops=16.0, exchanged=5_000.0, linear_probe=0.81, knn=0.74),
        "e2e": hand_made("e2e", memory=400, gflops=40.0, exchanged=10_000.0, linear_probe=0.825, knn=0.75),
    }


def test_ratio_divides_and_has_no_value_for_a_zero_denominator() -> None:
    assert ratio(9.0, 3.0) == 3.0
    assert ratio(0.0, 5.0) == 0.0
    assert ratio(5.0, 0.0) is None


def test_e2e_is_compared_as_cost_ratios_and_accuracy_gaps_in_points() -> None:
    modes = hand_made_modes()
    comparison = compare(modes["e2e"], modes["lw"])
    assert (comparison.reference, comparison.other) == ("e2e", "lw")
    assert comparison.peak_train_memory_ratio == pytest.approx(4.0)
    assert comparison.gflops_ratio == pytest.approx(4.0)
    assert comparison.bytes_ratio == pytest.approx(5.0)
    assert comparison.linear_probe_gap_points == pytest.approx(2.5)
    assert comparison.knn_gap_points == pytest.approx(5.0)


def test_a_mode_that_is_better_than_e2e_has_a_negative_gap() -> None:
    modes = hand_made_modes()
    better = replace(modes["lw"], linear_probe_accuracy=0.9)
    assert compare(modes["e2e"], better).linear_probe_gap_points == pytest.approx(-7.5)


def test_every_mode_is_compared_with_e2e_and_nothing_without_it() -> None:
    modes = hand_made_modes()
    comparisons = compare_modes(modes)
    assert [item.other for item in comparisons] == ["lw", "prog"]
    assert comparisons[1].bytes_ratio == pytest.approx(2.0)
    assert compare_modes({"lw": modes["lw"]}) == ()


def test_the_markdown_shows_each_mode_the_ratios_and_the_references() -> None:
    modes = hand_made_modes()
    results = BenchmarkResults(
        config=preset_config("vit", "smoke"),
        machine={"cpu_count": 2, "torch_version": "x", "torch_threads": 1, "memory_method": "kernel"},
        modes=modes,
        comparisons=compare_modes(modes),
        random_init=ReferenceAccuracy(linear_probe_accuracy=0.5, knn_accuracy=0.4, evaluation_seconds=1.0),
    )
    markdown = render_markdown(results)
    assert "| e2e/lw | e2e/prog |" in markdown
    assert "| peak training memory | 4.00x | 2.00x |" in markdown
    assert "| linear-probe gap (points) | +2.5 | +1.5 |" in markdown
    assert "random init (reference) | - | 50.0% | 40.0%" in markdown
    smoke = preset_config("vit", "smoke").spec
    assert f"learning rate 0.001, seed 0; ViT of {smoke.depth} blocks, width {smoke.embed_dim}," in markdown
    for mode in MODES:
        assert f"## {mode} (torch) per stage" in markdown


def test_the_results_round_trip_through_json() -> None:
    result = hand_made_modes()["prog"]
    assert ModeResult.from_dict(json.loads(json.dumps(result.to_dict()))) == result


def test_configurations_round_trip_and_reject_bad_values() -> None:
    config = preset_config("resnet", "paper")
    assert BenchmarkConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    assert with_overrides(config, clients=None, seed=3).seed == 3
    with pytest.raises(ConfigurationError):
        with_overrides(config, modes=("lw", "fast"))
    with pytest.raises(ConfigurationError):
        with_overrides(config, clients=0)
    with pytest.raises(ConfigurationError):
        preset_config("vit", "huge")


def parse(*arguments: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    runner.add_arguments(parser)
    return parser.parse_args(list(arguments))


def test_command_line_overrides_reach_the_configuration() -> None:
    args = parse("--model", "resnet", "--preset", "paper", "--clients", "3", "--dirichlet-alpha", "0.5")
    config = runner.config_from_arguments(args)
    assert (config.model, config.preset, config.clients, config.dirichlet_alpha) == (
        "resnet",
        "paper",
        3,
        0.5,
    )
    assert config.modes == MODES
    assert runner.config_from_arguments(parse("--modes", "lw, e2e")).modes == ("lw", "e2e")


@pytest.mark.slow
@pytest.mark.parametrize("model", ["vit", "resnet"])
def test_the_smoke_preset_runs_end_to_end(
    model: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert runner.run(parse("--model", model, "--preset", "smoke", "--out", str(tmp_path))) == 0
    assert "## Summary" in capsys.readouterr().out
    for name in (
        "results.json",
        "results.md",
        "accuracy_vs_bytes.png",
        "accuracy_vs_gflops.png",
        "memory_per_stage.png",
    ):
        assert (tmp_path / name).stat().st_size > 0, name
    results: dict[str, Any] = json.loads((tmp_path / "results.json").read_text())
    assert set(results) >= {"config", "machine", "modes", "references", "comparisons"}
    assert results["machine"]["cpu_count"] >= 1 and results["machine"]["torch_version"]
    modes = results["modes"]
    assert set(modes) == set(MODES)
    stages = results["config"]["spec"]["stages"]
    for mode in MODES:
        result = modes[mode]
        for key in ("linear_probe_accuracy", "knn_accuracy"):
            assert 0.0 <= result[key] <= 1.0
        assert result["peak_train_memory_bytes"] > 0
        assert result["wall_seconds"] > 0
        assert len(result["stages"]) == stages
        assert len(result["rounds"]) == stages * results["config"]["rounds_per_stage"]
    # Deterministic consequences of what each mode trains and exchanges.
    assert (
        modes["lw"]["bytes_per_client"] < modes["prog"]["bytes_per_client"] < modes["e2e"]["bytes_per_client"]
    )
    assert (
        modes["lw"]["gflops_per_client"]
        < modes["prog"]["gflops_per_client"]
        < modes["e2e"]["gflops_per_client"]
    )
    assert json.loads(json.dumps(BenchmarkResults.from_dict(results).to_dict())) == results
    random_init = results["references"]["random_init"]
    assert 0.0 <= random_init["linear_probe_accuracy"] <= 1.0
    assert results["comparisons"]["e2e_over_lw"]["bytes_ratio"] > 1.0


def test_the_paper_options_reach_the_configuration() -> None:
    config = runner.config_from_arguments(
        parse(
            "--preset", "paper12", "--blocks-per-stage", "2", "--partition", "dirichlet", "--alpha", "0.5",
            "--participation", "0.25", "--clients", "20", "--compression", "topk", "--topk-fraction", "0.05",
        )
    )  # fmt: skip
    assert (config.spec.depth, config.spec.stages) == (12, 6)
    one_block = runner.config_from_arguments(parse("--preset", "paper12"))
    assert config.total_rounds == one_block.total_rounds  # grouped blocks: as many rounds, fewer stages
    assert config.rounds_per_stage == 2 * one_block.rounds_per_stage
    assert (config.dirichlet_alpha, config.participation, config.clients) == (0.5, 0.25, 20)
    assert config.compression.describe() == "topk(0.05)+ef"
    assert BenchmarkConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    iid = runner.config_from_arguments(parse("--preset", "paper12", "--partition", "iid"))
    assert iid.dirichlet_alpha is None and iid.spec.stages == 12 and iid.clients == 8
    tuned = runner.config_from_arguments(parse("--preset", "paper12", "--learning-rate", "0.01"))
    assert tuned.learning_rate == 0.01 != one_block.learning_rate
    int8 = runner.config_from_arguments(parse("--compression", "int8", "--no-error-feedback"))
    assert int8.compression.method == "int8"


@pytest.mark.parametrize(
    "arguments",
    [
        ("--blocks-per-stage", "5", "--preset", "paper12"),
        ("--model", "resnet", "--blocks-per-stage", "2"),
        ("--model", "resnet", "--preset", "paper12"),
        ("--partition", "dirichlet"),
        ("--alpha", "0.5"),
        ("--partition", "iid", "--alpha", "0.5"),
        ("--participation", "0"),
        ("--topk-fraction", "0.1"),
    ],
)
def test_contradictory_paper_options_are_configuration_errors(arguments: tuple[str, ...]) -> None:
    with pytest.raises(ConfigurationError):
        runner.config_from_arguments(parse(*arguments))


def test_seeds_must_be_distinct_non_negative_integers() -> None:
    assert runner.parse_seeds("0, 1,2") == (0, 1, 2)
    for bad in ("", "0,0", "a", "-1"):
        with pytest.raises(ConfigurationError):
            runner.parse_seeds(bad)


def test_every_figure_is_summarised_over_seeds_with_a_t_interval() -> None:
    modes = hand_made_modes()
    per_seed = [
        seed_figures(
            BenchmarkResults(
                config=preset_config("vit", "smoke"),
                machine={},
                modes={
                    name: replace(result, linear_probe_accuracy=accuracy) for name, result in modes.items()
                },
                comparisons=compare_modes(modes),
                random_init=ReferenceAccuracy(0.5, 0.4, 1.0),
            ).to_dict()
        )
        for accuracy in (0.70, 0.72, 0.74)
    ]
    summary = summarise(per_seed)
    probe = summary["modes"]["lw"]["linear_probe_accuracy"]
    assert probe["mean"] == pytest.approx(0.72) and probe["std"] == pytest.approx(0.02)
    assert probe["ci95"] == pytest.approx(4.303 * 0.02 / 3**0.5)
    assert probe["values"] == [0.70, 0.72, 0.74]
    assert summary["modes"]["lw"]["stages"][0]["knn_accuracy"]["std"] == 0.0
    assert summary["modes"]["lw"]["mode"] == "lw"
    assert "rounds" not in summary["modes"]["lw"]
    assert summary["comparisons"]["e2e_over_lw"]["peak_train_memory_ratio"]["mean"] == pytest.approx(4.0)
    markdown = render_seed_markdown(summary, (0, 1, 2), "title")
    assert "| lw | 72.0 ± 5.0 |" in markdown
    assert figure_statistics([1.0])["ci95"] is None


def test_a_multi_seed_run_writes_the_summary_the_tables_and_the_plots(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ran: list[int] = []

    def fake_comparison(config: BenchmarkConfig, out: Path) -> BenchmarkResults:
        ran.append(config.seed)
        modes = {
            name: replace(result, linear_probe_accuracy=0.7 + 0.01 * config.seed)
            for name, result in hand_made_modes().items()
        }
        return BenchmarkResults(
            config=config,
            machine={},
            modes=modes,
            comparisons=compare_modes(modes),
            random_init=ReferenceAccuracy(0.5, 0.4, 1.0),
        )

    monkeypatch.setattr(runner, "run_comparison", fake_comparison)
    assert runner.run_seeds(preset_config("vit", "smoke"), (3, 4, 5), tmp_path) == 0
    assert ran == [3, 4, 5]
    document = json.loads((tmp_path / "results.json").read_text())
    assert document["schema"] == "layerfed-benchmark-seeds/1" and document["seeds"] == [3, 4, 5]
    assert document["summary"]["modes"]["e2e"]["linear_probe_accuracy"]["values"] == [0.73, 0.74, 0.75]
    assert "seed" not in document["config"]
    assert "| e2e | 74.0 ± 2.5 |" in (tmp_path / "results.md").read_text()
    assert (tmp_path / "accuracy_vs_bytes.png").stat().st_size > 0
    assert (tmp_path / "memory_per_stage.png").stat().st_size > 0
