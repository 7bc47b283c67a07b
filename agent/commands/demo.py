"""``layerfed demo``: a whole leaderless federation on one machine, on the embedded defaults.

N peers run in threads of this process, each with its own key, its own state directory and its own shard
of Fashion-MNIST, and talk only through the three ports: an in-process Ethereum chain with the
Coordinator contract, an in-process MQTT broker, and a local content-addressed directory shared the way
an IPFS network is. Nothing needs installing beyond the Python package.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from agent.adapters.ethereum_ledger import EthereumLedger
from agent.commands.local_federation import LocalFederation
from agent.data.partition import partition_iid
from agent.data.registry import load_dataset
from agent.engine.statistics import StatisticsSnapshot
from agent.errors import EXIT_BUG, ConfigurationError, LayerfedError, WorkerFailedError
from agent.learning.aggregation.config import DEFAULT_AGGREGATION, AggregationConfig
from agent.learning.backends import DEFAULT_BACKEND, select_backend
from agent.learning.evaluation import evaluate
from agent.learning.model_file import decode_model
from agent.learning.modes import TrainingMode
from agent.learning.training import TrainingConfig
from models.spec import EncoderSpec

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DemoPreset:
    """How big a demo federation is; ``smoke`` takes a minute or two, ``default`` learns something."""

    spec: EncoderSpec
    rounds_per_stage: int
    samples_per_peer: int
    test_samples: int
    local_epochs: int
    batch_size: int


PRESETS = {
    "smoke": DemoPreset(
        spec=EncoderSpec(architecture="resnet", stages=2, widths=(16, 32)),
        rounds_per_stage=1,
        samples_per_peer=256,
        test_samples=1000,
        local_epochs=1,
        batch_size=64,
    ),
    "default": DemoPreset(
        spec=EncoderSpec(architecture="resnet", stages=4, widths=(32, 64, 128, 256)),
        rounds_per_stage=2,
        samples_per_peer=1500,
        test_samples=2000,
        local_epochs=1,
        batch_size=128,
    ),
}


@dataclass(frozen=True)
class PeerReport:
    address: str
    final_model_cid: str
    statistics: StatisticsSnapshot


@dataclass(frozen=True)
class DemoReport:
    peers: list[PeerReport]
    rounds_finalized: list[dict[str, object]]
    linear_probe_accuracy: float
    knn_accuracy: float
    training_seconds: float
    protocol_seconds: float
    wall_seconds: float
    contract_address: str
    backend: str = DEFAULT_BACKEND

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)


def run_demo(
    peers: int,
    preset_name: str,
    data_directory: Path | None,
    work_directory: Path,
    mode: TrainingMode | str = TrainingMode.LAYER_WISE,
    seed: int = 0,
    say: Callable[[str], None] = print,
    backend: str = DEFAULT_BACKEND,
    aggregation: AggregationConfig = DEFAULT_AGGREGATION,
) -> DemoReport:
    """Run the federation to the end of its schedule and report what every peer ended with.

    Every peer trains with ``backend``; its per-stage builds (``ort``) are shared by all peers, in the
    work directory.
    """
    if peers < 2:
        raise ConfigurationError(f"a federation needs at least 2 peers, not {peers}")
    if preset_name not in PRESETS:
        raise ConfigurationError(f"unknown demo preset {preset_name!r}; choose one of {', '.join(PRESETS)}")
    preset = PRESETS[preset_name]
    mode = TrainingMode.parse(mode) if isinstance(mode, str) else mode
    training_backend = select_backend(backend, cache_directory=work_directory / "backend-cache")
    started = time.perf_counter()
    # Peers are threads of this process: one torch thread each keeps them from spinning against each
    # other (with two OpenMP threads per op on a busy 2-core machine, ops ran up to ten times slower).
    torch.set_num_threads(1)
    train = load_dataset("fashion-mnist", data_directory, "train", limit=peers * preset.samples_per_peer)
    test = load_dataset("fashion-mnist", data_directory, "test", limit=preset.test_samples)
    shards = [train.images[indices] for indices in partition_iid(len(train), peers, seed)]
    config = TrainingConfig(
        spec=preset.spec,
        mode=mode,
        federation_seed=seed,
        local_epochs=preset.local_epochs,
        batch_size=preset.batch_size,
        aggregation=aggregation,
    )
    with LocalFederation(
        config, peers=peers, rounds_per_stage=preset.rounds_per_stage, work_directory=work_directory
    ) as federation:
        settings = federation.settings
        say(
            f"federation {federation.contract_address}: {peers} peers, {mode.value}, "
            f"{settings.stages} stages x {settings.rounds_per_stage} rounds, {backend} backend, "
            f"merging with {aggregation.describe()}"
        )
        engines = [
            federation.engine(index, shard, backend=training_backend) for index, shard in enumerate(shards)
        ]
        stop = threading.Event()
        failures: dict[int, Exception] = {}
        threads, results = federation.start(engines, stop, failures)
        try:
            _report_progress(federation.observer, threads, say, started, failures)
        finally:
            stop.set()
            for thread in threads:
                thread.join()
        observer = federation.observer
        store = federation.store
        contract_address = federation.contract_address
    _raise_for_failed_peers(failures)
    missing = [index for index in range(peers) if index not in results]
    if missing:
        raise LayerfedError(f"peers {missing} stopped before the end of training; see the log")
    final_state, _config = decode_model(store.get(observer.latest_canonical_model()))
    evaluation = evaluate(
        final_state,
        config.spec,
        seed,
        config.spec.stages,
        train.images,
        train.labels,
        test.images,
        test.labels,
    )
    snapshots = [engine.statistics.snapshot() for engine in engines]
    peer_reports = [
        PeerReport(address=engine.identity.address, final_model_cid=results[index], statistics=snapshot)
        for index, (engine, snapshot) in enumerate(zip(engines, snapshots, strict=True))
    ]
    return DemoReport(
        peers=peer_reports,
        rounds_finalized=[
            {"round": entry.number, "stage": entry.stage, "model_cid": entry.model_cid}
            for entry in observer.round_log()
        ],
        linear_probe_accuracy=evaluation.linear_probe_accuracy,
        knn_accuracy=evaluation.knn_accuracy,
        training_seconds=sum(report.statistics.training_seconds for report in peer_reports),
        protocol_seconds=sum(report.statistics.protocol_seconds for report in peer_reports),
        wall_seconds=time.perf_counter() - started,
        contract_address=contract_address,
        backend=backend,
    )


def _raise_for_failed_peers(failures: dict[int, Exception]) -> None:
    """End the demo with the first failed peer's own exit code (a bug's, 70, for an unexpected error)."""
    if not failures:
        return
    index = min(failures)
    failure = failures[index]
    code = failure.exit_code if isinstance(failure, LayerfedError) else EXIT_BUG
    raise WorkerFailedError(f"peer {index} failed: {failure} (traceback in the log above)", code) from failure


def _report_progress(
    observer: EthereumLedger,
    threads: list[threading.Thread],
    say: Callable[[str], None],
    started: float,
    failures: dict[int, Exception],
) -> None:
    """Print each finalized round as the chain records it, until every peer has finished or one failed
    (the others would wait for its submissions until the round's deadline)."""
    reported = 0
    while any(thread.is_alive() for thread in threads) and not failures:
        time.sleep(0.5)
        log = observer.round_log()
        for entry in log[reported:]:
            say(
                f"[{time.perf_counter() - started:7.1f} s] round {entry.number} (stage {entry.stage}) "
                f"finalized: {entry.model_cid}"
            )
        reported = len(log)
