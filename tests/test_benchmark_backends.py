"""``layerfed bench --backends``: step timing, the backend comparison on hand-made results, job planning,
and torch against ort on the smoke preset end to end (slow, in CI)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any, cast

import pytest
import torch

from agent.benchmark import runner
from agent.benchmark.presets import preset_config, with_overrides
from agent.benchmark.report import compare_backends, compare_modes, render_markdown
from agent.benchmark.results import BenchmarkResults, ModeResult
from agent.benchmark.worker import RANDOM_INIT_JOB, StepTimer
from agent.errors import BackendUnavailableError, ConfigurationError
from agent.learning.backends import onnx_runtime_platform_has_wheels
from agent.learning.backends.torch_backend import TorchBackend
from agent.learning.modes import TrainingMode
from agent.learning.simulation import initial_state
from agent.learning.training import ClientResult, TrainingConfig, train_client
from agent.learning.training_progress import TrainingHooks
from models.spec import EncoderSpec
from tests.test_benchmark import hand_made, parse

# Each mode's comparison rows: per stage, then the whole run (stage None).
COMPARED_ROWS = [("lw", 1), ("lw", 2), ("lw", None), ("e2e", 1), ("e2e", 2), ("e2e", None)]

MEBIBYTE = 1024 * 1024


def timed(
    result: ModeResult, backend: str, seconds: tuple[float, float], memory: tuple[int, int]
) -> ModeResult:
    """``result`` as trained by ``backend``, with per-stage step times and peaks."""
    stages = tuple(
        replace(stage, seconds_per_step=stage_seconds, peak_train_memory_bytes=stage_memory)
        for stage, stage_seconds, stage_memory in zip(result.stages, seconds, memory, strict=True)
    )
    return replace(
        result,
        backend=backend,
        stages=stages,
        seconds_per_step=sum(seconds) / 2,
        peak_train_memory_bytes=max(memory),
    )


def hand_made_backends() -> tuple[dict[str, ModeResult], dict[str, dict[str, ModeResult]]]:
    lw = hand_made("lw", memory=100, gflops=10.0, exchanged=2_000.0, linear_probe=0.8, knn=0.7)
    e2e = hand_made("e2e", memory=400, gflops=40.0, exchanged=10_000.0, linear_probe=0.82, knn=0.75)
    torch_modes = {
        "lw": timed(lw, "torch", (0.10, 0.20), (100 * MEBIBYTE, 80 * MEBIBYTE)),
        "e2e": timed(e2e, "torch", (0.40, 0.40), (400 * MEBIBYTE, 400 * MEBIBYTE)),
    }
    ort_modes = {
        "lw": timed(lw, "ort", (0.15, 0.10), (50 * MEBIBYTE, 120 * MEBIBYTE)),
        "e2e": timed(e2e, "ort", (0.60, 0.60), (200 * MEBIBYTE, 200 * MEBIBYTE)),
    }
    return torch_modes, {"ort": ort_modes}


def test_each_backend_is_compared_per_mode_and_stage_and_overall() -> None:
    torch_modes, others = hand_made_backends()
    rows = compare_backends(torch_modes, others)
    assert [(row.mode, row.stage) for row in rows] == COMPARED_ROWS
    assert all((row.backend, row.reference) == ("ort", "torch") for row in rows)
    lw_stage_1, lw_stage_2, lw_all = rows[:3]
    assert lw_stage_1.seconds_per_step_ratio == pytest.approx(1.5)
    assert lw_stage_1.peak_train_memory_ratio == pytest.approx(0.5)
    assert lw_stage_2.seconds_per_step_ratio == pytest.approx(0.5)
    assert lw_stage_2.peak_train_memory_ratio == pytest.approx(1.5)
    # Overall: the runs' own figures (median step, largest peak), not an average of the stage ratios.
    assert lw_all.seconds_per_step == pytest.approx(0.125)
    assert lw_all.seconds_per_step_ratio == pytest.approx(0.125 / 0.15)
    assert lw_all.peak_train_memory_ratio == pytest.approx(1.2)
    assert compare_backends(torch_modes, {}) == ()


def test_a_missing_step_time_gives_no_ratio_rather_than_a_wrong_one() -> None:
    torch_modes, others = hand_made_backends()
    untimed = replace(others["ort"]["lw"], seconds_per_step=None)
    row = compare_backends(torch_modes, {"ort": {"lw": untimed}})[-1]
    assert row.stage is None
    assert row.seconds_per_step_ratio is None
    assert row.peak_train_memory_ratio == pytest.approx(1.2)


def backend_results() -> BenchmarkResults:
    torch_modes, others = hand_made_backends()
    return BenchmarkResults(
        config=with_overrides(
            preset_config("resnet", "smoke"), modes=("lw", "e2e"), backends=("torch", "ort")
        ),
        machine={"cpu_count": 2, "torch_version": "x", "torch_threads": 1, "memory_method": "kernel"},
        modes=torch_modes,
        comparisons=compare_modes(torch_modes),
        other_backends=others,
        backend_comparisons=compare_backends(torch_modes, others),
    )


def test_the_markdown_sets_the_backends_side_by_side_with_their_ratios() -> None:
    markdown = render_markdown(backend_results())
    assert "## Training backends relative to torch" in markdown
    assert "| ort | lw | 1 | 0.100 | 0.150 | 1.50x | 100 | 50 | 0.50x |" in markdown
    assert "| ort | e2e | all | 0.400 | 0.600 | 1.50x | 400 | 200 | 0.50x |" in markdown
    for heading in ("lw (torch)", "e2e (torch)", "lw (ort)", "e2e (ort)"):
        assert f"## {heading} per stage" in markdown
    assert "| lw | ort | 80.0% |" in markdown


def test_backend_results_round_trip_through_json() -> None:
    results = backend_results()
    document = json.loads(json.dumps(results.to_dict()))
    assert document["schema"] == "layerfed-benchmark/2"
    assert document["backend_comparisons"][0]["seconds_per_step_ratio"] == pytest.approx(1.5)
    assert BenchmarkResults.from_dict(document) == results


def test_backends_are_validated_and_parsed_from_the_command_line() -> None:
    config = runner.config_from_arguments(parse("--backends", "torch, ort"))
    assert config.backends == ("torch", "ort")
    assert runner.config_from_arguments(parse()).backends == ("torch",)
    smoke = preset_config("vit", "smoke")
    for bad in (("torch", "torch"), ("tensorflow",), ()):
        with pytest.raises(ConfigurationError):
            replace(smoke, backends=bad)


def test_jobs_run_each_mode_with_every_backend_back_to_back() -> None:
    config = with_overrides(
        preset_config("vit", "smoke"), modes=("lw", "e2e"), backends=("torch", "ort"), centralised=True
    )
    assert runner.planned_jobs(config) == [
        (RANDOM_INIT_JOB, "torch"),
        ("lw", "torch"),
        ("lw", "ort"),
        ("e2e", "torch"),
        ("e2e", "ort"),
        ("centralised", "torch"),
    ]
    assert runner.job_name("lw", "ort") == "lw-ort"
    assert runner.job_name(RANDOM_INIT_JOB, "torch") == RANDOM_INIT_JOB


def test_an_unavailable_backend_fails_before_any_job_starts(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(runner, "unavailable_reason", lambda name: None if name == "torch" else "no wheel")
    started: list[str] = []
    monkeypatch.setattr(runner, "run_worker", lambda *arguments, **options: started.append("job"))
    with pytest.raises(BackendUnavailableError, match="no wheel"):
        runner.run(parse("--backends", "torch,ort", "--out", str(tmp_path)))
    assert started == []
    assert (
        runner.main(["--backends", "torch,ort", "--out", str(tmp_path)]) == BackendUnavailableError.exit_code
    )


class ScriptedBackend:
    """Calls ``should_stop`` at given times, as a backend does after each optimizer step."""

    name = "scripted"

    def __init__(self, clock: list[float], step_ends: list[float]) -> None:
        self.clock = clock
        self.step_ends = step_ends

    def prepare(self, config: TrainingConfig, stage: int) -> None:
        pass

    # Deliberate repetition: the TrainingBackend.train signature, repeated by every backend.
    def train(
        self,
        global_state: Mapping[str, torch.Tensor],
        stage: int,
        images: torch.Tensor,
        config: TrainingConfig,
        seed: int,
        *,
        hooks: TrainingHooks | None = None,
    ) -> ClientResult:
        assert hooks is not None
        for end in self.step_ends:
            self.clock[0] = end
            assert hooks.should_stop() is False
        return cast(ClientResult, None)  # the timer passes the result on untouched


def test_the_step_timer_keeps_the_times_between_consecutive_steps_of_each_client(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = [0.0]
    monkeypatch.setattr("agent.benchmark.worker.time.perf_counter", lambda: clock[0])
    timer = StepTimer(ScriptedBackend(clock, [5.0, 5.5, 6.5]))
    config = TrainingConfig(
        spec=preset_config("resnet", "smoke").spec, mode=TrainingMode.LAYER_WISE, federation_seed=0
    )
    empty = torch.empty(0)
    timer.train({}, 1, empty, config, seed=0)
    timer.train({}, 1, empty, config, seed=1)  # the gap between two clients is not a step
    assert timer.take_intervals() == [0.5, 1.0, 0.5, 1.0]
    assert timer.take_intervals() == []
    assert timer.name == "scripted"
    with pytest.raises(ConfigurationError):
        timer.train({}, 1, empty, config, seed=0, hooks=TrainingHooks())


def test_timing_steps_does_not_change_what_a_client_trains() -> None:
    config = TrainingConfig(
        spec=EncoderSpec(architecture="resnet", stages=2, widths=(8, 16), image_size=16, projection_dim=8),
        mode=TrainingMode.PROGRESSIVE,
        federation_seed=4,
        batch_size=8,
    )
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (28, 1, 16, 16), generator=generator, dtype=torch.uint8)
    state = initial_state(config)
    timer = StepTimer(TorchBackend())
    timed_result = timer.train(state, 2, images, config, seed=3)
    assert len(timer.take_intervals()) == timed_result.metrics.steps - 1 == 3
    untimed = train_client(state, 2, images, config, seed=3)
    assert timed_result.update.to_bytes() == untimed.update.to_bytes()


def stage_figures(result: dict[str, Any]) -> list[tuple[int, float | None]]:
    return [(stage["stage"], stage["seconds_per_step"]) for stage in result["stages"]]


@pytest.mark.slow
@pytest.mark.skipif(
    not onnx_runtime_platform_has_wheels(),
    reason="onnxruntime-training has no wheels for this platform (x86_64 Linux, Python 3.10-3.12 only)",
)
def test_torch_and_ort_run_the_smoke_preset_side_by_side(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    arguments = ("--model", "resnet", "--preset", "smoke", "--modes", "lw,e2e", "--backends", "torch,ort")
    assert runner.run(parse(*arguments, "--out", str(tmp_path))) == 0
    assert "## Training backends relative to torch" in capsys.readouterr().out
    results: dict[str, Any] = json.loads((tmp_path / "results.json").read_text())
    assert results["config"]["backends"] == ["torch", "ort"]
    assert results["machine"]["onnxruntime_training_version"] == "1.19.2"
    torch_modes, ort_modes = results["modes"], results["other_backends"]["ort"]
    assert set(ort_modes) == set(torch_modes) == {"lw", "e2e"}
    for mode in ("lw", "e2e"):
        assert torch_modes[mode]["backend"] == "torch" and ort_modes[mode]["backend"] == "ort"
        # The backends train the same recipe on the same data: identical FLOP counts and update sizes.
        assert ort_modes[mode]["gflops_per_client"] == pytest.approx(torch_modes[mode]["gflops_per_client"])
        assert ort_modes[mode]["bytes_per_client"] == torch_modes[mode]["bytes_per_client"]
        for result in (torch_modes[mode], ort_modes[mode]):
            assert [stage for stage, _ in stage_figures(result)] == [1, 2]
            assert all(seconds is not None and seconds > 0 for _, seconds in stage_figures(result))
            assert all(item["steps_per_client"] >= 2 for item in result["rounds"])
    rows = results["backend_comparisons"]
    assert [(row["mode"], row["stage"]) for row in rows] == COMPARED_ROWS
    for row in rows:
        assert row["seconds_per_step_ratio"] == pytest.approx(
            row["seconds_per_step"] / row["reference_seconds_per_step"]
        )
        assert row["peak_train_memory_ratio"] == pytest.approx(
            row["peak_train_memory_bytes"] / row["reference_peak_train_memory_bytes"]
        )
    assert sorted(path.name for path in (tmp_path / "jobs").iterdir()) == [
        "e2e-ort.json",
        "e2e-torch.json",
        "lw-ort.json",
        "lw-torch.json",
        "random-init.json",
    ]
    # Graphs are built once per (mode, stage) into the run's cache, where a second run would find them.
    assert any((tmp_path / "backend-cache").iterdir())
    assert json.loads(json.dumps(BenchmarkResults.from_dict(results).to_dict())) == results
