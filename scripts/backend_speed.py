#!/usr/bin/env python3
"""Seconds per training step and peak training memory of each training backend, per mode and stage.

    .venv/bin/python scripts/backend_speed.py                       # paper presets, every mode and stage
    .venv/bin/python scripts/backend_speed.py --models vit --modes lw --stages 1,6 --steps 6

``layerfed bench --backends torch,ort`` measures the same figures inside the federated schedule (every
round, with evaluation); this script isolates one (model, mode, stage) at a time, which is quicker when
profiling one configuration. Every configuration runs in a fresh process, as the benchmark's workers do,
so that no figure includes what another configuration loaded or cached. In that process: one unmeasured
round of one step (process start-up: kornia, the allocator, ONNX Runtime's environment), then a measured
round of ``--steps`` steps with the benchmark's peak-memory meter around it (peak RSS minus the RSS just
before the round). Seconds per step is the median time between the ends of consecutive optimizer steps
(both backends call the training hooks after every step), which is robust to a busy machine and leaves
out the first step (both backends count FLOPs there); what the round cost beyond its steps (building the
model or ONNX Runtime's sessions, counting FLOPs, reading the update back) is reported as setup.

What a backend builds once per stage (``TrainingBackend.prepare``: the ``ort`` graphs) is built
beforehand in the parent process (on a device it is cached), so neither its time nor its memory is
counted. Models, batch size, learning rate and seed are the benchmark preset's
(``agent/benchmark/presets.py``); images are Fashion-MNIST's first training images when the Debian
package is installed, random ones otherwise.
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

MEBIBYTE = 1024 * 1024


@dataclass(frozen=True)
class Measurement:
    model: str
    mode: str
    stage: int
    backend: str
    seconds_per_step: float
    setup_seconds: float
    peak_training_bytes: int
    loss: float
    threads: int


def training_setup(model: str, preset: str, mode: str, steps: int):  # type: ignore[no-untyped-def]
    """The preset's training configuration and ``steps`` batches of images."""
    import torch

    from agent.benchmark.presets import preset_config
    from agent.data.registry import load_dataset
    from agent.errors import DataError
    from agent.learning.modes import TrainingMode
    from agent.learning.training import TrainingConfig

    benchmark = preset_config(model, preset)
    config = TrainingConfig(
        spec=benchmark.spec,
        mode=TrainingMode.parse(mode),
        federation_seed=benchmark.seed,
        batch_size=benchmark.batch_size,
        learning_rate=benchmark.learning_rate,
    )
    count = benchmark.batch_size * steps
    try:
        images = load_dataset("fashion-mnist", None, "train", limit=count).images
    except DataError:
        generator = torch.Generator().manual_seed(0)
        spec = benchmark.spec
        shape = (count, spec.image_channels, spec.image_size, spec.image_size)
        images = torch.randint(0, 256, shape, generator=generator, dtype=torch.uint8)
    return config, images


def measure(arguments: argparse.Namespace) -> Measurement:
    """One configuration, in this (fresh) process."""
    import torch

    from agent.benchmark.memory import PeakMemoryMeter
    from agent.learning.backends import select_backend
    from agent.learning.simulation import initial_state
    from agent.learning.training_progress import TrainingHooks

    torch.set_num_threads(arguments.threads)
    config, images = training_setup(arguments.model, arguments.preset, arguments.mode, arguments.steps)
    state = initial_state(config)
    backend = select_backend(arguments.backend, cache_directory=arguments.cache)
    backend.train(state, arguments.stage, images[: config.batch_size], config, seed=0)  # start-up
    step_ends: list[float] = []

    def note_step_end() -> bool:  # both backends ask after every optimizer step
        step_ends.append(time.perf_counter())
        return False

    meter = PeakMemoryMeter()
    meter.start()
    started = time.perf_counter()
    result = backend.train(
        state, arguments.stage, images, config, seed=1, hooks=TrainingHooks(should_stop=note_step_end)
    )
    total = time.perf_counter() - started
    peak = meter.stop()
    # The first step also counts FLOPs (both backends) and pays first-call costs; the rest are steady.
    per_step = statistics.median(later - earlier for earlier, later in itertools.pairwise(step_ends))
    return Measurement(
        model=arguments.model,
        mode=arguments.mode,
        stage=arguments.stage,
        backend=arguments.backend,
        seconds_per_step=per_step,
        setup_seconds=total - per_step * len(step_ends),
        peak_training_bytes=peak,
        loss=result.metrics.loss,
        threads=torch.get_num_threads(),
    )


def prepare(arguments: argparse.Namespace) -> None:
    """Build what each backend builds once per stage (``ort``: its graphs), so it is not measured."""
    from agent.learning.backends import select_backend

    for name in arguments.backends:
        backend = select_backend(name, cache_directory=arguments.cache)
        for model, mode, stage in configurations(arguments):
            config, _images = training_setup(model, arguments.preset, mode, 1)
            backend.prepare(config, stage)


def configurations(arguments: argparse.Namespace) -> list[tuple[str, str, int]]:
    """(model, mode, stage) to measure; ``e2e`` trains the same graph at every stage, so once."""
    from agent.benchmark.presets import preset_config

    chosen: list[tuple[str, str, int]] = []
    for model in arguments.models:
        stages = preset_config(model, arguments.preset).spec.stages
        if arguments.stages == "all":
            wanted = list(range(1, stages + 1))
        else:
            wanted = [int(stage) for stage in arguments.stages.split(",") if 1 <= int(stage) <= stages]
        for mode in arguments.modes:
            chosen.extend((model, mode, stage) for stage in ([1] if mode == "e2e" else wanted))
    return chosen


def run_child(arguments: argparse.Namespace, model: str, mode: str, stage: int, backend: str) -> Measurement:
    command = [
        sys.executable,
        __file__,
        "--measure",
        "--models",
        model,
        "--modes",
        mode,
        "--stage",
        str(stage),
        "--backend",
        backend,
        "--preset",
        arguments.preset,
        "--steps",
        str(arguments.steps),
        "--threads",
        str(arguments.threads),
        "--cache",
        str(arguments.cache),
    ]
    completed = subprocess.run(command, capture_output=True, text=True, check=False, cwd=ROOT)
    if completed.returncode != 0:
        raise SystemExit(f"{model} {mode} stage {stage} {backend} failed:\n{completed.stderr[-3000:]}")
    return Measurement(**json.loads(completed.stdout.strip().splitlines()[-1]))


def report(measurements: list[Measurement]) -> str:
    """One row per (model, mode, stage): both backends side by side, ort over torch."""
    rows = [
        "| model | mode | stage | torch s/step | ort s/step | ort/torch | torch MiB | ort MiB | ort/torch "
        "| setup s torch / ort |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    keyed = {(item.model, item.mode, item.stage, item.backend): item for item in measurements}
    for model, mode, stage in dict.fromkeys((item.model, item.mode, item.stage) for item in measurements):
        torch_run, ort_run = keyed.get((model, mode, stage, "torch")), keyed.get((model, mode, stage, "ort"))
        if torch_run is None or ort_run is None:
            continue
        torch_memory, ort_memory = torch_run.peak_training_bytes, ort_run.peak_training_bytes
        rows.append(
            f"| {model} | {mode} | {stage} "
            f"| {torch_run.seconds_per_step:.3f} | {ort_run.seconds_per_step:.3f} "
            f"| {ort_run.seconds_per_step / torch_run.seconds_per_step:.2f} "
            f"| {torch_memory / MEBIBYTE:.0f} | {ort_memory / MEBIBYTE:.0f} "
            f"| {ort_memory / max(torch_memory, 1):.2f} "
            f"| {torch_run.setup_seconds:.2f} / {ort_run.setup_seconds:.2f} |"
        )
    return "\n".join(rows)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--models", nargs="+", default=["resnet", "vit"])
    parser.add_argument("--modes", nargs="+", default=["lw", "prog", "e2e"])
    parser.add_argument("--backends", nargs="+", default=["torch", "ort"])
    parser.add_argument("--stages", default="all", help='"all" or a comma-separated list such as 1,4')
    parser.add_argument("--preset", default="paper", help="benchmark preset: paper or smoke (default paper)")
    parser.add_argument("--steps", type=int, default=6, help="steps in the measured round (at least 3)")
    parser.add_argument("--threads", type=int, default=2, help="torch and ONNX Runtime threads (default 2)")
    parser.add_argument("--json", type=Path, default=None, help="also write every measurement here")
    parser.add_argument("--measure", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--stage", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--backend", default="torch", help=argparse.SUPPRESS)
    parser.add_argument("--cache", type=Path, default=None, help=argparse.SUPPRESS)
    arguments = parser.parse_args()
    if arguments.steps < 3:
        parser.error("--steps must be at least 3")
    if arguments.measure:
        arguments.model, arguments.mode = arguments.models[0], arguments.modes[0]
        print(json.dumps(asdict(measure(arguments))))
        return 0
    with tempfile.TemporaryDirectory(prefix="layerfed-backend-speed-") as cache:
        arguments.cache = Path(cache)
        prepare(arguments)
        measurements = []
        for model, mode, stage in configurations(arguments):
            for backend in arguments.backends:
                measurement = run_child(arguments, model, mode, stage, backend)
                measurements.append(measurement)
                megabytes = measurement.peak_training_bytes / MEBIBYTE
                print(
                    f"{model} {mode} stage {stage} {backend}: {measurement.seconds_per_step:.3f} s/step, "
                    f"{megabytes:.0f} MiB, setup {measurement.setup_seconds:.2f} s",
                    file=sys.stderr,
                    flush=True,
                )
    print(report(measurements))
    if arguments.json is not None:
        arguments.json.write_text(json.dumps([asdict(item) for item in measurements], indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
