"""The comparisons, and ``results.md``: e2e against each cheaper mode, each further training backend
against the reference one, and a table per mode.

Costs are compared as ratios e2e / mode (how many times more e2e needs); accuracy as gaps e2e - mode in
percentage points, since a ratio of two accuracies hides how far apart they are. Backends are compared
the other way round, backend / reference (ort / torch), per mode and stage: the question there is how
much more (or less) the alternative costs.
"""

from __future__ import annotations

from collections.abc import Mapping

from agent.benchmark.presets import BenchmarkConfig
from agent.benchmark.results import BackendComparison, BenchmarkResults, Comparison, ModeResult
from agent.learning.modes import TrainingMode

REFERENCE_MODE = TrainingMode.END_TO_END.value
MEBIBYTE = 1024 * 1024
MEGABYTE = 1e6


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    """``numerator / denominator``, or None where either is missing or the denominator is zero."""
    if numerator is None or denominator is None or denominator == 0:
        return None
    return numerator / denominator


def compare(reference: ModeResult, other: ModeResult) -> Comparison:
    return Comparison(
        reference=reference.mode,
        other=other.mode,
        peak_train_memory_ratio=ratio(reference.peak_train_memory_bytes, other.peak_train_memory_bytes),
        gflops_ratio=ratio(reference.gflops_per_client, other.gflops_per_client),
        bytes_ratio=ratio(reference.bytes_per_client, other.bytes_per_client),
        linear_probe_gap_points=100 * (reference.linear_probe_accuracy - other.linear_probe_accuracy),
        knn_gap_points=100 * (reference.knn_accuracy - other.knn_accuracy),
    )


def compare_modes(modes: Mapping[str, ModeResult]) -> tuple[Comparison, ...]:
    """e2e against every other mode that ran (none when e2e did not run)."""
    if REFERENCE_MODE not in modes:
        return ()
    reference = modes[REFERENCE_MODE]
    return tuple(compare(reference, result) for name, result in modes.items() if name != REFERENCE_MODE)


def compare_backend(result: ModeResult, reference: ModeResult, stage: int | None) -> BackendComparison:
    """``result`` against ``reference`` (same mode, another backend), at ``stage`` or (None) overall."""
    if stage is None:
        seconds, reference_seconds = result.seconds_per_step, reference.seconds_per_step
        memory, reference_memory = result.peak_train_memory_bytes, reference.peak_train_memory_bytes
    else:
        mine = {item.stage: item for item in result.stages}[stage]
        theirs = {item.stage: item for item in reference.stages}[stage]
        seconds, reference_seconds = mine.seconds_per_step, theirs.seconds_per_step
        memory, reference_memory = mine.peak_train_memory_bytes, theirs.peak_train_memory_bytes
    return BackendComparison(
        backend=result.backend,
        reference=reference.backend,
        mode=result.mode,
        stage=stage,
        seconds_per_step=seconds,
        reference_seconds_per_step=reference_seconds,
        peak_train_memory_bytes=memory,
        reference_peak_train_memory_bytes=reference_memory,
        seconds_per_step_ratio=ratio(seconds, reference_seconds),
        peak_train_memory_ratio=ratio(memory, reference_memory),
    )


def compare_backends(
    reference_modes: Mapping[str, ModeResult], other_backends: Mapping[str, Mapping[str, ModeResult]]
) -> tuple[BackendComparison, ...]:
    """Every further backend against the reference: per mode, each stage, then the whole run."""
    rows: list[BackendComparison] = []
    for modes in other_backends.values():
        for name, result in modes.items():
            reference = reference_modes[name]
            stages = [item.stage for item in result.stages]
            rows += [compare_backend(result, reference, stage) for stage in [*stages, None]]
    return tuple(rows)


def _percent(value: float) -> str:
    return f"{100 * value:.1f}%"


def _times(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}x"


def _seconds(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def _summary_row(name: str, result: ModeResult, communicates: bool = True) -> str:
    """One mode's row; a run without peers (centralised) exchanges nothing, whatever its update's size."""
    cells = [
        name,
        result.backend,
        _percent(result.linear_probe_accuracy),
        _percent(result.knn_accuracy),
        f"{result.peak_train_memory_bytes / MEBIBYTE:.0f}",
        f"{result.gflops_per_client:.1f}",
        f"{result.bytes_per_client / MEGABYTE:.2f}" if communicates else "-",
        _seconds(result.seconds_per_step),
        f"{result.wall_seconds:.0f}",
    ]
    return "| " + " | ".join(cells) + " |"


def summary_table(results: BenchmarkResults) -> list[str]:
    lines = [
        "| mode | backend | linear probe | kNN | peak training memory (MiB) | GFLOPs per client "
        "| MB per client (up + down) | s per step | training wall s |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    lines += [_summary_row(name, result) for name, result in results.modes.items()]
    for modes in results.other_backends.values():
        lines += [_summary_row(name, result) for name, result in modes.items()]
    if results.centralised is not None:
        lines.append(_summary_row("centralised SimCLR (reference)", results.centralised, communicates=False))
    if results.random_init is not None:
        reference = results.random_init
        accuracies = f"{_percent(reference.linear_probe_accuracy)} | {_percent(reference.knn_accuracy)}"
        lines.append(f"| random init (reference) | - | {accuracies} | - | - | - | - | - |")
    return lines


def comparison_table(comparisons: tuple[Comparison, ...]) -> list[str]:
    if not comparisons:
        return ["(e2e did not run, so there is nothing to compare against.)"]
    header = " | ".join(f"{item.reference}/{item.other}" for item in comparisons)
    lines = [f"| | {header} |", "|---|" + "---:|" * len(comparisons)]
    rows = (
        ("peak training memory", [_times(item.peak_train_memory_ratio) for item in comparisons]),
        ("GFLOPs per client", [_times(item.gflops_ratio) for item in comparisons]),
        ("bytes per client", [_times(item.bytes_ratio) for item in comparisons]),
        ("linear-probe gap (points)", [f"{item.linear_probe_gap_points:+.1f}" for item in comparisons]),
        ("kNN gap (points)", [f"{item.knn_gap_points:+.1f}" for item in comparisons]),
    )
    lines += [f"| {label} | " + " | ".join(cells) + " |" for label, cells in rows]
    return lines


def backend_table(comparisons: tuple[BackendComparison, ...]) -> list[str]:
    """Step time and peak training memory of each backend side by side, per mode and stage."""
    reference = comparisons[0].reference
    lines = [
        f"| backend | mode | stage | {reference} s per step | backend s per step | time "
        f"backend/{reference} | {reference} peak MiB | backend peak MiB | memory backend/{reference} |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for item in comparisons:
        cells = [
            item.backend,
            item.mode,
            "all" if item.stage is None else str(item.stage),
            _seconds(item.reference_seconds_per_step),
            _seconds(item.seconds_per_step),
            _times(item.seconds_per_step_ratio),
            f"{item.reference_peak_train_memory_bytes / MEBIBYTE:.0f}",
            f"{item.peak_train_memory_bytes / MEBIBYTE:.0f}",
            _times(item.peak_train_memory_ratio),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def stage_table(result: ModeResult) -> list[str]:
    lines = [
        "| stage | readout after | linear probe | kNN | peak memory (MiB) | s per step "
        "| cumulative GFLOPs per client | cumulative MB per client | cumulative wall s |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for stage in result.stages:
        cells = [
            str(stage.stage),
            str(stage.readout_stage),
            _percent(stage.linear_probe_accuracy),
            _percent(stage.knn_accuracy),
            f"{stage.peak_train_memory_bytes / MEBIBYTE:.0f}",
            _seconds(stage.seconds_per_step),
            f"{stage.cumulative_gflops_per_client:.1f}",
            f"{stage.cumulative_bytes_per_client / MEGABYTE:.2f}",
            f"{stage.cumulative_wall_seconds:.0f}",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def encoder_description(config: BenchmarkConfig) -> str:
    """The encoder's shape in words, so that a results file says which model it measured."""
    spec = config.spec
    if spec.architecture == "vit":
        return (
            f"ViT of {spec.depth} blocks, width {spec.embed_dim}, {spec.attention_heads} attention head(s), "
            f"{spec.patch_size}x{spec.patch_size} patches"
        )
    return f"ResNet of widths {', '.join(str(width) for width in spec.widths[: spec.stages])}"


def render_markdown(results: BenchmarkResults) -> str:
    config = results.config
    machine = results.machine
    partition = "IID" if config.dirichlet_alpha is None else f"Dirichlet alpha={config.dirichlet_alpha}"
    lines = [
        f"# layerfed benchmark: {config.model}, preset {config.preset}",
        "",
        f"{config.clients} clients ({partition}), {config.spec.stages} stages x {config.rounds_per_stage} "
        f"rounds, {config.local_epochs} local epoch(s), batch {config.batch_size}, learning rate "
        f"{config.learning_rate:g}, seed {config.seed}; {encoder_description(config)}; "
        f"{config.dataset}: {config.train_limit or 'all'} training images, probe on {config.probe_limit}, "
        f"test on {config.test_limit or 'all'}. Updates: {config.compression.describe()}; "
        f"{config.participation:.0%} of the clients train each round.",
        f"Training backends: {', '.join(config.backends)}. "
        f"Machine: {machine.get('cpu_count')} CPUs, torch {machine.get('torch_version')} with "
        f"{machine.get('torch_threads')} thread(s); memory measured with the {machine.get('memory_method')} "
        "method (peak RSS minus RSS before training, per client; the maximum is shown).",
        *(
            [f"Differential privacy of every update: {results.privacy['description']}."]
            if results.privacy
            else []
        ),
        "",
        "## Summary",
        "",
        *summary_table(results),
        "",
        "## e2e relative to the other modes",
        "",
        *comparison_table(results.comparisons),
    ]
    if results.backend_comparisons:
        lines += [
            "",
            f"## Training backends relative to {config.backends[0]}",
            "",
            "Seconds per step: median time between the ends of consecutive optimizer steps of one client. "
            "Peak memory: the largest client's peak in that stage (or run). Ratios: backend / reference.",
            "",
            *backend_table(results.backend_comparisons),
        ]
    for name, result in results.modes.items():
        lines += ["", f"## {name} ({result.backend}) per stage", "", *stage_table(result)]
    for modes in results.other_backends.values():
        for name, result in modes.items():
            lines += ["", f"## {name} ({result.backend}) per stage", "", *stage_table(result)]
    return "\n".join(lines) + "\n"
