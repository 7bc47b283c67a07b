#!/usr/bin/env python3
"""Measure the protocol's overhead: time and bytes spent outside local training, per peer and round.

Runs a whole federation of N peers in this process (threads) through every stage, on the embedded
services or on real ones (mosquitto, anvil and a js-ipfs node started here on 127.0.0.1, as the
integration tests start them), and reports per round: training seconds, protocol seconds by step (pin,
transaction, announce, fetch, verify, merge, attest) and bytes uploaded and downloaded, per peer; and for
the whole federation, chain transactions and gas per round. ``--committees off on`` runs each size with
everyone merging and with merge committees (``--committee-size``, rounds above ``--committee-threshold``
submissions), reporting the download of committee members and of the others apart.

    .venv/bin/python scripts/protocol_overhead.py --peers 4 16 --services embedded real --out runs/overhead
    .venv/bin/python scripts/protocol_overhead.py --model tiny --samples-per-peer 64 --peers 4 16 64 \
        --services embedded --committees off on --committee-size 3 --out runs/committees

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
# Small enough that 64 peers train on 2 cores: the protocol's costs, not training, are what is measured.
TINY_RECIPE = TrainingConfig(
    spec=EncoderSpec(architecture="resnet", stages=2, widths=(8, 16), projection_dim=16),
    mode=TrainingMode.LAYER_WISE,
    federation_seed=0,
    batch_size=32,
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
    peers: int,
    services: ExternalServices | None,
    samples_per_peer: int,
    directory: Path,
    recipe: TrainingConfig = RECIPE,
    committee: tuple[int, int] = (0, 0),
) -> dict[str, object]:
    """One federation run; ``committee`` is (threshold, size), (0, 0) for everyone merging."""
    train = load_dataset("fashion-mnist", None, "train", limit=peers * samples_per_peer)
    shards = [train.images[indices] for indices in partition_iid(len(train), peers, 0)]
    threshold, size = committee
    poll_seconds = 0.2 if peers <= 16 else 1.0  # 64 pollers would queue on the embedded chain's lock
    with LocalFederation(
        recipe,
        peers=peers,
        rounds_per_stage=1,
        work_directory=directory,
        services=services,
        committee_threshold=threshold,
        committee_size=size,
    ) as federation:
        engines = [
            federation.engine(index, shard, EngineOptions(poll_seconds=poll_seconds))
            for index, shard in enumerate(shards)
        ]
        stop = threading.Event()
        started = time.perf_counter()
        threads, results = federation.start(engines, stop)
        for thread in threads:
            thread.join()
        wall = time.perf_counter() - started
        log = federation.observer.round_log()
        rounds = len(log)
        committees = [set(federation.observer.committee(entry.number)) for entry in log]
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
    # Download by role: a peer that sat on no committee downloaded only canonical models (and messages).
    addresses = [engine.identity.address for engine in engines]
    seats = [sum(address in drawn for drawn in committees) for address in addresses]
    never_drawn = [
        s.bytes_downloaded / rounds
        for s, seated in zip(snapshots, seats, strict=True)
        if not seated and any(committees)
    ]
    return {
        "peers": peers,
        "services": "real" if services else "embedded",
        "committee_size": size if any(committees) else 0,
        "committee_threshold": threshold,
        "bytes_downloaded_never_drawn_per_round": statistics.mean(never_drawn) if never_drawn else None,
        "bytes_downloaded_max_per_round": max(s.bytes_downloaded for s in snapshots) / rounds,
        "transactions_per_round": sum(s.transactions for s in snapshots) / rounds,
        "gas_per_round": sum(s.gas_used for s in snapshots) / rounds,
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
    parser.add_argument("--model", choices=["default", "tiny"], default="default", help="tiny: 2-stage, 8/16")
    parser.add_argument("--committees", nargs="+", default=["off"], choices=["off", "on"])
    parser.add_argument("--committee-size", type=int, default=3)
    parser.add_argument(
        "--committee-threshold", type=int, default=None, help="committees above this (default: the size)"
    )
    parser.add_argument(
        "--committee-only-above",
        type=int,
        default=None,
        help="run sizes above this only with committees (to save time at 64 peers)",
    )
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "overhead")
    arguments = parser.parse_args()
    torch.set_num_threads(2)
    arguments.out.mkdir(parents=True, exist_ok=True)
    recipe = TINY_RECIPE if arguments.model == "tiny" else RECIPE
    size = arguments.committee_size
    threshold = size if arguments.committee_threshold is None else arguments.committee_threshold
    rows = []
    for kind in arguments.services:
        for peers in arguments.peers:
            for mode in arguments.committees:
                limit = arguments.committee_only_above
                if mode == "off" and limit is not None and peers > limit:
                    continue
                committee = (threshold, size) if mode == "on" else (0, 0)
                with tempfile.TemporaryDirectory(prefix="layerfed-overhead-") as temporary:
                    directory = Path(temporary)
                    federation_directory = directory / "federation"
                    if kind == "real":
                        with real_services(directory / "services") as services:
                            row = measure(
                                peers,
                                services,
                                arguments.samples_per_peer,
                                federation_directory,
                                recipe,
                                committee,
                            )
                    else:
                        row = measure(
                            peers, None, arguments.samples_per_peer, federation_directory, recipe, committee
                        )
                rows.append(row)
                print(json.dumps(row), flush=True)
    (arguments.out / "overhead.json").write_text(json.dumps(rows, indent=2))
    print()
    print(
        "| services | peers | committee | round wall s | training s/peer/round | protocol s/peer/round "
        "| protocol share | kB up/peer/round | kB down/peer/round (mean, never drawn, max) "
        "| transactions/round | gas/round |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for row in rows:
        per = row["per_peer_per_round"]
        never = row["bytes_downloaded_never_drawn_per_round"]
        never_text = "-" if never is None else f"{never / 1e3:.1f}"  # type: ignore[operator]
        print(
            f"| {row['services']} | {row['peers']} | {row['committee_size'] or 'everyone'} | "
            f"{row['round_wall_seconds']:.1f} | "
            f"{per['training_seconds']:.2f} | {per['protocol_seconds']:.2f} | "  # type: ignore[index]
            f"{row['protocol_share_of_busy_time']:.1%} | {per['bytes_uploaded'] / 1e3:.1f} | "  # type: ignore[index]
            f"{per['bytes_downloaded'] / 1e3:.1f}, {never_text}, "  # type: ignore[index]
            f"{row['bytes_downloaded_max_per_round'] / 1e3:.1f} | "  # type: ignore[operator]
            f"{row['transactions_per_round']:.0f} | {row['gas_per_round']:,.0f} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
