"""The three figures of a benchmark run, drawn with matplotlib's Agg backend (no display needed).

Accuracy is plotted against what a client paid so far (bytes exchanged, GFLOPs), one point per stage,
so a curve shows what each mode buys with its budget; the x axes are logarithmic because the modes'
costs differ several-fold. The references are horizontal lines: their cost is not comparable.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as pyplot
from matplotlib import ticker
from matplotlib.axes import Axes

from agent.benchmark.report import MEBIBYTE, MEGABYTE
from agent.benchmark.results import BenchmarkResults, StageResult


def _reference_lines(axes: Axes, results: BenchmarkResults) -> None:
    if results.random_init is not None:
        reference = results.random_init
        axes.axhline(100 * reference.linear_probe_accuracy, color="grey", label="random init linear probe")
        axes.axhline(
            100 * reference.knn_accuracy, color="grey", linestyle="--", alpha=0.6, label="random init kNN"
        )
    if results.centralised is not None:
        axes.axhline(
            100 * results.centralised.linear_probe_accuracy,
            color="black",
            linestyle=":",
            label="centralised SimCLR",
        )


def _accuracy_plot(
    results: BenchmarkResults, path: Path, cost: Callable[[StageResult], float], label: str
) -> Path:
    figure, axes = pyplot.subplots(figsize=(8.8, 4.6))
    for name, result in results.modes.items():
        costs = [cost(stage) for stage in result.stages]
        probe = axes.plot(
            costs,
            [100 * stage.linear_probe_accuracy for stage in result.stages],
            marker="o",
            label=f"{name} linear probe",
        )
        axes.plot(
            costs,
            [100 * stage.knn_accuracy for stage in result.stages],
            marker=".",
            linestyle="--",
            alpha=0.6,
            color=probe[0].get_color(),
            label=f"{name} kNN",
        )
    _reference_lines(axes, results)
    axes.set_xscale("log")
    axes.xaxis.set_major_locator(ticker.LogLocator(subs=(1.0, 2.0, 5.0)))
    axes.xaxis.set_major_formatter(ticker.FuncFormatter(lambda value, _position: f"{value:g}"))
    axes.xaxis.set_minor_formatter(ticker.NullFormatter())
    axes.set_xlabel(label)
    axes.set_ylabel("test accuracy (%)")
    axes.set_title(f"{results.config.model} ({results.config.preset}): accuracy after each stage")
    axes.grid(True, which="both", alpha=0.3)
    axes.legend(fontsize="small", loc="center left", bbox_to_anchor=(1.01, 0.5))
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    pyplot.close(figure)
    return path


def _memory_plot(results: BenchmarkResults, path: Path) -> Path:
    figure, axes = pyplot.subplots(figsize=(6.4, 4.4))
    names = list(results.modes)
    width = 0.8 / max(1, len(names))
    for position, name in enumerate(names):
        stages = results.modes[name].stages
        offsets = [stage.stage + (position - (len(names) - 1) / 2) * width for stage in stages]
        axes.bar(offsets, [stage.peak_train_memory_bytes / MEBIBYTE for stage in stages], width, label=name)
    axes.set_xlabel("stage")
    axes.set_ylabel("peak training memory per client (MiB)")
    axes.set_xticks(range(1, results.config.spec.stages + 1))
    axes.set_title(f"{results.config.model} ({results.config.preset}): training memory")
    axes.grid(True, axis="y", alpha=0.3)
    axes.legend(fontsize="small")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    pyplot.close(figure)
    return path


def write_plots(results: BenchmarkResults, directory: Path) -> list[Path]:
    """Write the three PNGs into ``directory`` and return their paths."""
    return [
        _accuracy_plot(
            results,
            directory / "accuracy_vs_bytes.png",
            lambda stage: stage.cumulative_bytes_per_client / MEGABYTE,
            "MB exchanged per client so far (up + down)",
        ),
        _accuracy_plot(
            results,
            directory / "accuracy_vs_gflops.png",
            lambda stage: stage.cumulative_gflops_per_client,
            "GFLOPs per client so far",
        ),
        _memory_plot(results, directory / "memory_per_stage.png"),
    ]


def write_seed_plots(summary: Mapping[str, Any], directory: Path, title: str) -> list[Path]:
    """The multi-seed figures: per-stage accuracy against cumulative bytes, and per-stage peak memory,
    each point the mean over the seeds with its 95 % interval as an error bar."""
    accuracy_path = directory / "accuracy_vs_bytes.png"
    figure, axes = pyplot.subplots(figsize=(8.8, 4.6))
    for name, mode in summary["modes"].items():
        stages = mode["stages"]
        costs = [stage["cumulative_bytes_per_client"]["mean"] / MEGABYTE for stage in stages]
        color = None
        for key, style, label in (
            ("linear_probe_accuracy", "-o", "linear probe"),
            ("knn_accuracy", "--.", "kNN"),
        ):
            drawn = axes.errorbar(
                costs,
                [100 * stage[key]["mean"] for stage in stages],
                yerr=[100 * (stage[key]["ci95"] or 0.0) for stage in stages],
                fmt=style,
                capsize=3,
                color=color,
                label=f"{name} {label}",
            )
            color = drawn.lines[0].get_color()
    random_init = summary["references"].get("random_init")
    if random_init:
        axes.axhline(
            100 * random_init["linear_probe_accuracy"]["mean"], color="grey", label="random init probe"
        )
    axes.set_xscale("log")
    axes.xaxis.set_major_formatter(ticker.FuncFormatter(lambda value, _position: f"{value:g}"))
    axes.set_xlabel("MB exchanged per client so far (up + down)")
    axes.set_ylabel("test accuracy (%), mean and 95% interval")
    axes.set_title(f"{title}: accuracy after each stage")
    axes.grid(True, which="both", alpha=0.3)
    axes.legend(fontsize="small", loc="center left", bbox_to_anchor=(1.01, 0.5))
    figure.tight_layout()
    figure.savefig(accuracy_path, dpi=120)
    pyplot.close(figure)

    # the layout of _memory_plot, deliberately: the same figure, drawn from summaries with error bars
    memory_path = directory / "memory_per_stage.png"
    figure, axes = pyplot.subplots(figsize=(6.4, 4.4))
    names = list(summary["modes"])
    width = 0.8 / max(1, len(names))
    for position, name in enumerate(names):
        stages = summary["modes"][name]["stages"]
        axes.bar(
            [stage["stage"]["mean"] + (position - (len(names) - 1) / 2) * width for stage in stages],
            [stage["peak_train_memory_bytes"]["mean"] / MEBIBYTE for stage in stages],
            width,
            yerr=[(stage["peak_train_memory_bytes"]["ci95"] or 0.0) / MEBIBYTE for stage in stages],
            capsize=2,
            label=name,
        )
    axes.set_xlabel("stage")
    axes.set_ylabel("peak training memory per client (MiB)")
    axes.set_title(f"{title}: training memory")
    axes.grid(True, axis="y", alpha=0.3)
    axes.legend(fontsize="small")
    figure.tight_layout()
    figure.savefig(memory_path, dpi=120)
    pyplot.close(figure)
    return [accuracy_path, memory_path]
