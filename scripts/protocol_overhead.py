#!/usr/bin/env python3
"""Measure the protocol's overhead: time and bytes spent outside local training, per peer and round.

Runs a whole federation of N peers in this process (threads) through every stage, on the embedded
services or on real ones (mosquitto, anvil and a js-ipfs node started here on 127.0.0.1, as the
integration tests start them), and reports per round: training seconds, protocol seconds by step (pin,
transaction, announce, fetch, verify, merge, attest) and bytes uploaded and downloaded, per peer.

    .venv/bin/python scripts/protocol_overhead.py --peers 4 16 --services embedded real --out runs/overhead

Peers share this machine's cores, so every figure is inflated by contention alike; the ratio of protocol
to training time per peer is what a device with its own CPU would see.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from agent.commands.local_federation import ExternalServices, LocalFederation  # noqa: E402
from agent.data.partition import partition_iid  # noqa: E402
from agent.data.registry import load_dataset  # noqa: E402
from agent.engine.round_engine import EngineOptions  # noqa: E402
from agent.learning.modes import TrainingMode  # noqa: E402
from agent.learning.training import TrainingConfig  # noqa: E402
from models.spec import EncoderSpec  # noqa: E402
from tests.services.anvil import AnvilService  # noqa: E402
from tests.services.ipfs_node import IpfsNode  # noqa: E402
from tests.services.mosquitto import MosquittoService  # noqa: E402

RECIPE = TrainingConfig(
    spec=EncoderSpec(architecture="resnet", stages=4, widths=(32, 64, 128, 256)),
    mode=TrainingMode.LAYER_WISE,
    federation_seed=0,
    batch_size=64,
)


@contextlib.contextmanager
def real_services(directory: Path) -> Iterator[ExternalServices]:
    directory.mkdir(parents=True, exist_ok=True)
    broker = MosquittoService(directory)
    chain = AnvilService()
    node_directory = directory / "ipfs"
    node_directory.mkdir()
    node = IpfsNode(node_directory)
    broker.start()
    chain.start()
    node.initialise()
    node.start()
    try:
        yield ExternalServices(
            chain_url=chain.url, ipfs_address=node.address, broker_host=broker.host, broker_port=broker.port
        )
    finally:
        node.stop()
        chain.stop()
        broker.stop()


def measure(
    peers: int, services: ExternalServices | None, samples_per_peer: int, directory: Path
) -> dict[str, object]:
    train = load_dataset("fashion-mnist", None, "train", limit=peers * samples_per_peer)
    shards = [train.images[indices] for indices in partition_iid(len(train), peers, 0)]
    with LocalFederation(
        RECIPE, peers=peers, rounds_per_stage=1, work_directory=directory, services=services
    ) as federation:
        engines = [
            federation.engine(index, shard, EngineOptions(poll_seconds=0.2))
            for index, shard in enumerate(shards)
        ]
        stop = threading.Event()
        started = time.perf_counter()
        threads, results = federation.start(engines, stop)
        for thread in threads:
            thread.join()
        wall = time.perf_counter() - started
        rounds = len(federation.observer.round_log())
    snapshots = [engine.statistics.snapshot() for engine in engines]
    steps = sorted({step for snapshot in snapshots for step in snapshot.protocol_step_seconds})
    per_peer_round = {
        "training_seconds": statistics.mean(s.training_seconds for s in snapshots) / rounds,
        "protocol_seconds": statistics.mean(s.protocol_seconds for s in snapshots) / rounds,
        "protocol_step_seconds": {
            step: statistics.mean(s.protocol_step_seconds.get(step, 0.0) for s in snapshots) / rounds
            for step in steps
        },
        "bytes_uploaded": statistics.mean(s.bytes_uploaded for s in snapshots) / rounds,
        "bytes_downloaded": statistics.mean(s.bytes_downloaded for s in snapshots) / rounds,
    }
    busy = per_peer_round["training_seconds"] + per_peer_round["protocol_seconds"]  # type: ignore[operator]
    return {
        "peers": peers,
        "services": "real" if services else "embedded",
        "rounds": rounds,
        "agreed": len(set(results.values())) == 1 and len(results) == peers,
        "wall_seconds": wall,
        "round_wall_seconds": wall / rounds,
        "per_peer_per_round": per_peer_round,
        "protocol_share_of_busy_time": per_peer_round["protocol_seconds"] / busy,
        "gas_per_peer": statistics.mean(s.gas_used for s in snapshots),
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--peers", type=int, nargs="+", default=[4, 16])
    parser.add_argument("--services", nargs="+", default=["embedded", "real"], choices=["embedded", "real"])
    parser.add_argument("--samples-per-peer", type=int, default=500)
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "overhead")
    arguments = parser.parse_args()
    torch.set_num_threads(2)
    arguments.out.mkdir(parents=True, exist_ok=True)
    rows = []
    for kind in arguments.services:
        for peers in arguments.peers:
            with tempfile.TemporaryDirectory(prefix="layerfed-overhead-") as temporary:
                directory = Path(temporary)
                if kind == "real":
                    with real_services(directory / "services") as services:
                        row = measure(peers, services, arguments.samples_per_peer, directory / "federation")
                else:
                    row = measure(peers, None, arguments.samples_per_peer, directory / "federation")
            rows.append(row)
            print(json.dumps(row), flush=True)
    (arguments.out / "overhead.json").write_text(json.dumps(rows, indent=2))
    print()
    print(
        "| services | peers | round wall s | training s/peer/round | protocol s/peer/round "
        "| protocol share | "
        "MB up/peer/round | MB down/peer/round |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for row in rows:
        per = row["per_peer_per_round"]
        print(
            f"| {row['services']} | {row['peers']} | {row['round_wall_seconds']:.1f} | "
            f"{per['training_seconds']:.2f} | {per['protocol_seconds']:.2f} | "  # type: ignore[index]
            f"{row['protocol_share_of_busy_time']:.1%} | {per['bytes_uploaded'] / 1e6:.2f} | "  # type: ignore[index]
            f"{per['bytes_downloaded'] / 1e6:.2f} |"  # type: ignore[index]
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
