"""One benchmark job in a fresh process: train one mode (or evaluate a reference) and write its JSON.

    python -m agent.benchmark.worker --config CONFIG.json --job lw --output lw.json

The runner starts one process per job so that no job's memory figures include what an earlier job
allocated and the allocator kept. The job trains with :func:`agent.learning.simulation.simulate`, the
same client step and merge the agent runs, and measures around it: training memory per client (reset
when the simulation announces a client, read when the next one starts or the round ends), wall time
per round, and linear-probe and kNN accuracy after every stage.

Jobs: ``lw``, ``prog``, ``e2e``; ``random-init`` (the untrained encoder, evaluated only);
``centralised`` (e2e SimCLR with all training images on one client, same schedule and epochs).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from agent.benchmark.memory import PeakMemoryMeter
from agent.benchmark.presets import BenchmarkConfig
from agent.benchmark.results import ModeResult, ReferenceAccuracy, RoundResult, StageResult
from agent.data import load_dataset, partition_dirichlet, partition_iid, stratified_limit_indices
from agent.errors import ConfigurationError, LayerfedError
from agent.learning.evaluation import evaluate
from agent.learning.modes import TrainingMode, head_stage
from agent.learning.simulation import RoundRecord, Schedule, initial_state, simulate
from agent.learning.training import TrainingConfig, train_client
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


def summarise_round(record: RoundRecord, peaks: Sequence[int], wall_seconds: float) -> RoundResult:
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
    )


def warm_up(training: TrainingConfig, images: torch.Tensor) -> None:
    """One unmeasured training step, so that the first client's memory window does not include what
    torch, kornia and the allocator set up once per process (measured: about 27 MiB, on stage 1 only)."""
    train_client(initial_state(training), 1, images, training, seed=0)


def train_mode(
    config: BenchmarkConfig,
    mode: TrainingMode,
    client_images: list[torch.Tensor],
    data: BenchmarkData,
    job: str,
) -> ModeResult:
    """Simulate ``mode`` over the whole schedule, evaluating after each stage's last round."""
    started = time.perf_counter()
    spec = config.spec
    training = TrainingConfig(
        spec=spec,
        mode=mode,
        federation_seed=config.seed,
        local_epochs=config.local_epochs,
        batch_size=config.batch_size,
        learning_rate=config.learning_rate,
    )
    schedule = Schedule(spec.stages, config.rounds_per_stage)
    warm_up(training, client_images[0][: config.batch_size])
    tracker = ClientMemoryTracker(PeakMemoryMeter())
    records = simulate(training, schedule, client_images, on_client_start=tracker.on_client_start)
    rounds: list[RoundResult] = []
    stages: list[StageResult] = []
    evaluation_seconds = 0.0
    progress = tqdm(total=schedule.total_rounds, desc=f"{job} rounds", file=sys.stderr, leave=False)
    while True:
        round_started = time.perf_counter()
        record = next(records, None)
        if record is None:
            break
        rounds.append(summarise_round(record, tracker.take_round(), time.perf_counter() - round_started))
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


def run_job(config: BenchmarkConfig, job: str) -> dict[str, Any]:
    """The JSON object a job writes: its result and the thread count it ran with."""
    if config.threads is not None:
        torch.set_num_threads(config.threads)
    data = load_benchmark_data(config)
    result: ModeResult | ReferenceAccuracy
    if job == RANDOM_INIT_JOB:
        result = evaluate_random_init(config, data)
    elif job == CENTRALISED_JOB:
        everything = [torch.cat(data.client_images)]
        result = train_mode(config, TrainingMode.END_TO_END, everything, data, job)
    else:
        result = train_mode(config, TrainingMode.parse(job), data.client_images, data, job)
    return {"job": job, "torch_threads": torch.get_num_threads(), "result": result.to_dict()}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--config", type=Path, required=True, help="benchmark configuration JSON")
    parser.add_argument("--job", required=True, help="lw, prog, e2e, random-init or centralised")
    parser.add_argument("--output", type=Path, required=True, help="where to write the job's JSON")
    args = parser.parse_args(argv)
    try:
        config = BenchmarkConfig.from_dict(json.loads(args.config.read_text()))
        if args.job not in REFERENCE_JOBS:
            TrainingMode.parse(args.job)
        output = run_job(config, args.job)
    except LayerfedError as error:
        print(f"benchmark worker {args.job}: {error}", file=sys.stderr)
        return error.exit_code
    args.output.write_text(json.dumps(output, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
