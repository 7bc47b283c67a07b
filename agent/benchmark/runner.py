"""``layerfed bench`` and ``scripts/benchmark.py``: compare lw, prog and e2e from one seed and one partition.

The runner only orchestrates: it writes the configuration, starts one worker process per job (so each
mode's memory is measured in a fresh process; with ``--backends torch,ort``, one per mode and backend),
then assembles ``results.json``, ``results.md`` and the plots, and prints the summary. All training
happens in :mod:`agent.benchmark.worker`, through the learning core's own functions.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

from tqdm import tqdm

from agent.benchmark import robustness
from agent.benchmark.attacks import ATTACK_NAMES
from agent.benchmark.plots import write_plots, write_seed_plots
from agent.benchmark.presets import (
    PRESET_NAMES,
    BenchmarkConfig,
    preset_config,
    with_blocks_per_stage,
    with_overrides,
)
from agent.benchmark.report import compare_backends, compare_modes, render_markdown
from agent.benchmark.results import BenchmarkResults, ModeResult, ReferenceAccuracy
from agent.benchmark.seeds import SCHEMA as SEEDS_SCHEMA
from agent.benchmark.seeds import render_markdown as render_seed_markdown
from agent.benchmark.seeds import seed_figures, summarise
from agent.benchmark.worker import CENTRALISED_JOB, RANDOM_INIT_JOB
from agent.data.fashion_mnist import DEFAULT_FASHION_MNIST_DIRECTORY
from agent.errors import BackendUnavailableError, ConfigurationError, LayerfedError, WorkerFailedError
from agent.learning.aggregation.arguments import add_aggregation_arguments, aggregation_from_arguments
from agent.learning.backends import BACKEND_NAMES, DEFAULT_BACKEND, unavailable_reason
from agent.learning.compression import METHOD_NAMES, CompressionConfig
from agent.learning.privacy.accountant import privacy_spent
from agent.learning.privacy.arguments import add_privacy_arguments, privacy_from_arguments
from models.spec import ARCHITECTURES


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The benchmark's options; preset values apply wherever an override is not given."""
    parser.add_argument("--model", choices=ARCHITECTURES, default="vit", help="encoder family (default vit)")
    parser.add_argument("--preset", choices=PRESET_NAMES, default="smoke", help="run size (default smoke)")
    parser.add_argument(
        "--out", type=Path, default=None, help="output directory (default runs/bench-MODEL-PRESET)"
    )
    parser.add_argument(
        "--data",
        default=str(DEFAULT_FASHION_MNIST_DIRECTORY),
        help="Fashion-MNIST directory with the four idx .gz files (default: the Debian package's)",
    )
    parser.add_argument("--clients", type=int, help="number of simulated clients")
    parser.add_argument(
        "--dirichlet-alpha", type=float, help="label-skewed split with this alpha (IID if absent)"
    )
    parser.add_argument("--modes", default="lw,prog,e2e", help="comma-separated modes (default lw,prog,e2e)")
    parser.add_argument(
        "--backends",
        default=DEFAULT_BACKEND,
        help=f"comma-separated training backends ({', '.join(BACKEND_NAMES)}), each running every mode; "
        f"the first is the reference the others are compared with (default {DEFAULT_BACKEND})",
    )
    parser.add_argument("--rounds-per-stage", type=int, help="federated rounds per stage")
    parser.add_argument("--local-epochs", type=int, help="local epochs per round")
    parser.add_argument("--batch-size", type=int, help="training batch size")
    parser.add_argument("--train-limit", type=int, help="training images shared by all clients")
    parser.add_argument("--learning-rate", type=float, help="AdamW's learning rate, the same for every mode")
    parser.add_argument("--seed", type=int, help="federation seed: model, partition, shuffling (default 0)")
    parser.add_argument("--threads", type=int, help="torch threads per worker (default: torch's choice)")
    parser.add_argument(
        "--centralised",
        action="store_true",
        help="also train centralised SimCLR (e2e, all data on one client): a reference row, as costly as e2e",
    )
    add_aggregation_arguments(parser)
    add_privacy_arguments(parser)
    add_paper_arguments(parser)
    attacks = parser.add_argument_group("attacks (a measurement tool: never part of an agent)")
    attacks.add_argument("--attack", choices=ATTACK_NAMES, help="what the attackers send")
    attacks.add_argument("--attackers", type=int, help="how many of the clients attack (the last ones)")
    attacks.add_argument(
        "--attack-scale", type=float, help="the attack's factor (defaults: sign-flip 10, scale 50, noise 10)"
    )
    attacks.add_argument(
        "--robustness",
        action="store_true",
        help="run the grid of --aggregators x (no attack + --attacks) x --scenarios instead of the modes",
    )
    attacks.add_argument(
        "--aggregators",
        default=",".join(robustness.DEFAULT_AGGREGATORS),
        help="robustness grid: aggregator variants (rule or rule+norm_bound)",
    )
    attacks.add_argument(
        "--attacks", default=",".join(ATTACK_NAMES), help="robustness grid: attacks (default all)"
    )
    attacks.add_argument(
        "--scenarios", default="1/5,2/7", help="robustness grid: ATTACKERS/CLIENTS pairs (default 1/5,2/7)"
    )
    attacks.add_argument("--parallel", type=int, default=1, help="robustness grid: worker processes at once")


def add_paper_arguments(parser: argparse.ArgumentParser) -> None:
    """The paper's settings (issue 13): seeds, blocks per stage, partitions, participation, compression."""
    paper = parser.add_argument_group("the LW-FedSSL paper's settings")
    paper.add_argument(
        "--seeds",
        help="comma-separated seeds: the whole comparison once per seed (DIR/seed-S/), then the mean, "
        "standard deviation and 95%% interval of every figure (overrides --seed)",
    )
    paper.add_argument(
        "--blocks-per-stage", type=int, help="ViT blocks trained together per stage (stages = depth / B)"
    )
    paper.add_argument(
        "--partition", choices=("iid", "dirichlet"), help="how the training images are split across clients"
    )
    paper.add_argument("--alpha", type=float, help="Dirichlet concentration for --partition dirichlet")
    paper.add_argument(
        "--participation",
        type=float,
        help="fraction of the clients that train each round, sampled as an agent would (default 1)",
    )
    paper.add_argument(
        "--compression", choices=METHOD_NAMES, help="how every client compresses its update (default none)"
    )
    paper.add_argument(
        "--topk-fraction", type=float, help="top-k: fraction of each tensor's entries sent (default 0.01)"
    )
    paper.add_argument(
        "--no-error-feedback", action="store_true", help="top-k without keeping what was not sent"
    )


def partition_alpha(args: argparse.Namespace) -> float | None:
    """The Dirichlet alpha the options ask for, or None (IID, or the preset's split)."""
    if args.partition is None:
        if args.alpha is not None:
            raise ConfigurationError("--alpha needs --partition dirichlet")
        return args.dirichlet_alpha  # type: ignore[no-any-return]
    if args.partition == "iid":
        if args.alpha is not None or args.dirichlet_alpha is not None:
            raise ConfigurationError("--partition iid takes no alpha")
        return None
    alpha = args.alpha if args.alpha is not None else args.dirichlet_alpha
    if alpha is None:
        raise ConfigurationError("--partition dirichlet needs --alpha")
    return alpha  # type: ignore[no-any-return]


def compression_from_arguments(args: argparse.Namespace) -> CompressionConfig | None:
    if args.compression is None:
        if args.topk_fraction is not None or args.no_error_feedback:
            raise ConfigurationError("--topk-fraction and --no-error-feedback need --compression topk")
        return None
    values: dict[str, object] = {"method": args.compression}
    if args.topk_fraction is not None:
        values["topk_fraction"] = args.topk_fraction
    if args.no_error_feedback:
        values["error_feedback"] = False
    return CompressionConfig.from_dict(values)


def split_list(text: str) -> tuple[str, ...]:
    return tuple(item.strip() for item in text.split(",") if item.strip())


def config_from_arguments(args: argparse.Namespace) -> BenchmarkConfig:
    base = preset_config(args.model, args.preset)
    if args.blocks_per_stage is not None:
        base = with_blocks_per_stage(base, args.blocks_per_stage)
    alpha = partition_alpha(args)
    if args.partition == "iid":
        base = replace(base, dirichlet_alpha=None)
    return with_overrides(
        base,
        data_path=args.data,
        clients=args.clients,
        dirichlet_alpha=alpha,
        participation=args.participation,
        compression=compression_from_arguments(args),
        modes=split_list(args.modes),
        backends=split_list(args.backends),
        rounds_per_stage=args.rounds_per_stage,
        local_epochs=args.local_epochs,
        batch_size=args.batch_size,
        train_limit=args.train_limit,
        learning_rate=args.learning_rate,
        seed=args.seed,
        threads=args.threads,
        centralised=args.centralised or None,
        aggregation=aggregation_from_arguments(args),
        attack=args.attack,
        attackers=args.attackers if args.attackers is not None else (1 if args.attack else None),
        attack_scale=args.attack_scale,
        privacy=privacy_from_arguments(args),
    )


def privacy_summary(config: BenchmarkConfig) -> dict[str, Any]:
    """Epsilon over the run's schedule: every simulated client takes part in every round, and which
    rounds it took part in is public, as on chain, so the sampling rate is 1."""
    spent = privacy_spent(config.privacy, config.total_rounds)
    return {**spent.to_dict(), "description": spent.describe()}


def run_worker(
    config_path: Path, job: str, output: Path, backend: str = DEFAULT_BACKEND, cache: Path | None = None
) -> dict[str, Any]:
    """Run one job in a fresh interpreter; its progress bar and messages go to our stderr."""
    command = [sys.executable, "-m", "agent.benchmark.worker", "--config", str(config_path), "--job", job]
    command += ["--backend", backend, "--output", str(output)]
    if cache is not None:
        command += ["--cache", str(cache)]
    completed = subprocess.run(command, check=False)
    if completed.returncode != 0:
        raise WorkerFailedError(
            f"benchmark job {job} ({backend}) failed with exit code {completed.returncode} (see above)",
            completed.returncode,
        )
    loaded: dict[str, Any] = json.loads(output.read_text())
    return loaded


def installed_version(*distributions: str) -> str | None:
    """The version of the first of ``distributions`` that is installed, or None."""
    for distribution in distributions:
        try:
            return metadata.version(distribution)
        except metadata.PackageNotFoundError:
            continue
    return None


def machine_description(torch_threads: int | None, memory_method: str | None) -> dict[str, Any]:
    return {
        "cpu_count": os.cpu_count(),
        "torch_version": metadata.version("torch"),
        "onnxruntime_training_version": installed_version("onnxruntime-training-cpu", "onnxruntime-training"),
        "torch_threads": torch_threads,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "memory_method": memory_method,
    }


def planned_jobs(config: BenchmarkConfig) -> list[tuple[str, str]]:
    """(job, backend) in the order they run: random init, every mode with every backend (one mode's
    backends one after the other, so that a shared machine's load changes little between the runs that
    are compared), the centralised reference (if asked for) with the reference backend only."""
    reference = config.backends[0]
    jobs = [(RANDOM_INIT_JOB, reference)]
    jobs += [(mode, backend) for mode in config.modes for backend in config.backends]
    if config.centralised:
        jobs.append((CENTRALISED_JOB, reference))
    return jobs


def job_name(job: str, backend: str) -> str:
    """The job's key in ``job_seconds`` and its file name in ``jobs/``."""
    return job if job == RANDOM_INIT_JOB else f"{job}-{backend}"


def check_backends(backends: Sequence[str]) -> None:
    """Fail before any job starts when a backend cannot run here (names the extra to install)."""
    for backend in backends:
        reason = unavailable_reason(backend)
        if reason is not None:
            raise BackendUnavailableError(reason)


def run(args: argparse.Namespace) -> int:
    """Run every job (once per seed with ``--seeds``), write the outputs, print the summary; 0 on success
    (errors raise LayerfedError)."""
    config = config_from_arguments(args)
    check_backends(config.backends)
    out: Path = args.out or Path("runs") / f"bench-{config.model}-{config.preset}"
    if args.robustness:
        return run_robustness(args, config, out)
    if args.seeds is None:
        print(render_markdown(run_comparison(config, out)))
        return 0
    return run_seeds(config, parse_seeds(args.seeds), out)


def parse_seeds(text: str) -> tuple[int, ...]:
    try:
        seeds = tuple(int(item) for item in split_list(text))
    except ValueError as exc:
        raise ConfigurationError(f"--seeds takes comma-separated integers, not {text!r}") from exc
    if not seeds or len(set(seeds)) != len(seeds) or min(seeds) < 0:
        raise ConfigurationError(f"--seeds needs distinct non-negative seeds, not {text!r}")
    return seeds


def run_seeds(config: BenchmarkConfig, seeds: Sequence[int], out: Path) -> int:
    """The comparison once per seed into ``out/seed-S``, then mean, deviation and 95 % interval of every
    figure in ``out/results.json``, ``out/results.md`` and the plots (:mod:`agent.benchmark.seeds`)."""
    started = time.perf_counter()
    per_seed = []
    for seed in seeds:
        results = run_comparison(replace(config, seed=seed), out / f"seed-{seed}")
        per_seed.append(seed_figures(results.to_dict()))
    summary = summarise(per_seed)
    title = f"{config.model}, preset {config.preset}"
    document = {
        "schema": SEEDS_SCHEMA,
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": list(sys.argv),
        "seeds": list(seeds),
        "config": {key: value for key, value in config.to_dict().items() if key != "seed"},
        "seed_directories": [f"seed-{seed}" for seed in seeds],
        "wall_seconds": time.perf_counter() - started,
        "summary": summary,
    }
    (out / "results.json").write_text(json.dumps(document, indent=2) + "\n")
    markdown = render_seed_markdown(summary, seeds, f"layerfed benchmark: {title}")
    (out / "results.md").write_text(markdown)
    plots = write_seed_plots(summary, out, title)
    print(markdown)
    print(f"wrote {out / 'results.json'}, {out / 'results.md'} and {', '.join(path.name for path in plots)}")
    return 0


def run_comparison(config: BenchmarkConfig, out: Path) -> BenchmarkResults:
    """Every job of one seed into ``out``: results.json, results.md and the plots."""
    jobs_directory = out / "jobs"
    jobs_directory.mkdir(parents=True, exist_ok=True)
    config_path = out / "config.json"
    config_path.write_text(json.dumps(config.to_dict(), indent=2) + "\n")
    cache = out / "backend-cache"
    outputs: dict[tuple[str, str], dict[str, Any]] = {}
    job_seconds: dict[str, float] = {}
    for job, backend in tqdm(planned_jobs(config), desc="benchmark jobs", file=sys.stderr):
        started = time.perf_counter()
        name = job_name(job, backend)
        outputs[job, backend] = run_worker(config_path, job, jobs_directory / f"{name}.json", backend, cache)
        job_seconds[name] = time.perf_counter() - started
    reference, *others = config.backends
    modes = {mode: ModeResult.from_dict(outputs[mode, reference]["result"]) for mode in config.modes}
    other_backends = {
        backend: {mode: ModeResult.from_dict(outputs[mode, backend]["result"]) for mode in config.modes}
        for backend in others
    }
    random_init = outputs[RANDOM_INIT_JOB, reference]
    results = BenchmarkResults(
        config=config,
        machine=machine_description(random_init["torch_threads"], next(iter(modes.values())).memory_method),
        modes=modes,
        comparisons=compare_modes(modes),
        other_backends=other_backends,
        backend_comparisons=compare_backends(modes, other_backends),
        random_init=ReferenceAccuracy(**random_init["result"]),
        centralised=ModeResult.from_dict(outputs[CENTRALISED_JOB, reference]["result"])
        if config.centralised
        else None,
        job_seconds=job_seconds,
        created_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        command=tuple(sys.argv),
        privacy=privacy_summary(config),
    )
    (out / "results.json").write_text(json.dumps(results.to_dict(), indent=2) + "\n")
    (out / "results.md").write_text(render_markdown(results))
    plots = write_plots(results, out)
    print(f"wrote {out / 'results.json'}, {out / 'results.md'} and {', '.join(path.name for path in plots)}")
    return results


def run_robustness(args: argparse.Namespace, config: BenchmarkConfig, out: Path) -> int:
    """The aggregator x attack grid (:mod:`agent.benchmark.robustness`)."""
    if args.parallel < 1:
        raise ConfigurationError(f"--parallel must be at least 1, not {args.parallel}")
    cells = robustness.planned_cells(
        split_list(args.aggregators), split_list(args.attacks), robustness.parse_scenarios(args.scenarios)
    )
    backend = config.backends[0]

    def worker(config_path: Path, job: str, output: Path) -> dict[str, Any]:
        return run_worker(config_path, job, output, backend)

    robustness.run_grid(config, cells, out, args.parallel, worker, privacy_summary(config))
    return 0


def main(argv: Sequence[str] | None = None, prog: str | None = None) -> int:
    """Parse ``argv``, run, and turn a LayerfedError into its exit code (``scripts/benchmark.py``, and
    ``layerfed bench``, which forwards its arguments here with ``prog="layerfed bench"``)."""
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Compare lw, prog and e2e federated SSL on one seed and partition, with one or more "
        "training backends.",
    )
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return run(args)
    except LayerfedError as error:
        print(f"benchmark: {error}", file=sys.stderr)
        return error.exit_code


if __name__ == "__main__":
    raise SystemExit(main())
