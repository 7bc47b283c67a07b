"""``--seeds 0,1,2``: the whole comparison once per seed, then the spread of every figure.

One seed cannot tell a 1-2 point gap from noise: the seed fixes the initial model, the partition, the
shuffling, the augmentations and who takes part. Each seed runs the full comparison into ``DIR/seed-S/``
(its own results.json, results.md and plots); this module then reads every figure that all seeds have
(each mode's totals and per-stage figures, the references, the e2e comparisons) and reports, per figure,
the mean, the sample standard deviation and the half-width of the 95 % confidence interval of the mean
(Student's t with n - 1 degrees of freedom), with the per-seed values. Per-round figures stay in the
per-seed files.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from typing import Any

SCHEMA = "layerfed-benchmark-seeds/1"

# Two-sided 97.5 % quantiles of Student's t for 1..30 degrees of freedom (beyond: the normal's 1.96).
T_975 = (
    12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228,
    2.201, 2.179, 2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086,
    2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042,
)  # fmt: skip


def t_quantile(degrees_of_freedom: int) -> float:
    return T_975[degrees_of_freedom - 1] if degrees_of_freedom <= len(T_975) else 1.96


def figure_statistics(values: Sequence[float]) -> dict[str, Any]:
    """Mean, sample standard deviation and 95 % half-width of ``values`` (None for one value)."""
    count = len(values)
    mean = math.fsum(values) / count
    deviation = statistics.stdev(values) if count > 1 else None
    half_width = t_quantile(count - 1) * deviation / math.sqrt(count) if deviation is not None else None
    return {"mean": mean, "std": deviation, "ci95": half_width, "n": count, "values": list(values)}


def is_figure(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def summarise(per_seed: Sequence[Any]) -> Any:
    """The same structure as each element, every number replaced by :func:`figure_statistics` over the
    seeds; mappings keep the keys all seeds share, lists of equal length are summarised item by item,
    anything else is kept where all seeds agree (a mode's name) and listed where they do not."""
    first = per_seed[0]
    if all(is_figure(value) for value in per_seed):
        return figure_statistics([float(value) for value in per_seed])
    if all(isinstance(value, Mapping) for value in per_seed):
        shared = [key for key in first if all(key in value for value in per_seed)]
        return {key: summarise([value[key] for value in per_seed]) for key in shared}
    if (
        all(isinstance(value, list | tuple) for value in per_seed)
        and len({len(value) for value in per_seed}) == 1
    ):
        return [summarise([value[index] for value in per_seed]) for index in range(len(first))]
    return first if all(value == first for value in per_seed) else list(per_seed)


def seed_figures(results: Mapping[str, Any]) -> dict[str, Any]:
    """What is summarised of one seed's ``results.json``: modes (without per-round records), references,
    comparisons."""
    modes = {
        name: {key: value for key, value in mode.items() if key != "rounds"}
        for name, mode in results["modes"].items()
    }
    references = {
        name: ({key: value for key, value in reference.items() if key != "rounds"} if reference else None)
        for name, reference in results["references"].items()
    }
    return {"modes": modes, "references": references, "comparisons": results["comparisons"]}


def mean_and_interval(figure: Mapping[str, Any], scale: float = 1.0, digits: int = 1) -> str:
    """``mean ± ci95`` of a summarised figure, multiplied by ``scale``; just the mean for one seed; n/a
    where some seed had no value (a ratio over zero)."""
    if not isinstance(figure, Mapping) or "mean" not in figure:
        return "n/a"
    mean = figure["mean"] * scale
    if figure["ci95"] is None:
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {figure['ci95'] * scale:.{digits}f}"


def render_markdown(summary: Mapping[str, Any], seeds: Sequence[int], title: str) -> str:
    """``results.md`` of a multi-seed run: every mode's and comparison's figures as mean ± 95 % interval."""
    modes = summary["modes"]
    lines = [
        f"# {title}",
        "",
        f"Seeds {', '.join(str(seed) for seed in seeds)}: every figure is the mean over the seeds ± the "
        "half-width of its 95 % confidence interval (Student's t); per-seed results in `seed-S/`.",
        "",
        "| mode | linear probe (%) | kNN (%) | peak training memory (MiB) | GFLOPs per client "
        "| MB per client | training wall s |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, mode in modes.items():
        cells = [
            name,
            mean_and_interval(mode["linear_probe_accuracy"], 100),
            mean_and_interval(mode["knn_accuracy"], 100),
            mean_and_interval(mode["peak_train_memory_bytes"], 1 / 2**20, 0),
            mean_and_interval(mode["gflops_per_client"]),
            mean_and_interval(mode["bytes_per_client"], 1e-6, 2),
            mean_and_interval(mode["wall_seconds"], 1.0, 0),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    random_init = summary["references"].get("random_init")
    if random_init:
        probe = mean_and_interval(random_init["linear_probe_accuracy"], 100)
        knn = mean_and_interval(random_init["knn_accuracy"], 100)
        lines.append(f"| random init (reference) | {probe} | {knn} | - | - | - | - |")
    comparisons = summary["comparisons"]
    if comparisons:
        lines += ["", "| e2e over | memory ratio | GFLOPs ratio | bytes ratio | linear-probe gap (points) "
                  "| kNN gap (points) |", "|---|---:|---:|---:|---:|---:|"]  # fmt: skip
        for name, item in comparisons.items():
            cells = [
                name.removeprefix("e2e_over_"),
                mean_and_interval(item["peak_train_memory_ratio"], 1.0, 2),
                mean_and_interval(item["gflops_ratio"], 1.0, 2),
                mean_and_interval(item["bytes_ratio"], 1.0, 2),
                mean_and_interval(item["linear_probe_gap_points"]),
                mean_and_interval(item["knn_gap_points"]),
            ]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
