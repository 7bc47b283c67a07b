#!/usr/bin/env python3
"""What robust merging costs against local training, per round, at N peers (default 16).

For every stage of the demo's default recipe (4-stage ResNet, widths 32-256, 1500 Fashion-MNIST images
per peer, batch 128, one local epoch), trains one client's round for real (the round's local training
time), then merges N updates of that stage's exact tensors (the trained update plus seeded noise of
its own size per peer, so that every rule has distinct, realistic updates to sort, compare and clip)
with every aggregation rule, timing each merge (median of ``--repeats``).

    .venv/bin/python scripts/merge_cost.py --peers 16 --modes lw e2e --out runs/merge-cost.json

One torch thread, as the demo and the benchmark use. Figures depend on the machine's load: run it alone.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from agent.data.registry import load_dataset  # noqa: E402
from agent.learning.aggregation.arguments import parse_variant  # noqa: E402
from agent.learning.merging import merge_round  # noqa: E402
from agent.learning.modes import TrainingMode  # noqa: E402
from agent.learning.simulation import initial_state  # noqa: E402
from agent.learning.training import TrainingConfig, train_client  # noqa: E402
from agent.learning.update import ModelUpdate  # noqa: E402
from models.spec import EncoderSpec  # noqa: E402

RULES = ("fedavg", "median", "trimmed_mean", "multi_krum", "trimmed_mean+norm_bound", "multi_krum+norm_bound")


def peer_updates(update: ModelUpdate, peers: int, seed: int) -> list[tuple[str, ModelUpdate]]:
    """``peers`` distinct updates shaped like ``update``: it plus noise of its own per-tensor scale."""
    generator = torch.Generator().manual_seed(seed)
    updates = []
    for peer in range(peers):
        deltas = {
            name: delta + torch.randn(delta.shape, generator=generator) * float(delta.abs().mean())
            for name, delta in update.deltas.items()
        }
        updates.append((f"peer-{peer}", ModelUpdate(update.mode, update.stage, update.samples, deltas)))
    return updates


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--peers", type=int, default=16)
    parser.add_argument("--images", type=int, default=1500, help="images per peer (default 1500)")
    parser.add_argument("--modes", nargs="+", default=["lw", "e2e"])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=None, help="also write the figures to this JSON file")
    args = parser.parse_args()
    torch.set_num_threads(1)
    images = load_dataset("fashion-mnist", None, "train", limit=args.images).images
    rows = []
    for mode_name in args.modes:
        mode = TrainingMode.parse(mode_name)
        config = TrainingConfig(spec=EncoderSpec(), mode=mode, federation_seed=0, batch_size=128)
        state = initial_state(config)
        for stage in range(1, config.spec.stages + 1):
            started = time.perf_counter()
            result = train_client(state, stage, images, config, seed=stage)
            training_seconds = time.perf_counter() - started
            updates = peer_updates(result.update, args.peers, seed=stage)
            parameters = sum(delta.numel() for delta in result.update.deltas.values())
            for rule in RULES:
                aggregation = parse_variant(rule)
                timings = []
                for _ in range(args.repeats):
                    started = time.perf_counter()
                    merge_round(state, updates, aggregation)
                    timings.append(time.perf_counter() - started)
                merge_seconds = statistics.median(timings)
                row = {
                    "mode": mode_name,
                    "stage": stage,
                    "peers": args.peers,
                    "exchanged_parameters": parameters,
                    "rule": rule,
                    "training_seconds": training_seconds,
                    "merge_seconds": merge_seconds,
                    "merge_share_of_training": merge_seconds / training_seconds,
                }
                rows.append(row)
                share = row["merge_share_of_training"]
                print(
                    f"{mode_name} stage {stage} ({parameters} parameters): "
                    f"training {training_seconds:.1f} s, "
                    f"{rule} merge of {args.peers} {merge_seconds:.3f} s ({share:.1%})",
                    flush=True,
                )
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(rows, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
