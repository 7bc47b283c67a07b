"""One benchmark job in a fresh process: train one mode (or evaluate a reference) and write its JSON.

    python -m agent.benchmark.worker --config CONFIG.json --job lw --backend ort --output lw-ort.json

The runner starts one process per job so that no job's memory figures include what an earlier job
allocated and the allocator kept. The job trains with :func:`agent.learning.simulation.simulate`, the
same client step and merge the agent runs, through the chosen training backend, and measures around it:
training memory per client (reset when the simulation announces a client, read when the next one starts
or the round ends), seconds per optimizer step, wall time per round, and linear-probe and kNN accuracy
after every stage. What a backend builds once per stage (``ort``: its training graphs, cached in
``--cache``) is built before anything is measured, as a device's cache would already hold it.

Jobs: ``lw``, ``prog``, ``e2e``; ``random-init`` (the untrained encoder, evaluated only);
``centralised`` (e2e SimCLR with all training images on one client, same schedule and epochs).
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from agent.benchmark.attacks import Attack
from agent.benchmark.memory import PeakMemoryMeter
from agent.benchmark.presets import BenchmarkConfig
from agent.benchmark.results import ModeResult, ReferenceAccuracy, RoundResult, StageResult
from agent.data import load_dataset, partition_dirichlet, partition_iid, stratified_limit_indices
from agent.errors import ConfigurationError, LayerfedError
from agent.learning.backends import DEFAULT_BACKEND, TrainingBackend, select_backend
from agent.learning.evaluation import evaluate
from agent.learning.modes import TrainingMode, head_stage
from agent.learning.simulation import RoundRecord, Schedule, initial_state, simulate
from agent.learning.training import ClientResult, TrainingConfig
from agent.learning.training_progress import TrainingHooks
from models.seeding import derive_seed

RANDOM_INIT_JOB = "random-init"
CENTRALISED_JOB = "centralised"
REFERENCE_JOBS: tuple[str, ...] = (RANDOM_INIT_JOB, CENTRALISED_JOB)
GIGA = 1e9


@dataclass(frozen=True)
class BenchmarkData:
    """Client shards (unlabelled) and the labelled sets the evaluation fits and tests on."""

    client_images: list[torch.Tensor]
    probe_images: torch.Tensor
    probe_labels: torch.Tensor
    test_images: torch.Tensor
    test_labels: torch.Tensor


def load_benchmark_data(config: BenchmarkConfig) -> BenchmarkData:
    """The same splits in every job: partitions depend only on the labels, the client count and the seed."""
    train = load_dataset(config.dataset, config.data_path, "train", limit=config.train_limit)
    test = load_dataset(config.dataset, config.data_path, "test", limit=config.test_limit)
    if train.channels != config.spec.image_channels or train.image_size != (config.spec.image_size,) * 2:
        raise ConfigurationError(
            f"{train.name} has {train.channels}x{train.image_size} images, the model expects "
            f"{config.spec.image_channels}x{config.spec.image_size}x{config.spec.image_size}"
        )
    partition_seed = derive_seed(config.seed, "partition")
    if config.dirichlet_alpha is None:
        shards = partition_iid(len(train), config.clients, partition_seed)
    else:
        shards = partition_dirichlet(
            train.labels, config.clients, config.dirichlet_alpha, partition_seed, minimum_per_client=2
        )
    probe = train.subset(stratified_limit_indices(train.labels, config.probe_limit))
    return BenchmarkData(
        client_images=[train.images[shard] for shard in shards],
        probe_images=probe.images,
        probe_labels=probe.labels,
        test_images=test.images,
        test_labels=test.labels,
    )


class ClientMemoryTracker:
    """Turns the simulation's 'client starts' callbacks into one peak-memory window per client."""

    def __init__(self, meter: PeakMemoryMeter) -> None:
        self.meter = meter
        self._peaks: list[int] = []

    def on_client_start(self, round_index: int, client: int) -> None:
        self._close()
        self.meter.start()

    def take_round(self) -> tuple[int, ...]:
        """Peaks of the round's clients, in the order they trained; called once the round is merged."""
        self._close()
        peaks, self._peaks = tuple(self._peaks), []
        return peaks

    def _close(self) -> None:
        if self.meter.running:
            self._peaks.append(self.meter.stop())


class StepTimer:
    """A training backend that times another's optimizer steps, for seconds per step.

    Both backends ask :attr:`TrainingHooks.should_stop` right after every optimizer step, so the times
    between consecutive asks of one client are its steps, without the client's set-up, its first step
    (which also counts FLOPs) or reading the update back. Asking never stops training.
    """

    def __init__(self, backend: TrainingBackend) -> None:
        self.backend = backend
        self._intervals: list[float] = []

    @property
    def name(self) -> str:
        return self.backend.name

    def prepare(self, config: TrainingConfig, stage: int) -> None:
        self.backend.prepare(config, stage)

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
        if hooks is not None:
            raise ConfigurationError("the benchmark's step timer does not pass on training hooks")
        step_ends: list[float] = []

        def note_step_end() -> bool:
            step_ends.append(time.perf_counter())
            return False

        result = self.backend.train(
            global_state, stage, images, config, seed, hooks=TrainingHooks(should_stop=note_step_end)
        )
        self._intervals.extend(later - earlier for earlier, later in itertools.pairwise(step_ends))
        return result

    def take_intervals(self) -> list[float]:
        """Step times since the last call (called once per round)."""
        intervals, self._intervals = self._intervals, []
        return intervals


def median_or_none(values: Sequence[float]) -> float | None:
    return statistics.median(values) if values else None


def summarise_round(
    record: RoundRecord, peaks: Sequence[int], wall_seconds: float, step_seconds: Sequence[float] = ()
) -> RoundResult:
    metrics = [result.metrics for result in record.results]
    count = len(metrics)
    return RoundResult(
        round_index=record.round_index,
        stage=record.stage,
        loss=sum(metric.loss for metric in metrics) / count,
        gflops_per_client=sum(metric.flops for metric in metrics) / count / GIGA,
        upload_bytes_per_client=sum(record.upload_bytes) / count,
        download_bytes_per_client=sum(record.download_bytes) / count,
        peak_train_memory_bytes=max(peaks, default=0),
        client_peak_train_memory_bytes=tuple(peaks),
        wall_seconds=wall_seconds,
        seconds_per_step=median_or_none(step_seconds),
        steps_per_client=sum(metric.steps for metric in metrics) / count,
        merge_seconds=record.merge_seconds,
        decisions=tuple(f"{item.label} {item.action} by {item.rule}" for item in record.decisions),
    )


def warm_up(
    backend: TrainingBackend, training: TrainingConfig, schedule: Schedule, images: torch.Tensor
) -> None:
    """Build every stage's graphs (``ort``) and run one unmeasured training step, so that no client's
    memory window or step time includes what the backend builds once per stage, nor what torch, kornia,
    ONNX Runtime and the allocator set up once per process (measured: about 27 MiB, on stage 1 only)."""
    for stage in range(1, schedule.stages + 1):
        backend.prepare(training, stage)
    backend.train(initial_state(training), 1, images, training, seed=0)


def train_mode(
    config: BenchmarkConfig,
    mode: TrainingMode,
    client_images: list[torch.Tensor],
    data: BenchmarkData,
    job: str,
    backend: TrainingBackend,
) -> ModeResult:
    """Simulate ``mode`` with ``backend`` over the whole schedule, evaluating after each stage."""
    started = time.perf_counter()
    spec = config.spec
    training = TrainingConfig(
        spec=spec,
        mode=mode,
        federation_seed=config.seed,
        local_epochs=config.local_epochs,
        batch_size=config.batch_size,
        learning_rate=config.learning_rate,
        aggregation=config.aggregation,
        privacy=config.privacy,
        compression=config.compression,
    )
    adversary = (
        Attack(
            config.attack,
            config.attackers,
            len(client_images),
            config.attack_scale,
            config.seed,
            config.aggregation.maximum_samples,
        )
        if config.attack is not None
        else None
    )
    schedule = Schedule(spec.stages, config.rounds_per_stage)
    warm_up(backend, training, schedule, client_images[0][: config.batch_size])
    timer = StepTimer(backend)
    tracker = ClientMemoryTracker(PeakMemoryMeter())
    records = simulate(
        training,
        schedule,
        client_images,
        participation=config.participation,
        on_client_start=tracker.on_client_start,
        backend=timer,
        adversary=adversary,
    )
    rounds: list[RoundResult] = []
    step_seconds: dict[int, list[float]] = {}
    stages: list[StageResult] = []
    evaluation_seconds = 0.0
    label = f"{job} ({backend.name})"
    progress = tqdm(total=schedule.total_rounds, desc=f"{label} rounds", file=sys.stderr, leave=False)
    while True:
        round_started = time.perf_counter()
        record = next(records, None)
        if record is None:
            break
        wall_seconds = time.perf_counter() - round_started
        intervals = timer.take_intervals()
        step_seconds.setdefault(record.stage, []).extend(intervals)
        rounds.append(summarise_round(record, tracker.take_round(), wall_seconds, intervals))
        progress.update()
        progress.set_postfix(stage=record.stage, loss=f"{rounds[-1].loss:.3f}")
        if schedule.is_last_round_of_stage(record.round_index):
            evaluation_started = time.perf_counter()
            readout = head_stage(mode, record.stage, spec.stages)
            evaluation = evaluate(
                record.state,
                spec,
                config.seed,
                readout,
                data.probe_images,
                data.probe_labels,
                data.test_images,
                data.test_labels,
            )
            evaluation_seconds += time.perf_counter() - evaluation_started
            stage_rounds = [item for item in rounds if item.stage == record.stage]
            stages.append(
                StageResult(
                    stage=record.stage,
                    readout_stage=readout,
                    linear_probe_accuracy=evaluation.linear_probe_accuracy,
                    knn_accuracy=evaluation.knn_accuracy,
                    peak_train_memory_bytes=max(item.peak_train_memory_bytes for item in stage_rounds),
                    cumulative_gflops_per_client=sum(item.gflops_per_client for item in rounds),
                    cumulative_bytes_per_client=sum(
                        item.upload_bytes_per_client + item.download_bytes_per_client for item in rounds
                    ),
                    cumulative_wall_seconds=sum(item.wall_seconds for item in rounds),
                    seconds_per_step=median_or_none(step_seconds[record.stage]),
                )
            )
        del record  # so that neither its state nor its updates count towards the next round's baseline
    progress.close()
    final = stages[-1]
    upload = sum(item.upload_bytes_per_client for item in rounds)
    download = sum(item.download_bytes_per_client for item in rounds)
    return ModeResult(
        mode=job,
        linear_probe_accuracy=final.linear_probe_accuracy,
        knn_accuracy=final.knn_accuracy,
        peak_train_memory_bytes=max(item.peak_train_memory_bytes for item in rounds),
        gflops_per_client=sum(item.gflops_per_client for item in rounds),
        bytes_per_client=upload + download,
        upload_bytes_per_client=upload,
        download_bytes_per_client=download,
        wall_seconds=sum(item.wall_seconds for item in rounds),
        evaluation_seconds=evaluation_seconds,
        process_seconds=time.perf_counter() - started,
        memory_method=tracker.meter.method,
        clients=len(client_images),
        stages=tuple(stages),
        rounds=tuple(rounds),
        backend=backend.name,
        seconds_per_step=median_or_none([item for values in step_seconds.values() for item in values]),
    )


def evaluate_random_init(config: BenchmarkConfig, data: BenchmarkData) -> ReferenceAccuracy:
    """The untrained encoder, read out after its last stage: what training has to beat."""
    started = time.perf_counter()
    training = TrainingConfig(spec=config.spec, mode=TrainingMode.END_TO_END, federation_seed=config.seed)
    evaluation = evaluate(
        initial_state(training),
        config.spec,
        config.seed,
        config.spec.stages,
        data.probe_images,
        data.probe_labels,
        data.test_images,
        data.test_labels,
    )
    return ReferenceAccuracy(
        linear_probe_accuracy=evaluation.linear_probe_accuracy,
        knn_accuracy=evaluation.knn_accuracy,
        evaluation_seconds=time.perf_counter() - started,
    )


def run_job(
    config: BenchmarkConfig, job: str, backend_name: str = DEFAULT_BACKEND, cache: Path | None = None
) -> dict[str, Any]:
    """The JSON object a job writes: its result and the thread count it ran with.

    Threads are set before the backend is chosen: ONNX Runtime's sessions take torch's thread count.
    """
    if config.threads is not None:
        torch.set_num_threads(config.threads)
    backend = select_backend(backend_name, cache_directory=cache)
    data = load_benchmark_data(config)
    result: ModeResult | ReferenceAccuracy
    if job == RANDOM_INIT_JOB:
        result = evaluate_random_init(config, data)
    elif job == CENTRALISED_JOB:
        everything = [torch.cat(data.client_images)]
        result = train_mode(config, TrainingMode.END_TO_END, everything, data, job, backend)
    else:
        result = train_mode(config, TrainingMode.parse(job), data.client_images, data, job, backend)
    return {
        "job": job,
        "backend": backend.name,
        "torch_threads": torch.get_num_threads(),
        "result": result.to_dict(),
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--config", type=Path, required=True, help="benchmark configuration JSON")
    parser.add_argument("--job", required=True, help="lw, prog, e2e, random-init or centralised")
    parser.add_argument("--output", type=Path, required=True, help="where to write the job's JSON")
    parser.add_argument(
        "--backend", default=DEFAULT_BACKEND, help=f"training backend (default {DEFAULT_BACKEND})"
    )
    parser.add_argument(
        "--cache", type=Path, help="where the backend keeps what it builds (default: a temporary directory)"
    )
    args = parser.parse_args(argv)
    try:
        config = BenchmarkConfig.from_dict(json.loads(args.config.read_text()))
        if args.job not in REFERENCE_JOBS:
            TrainingMode.parse(args.job)
        output = run_job(config, args.job, args.backend, args.cache)
    except LayerfedError as error:
        print(f"benchmark worker {args.job}: {error}", file=sys.stderr)
        return error.exit_code
    args.output.write_text(json.dumps(output, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
