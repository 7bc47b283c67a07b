"""``layerfed bench --robustness``: every aggregation rule against every attack, as a table.

A cell is one federation (the configuration's first mode, normally ``lw``) merged with one aggregator
variant while ``attackers`` of ``clients`` run one attack (or none), each in a fresh worker process
through exactly the client step and merge the agent runs. Every client holds the same number of images
in every scenario (the preset's ``train_limit / clients``), so that 1 of 5 and 2 of 7 differ only in
who is honest. A cell whose output exists is not run again, so an interrupted grid resumes.

Outputs: ``results.json`` (schema ``layerfed-robustness/1``: the configuration, the random-init
reference and one record per cell) and ``results.md`` (linear probe per aggregator and attack, per
scenario, with each rule's merge time per round and how often it filtered attackers and honest peers).
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from agent.benchmark.attacks import ATTACK_NAMES
from agent.benchmark.presets import BenchmarkConfig
from agent.benchmark.results import ModeResult
from agent.benchmark.worker import RANDOM_INIT_JOB
from agent.errors import ConfigurationError
from agent.learning.aggregation.arguments import parse_variant
from agent.learning.simulation import client_label

SCHEMA = "layerfed-robustness/1"
NO_ATTACK = "none"
DEFAULT_AGGREGATORS = ("fedavg", "median", "trimmed_mean", "multi_krum", "trimmed_mean+norm_bound")
DEFAULT_SCENARIOS = ((1, 5), (2, 7))


@dataclass(frozen=True)
class Cell:
    aggregator: str
    attack: str
    attackers: int
    clients: int

    @property
    def name(self) -> str:
        return f"{self.aggregator}-{self.attack}-{self.attackers}of{self.clients}"


@dataclass(frozen=True)
class CellResult:
    """What one cell measured; ``*_filtered`` count the merge's discard and clip decisions."""

    aggregator: str
    attack: str
    attackers: int
    clients: int
    linear_probe_accuracy: float
    knn_accuracy: float
    merge_seconds_per_round: float
    training_seconds_per_round: float
    attacker_discarded: int
    attacker_clipped: int
    honest_discarded: int
    honest_clipped: int
    rounds: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def parse_scenarios(text: str) -> tuple[tuple[int, int], ...]:
    """``1/5,2/7`` as ((attackers, clients), ...)."""
    scenarios = []
    for item in text.split(","):
        attackers, _, clients = item.strip().partition("/")
        try:
            scenarios.append((int(attackers), int(clients)))
        except ValueError:
            raise ConfigurationError(f"a scenario is ATTACKERS/CLIENTS, such as 1/5, not {item!r}") from None
    return tuple(scenarios)


def planned_cells(
    aggregators: Sequence[str], attacks: Sequence[str], scenarios: Sequence[tuple[int, int]]
) -> list[Cell]:
    for aggregator in aggregators:
        parse_variant(aggregator)
    for attack in attacks:
        if attack not in ATTACK_NAMES:
            raise ConfigurationError(f"unknown attack {attack!r}; choose from {', '.join(ATTACK_NAMES)}")
    return [
        Cell(aggregator, attack, attackers if attack != NO_ATTACK else 0, clients)
        for attackers, clients in scenarios
        for aggregator in aggregators
        for attack in (NO_ATTACK, *attacks)
    ]


def cell_config(base: BenchmarkConfig, cell: Cell) -> BenchmarkConfig:
    """The preset with this cell's rule, attack and clients, at the preset's images per client."""
    images_per_client = (base.train_limit or 0) // base.clients
    return replace(
        base,
        clients=cell.clients,
        train_limit=images_per_client * cell.clients if base.train_limit else None,
        aggregation=replace(parse_variant(cell.aggregator), maximum_samples=base.aggregation.maximum_samples),
        attack=None if cell.attack == NO_ATTACK else cell.attack,
        attackers=cell.attackers,
        modes=base.modes[:1],
    )


def summarise_cell(cell: Cell, result: ModeResult) -> CellResult:
    attackers = {client_label(client) for client in range(cell.clients - cell.attackers, cell.clients)}
    counts = {"attacker_discarded": 0, "attacker_clipped": 0, "honest_discarded": 0, "honest_clipped": 0}
    for record in result.rounds:
        for decision in record.decisions:
            label, action = decision.split(" ")[:2]
            if action in ("discarded", "clipped"):
                counts[f"{'attacker' if label in attackers else 'honest'}_{action}"] += 1
    return CellResult(
        aggregator=cell.aggregator,
        attack=cell.attack,
        attackers=cell.attackers,
        clients=cell.clients,
        linear_probe_accuracy=result.linear_probe_accuracy,
        knn_accuracy=result.knn_accuracy,
        merge_seconds_per_round=statistics.mean(record.merge_seconds for record in result.rounds),
        training_seconds_per_round=statistics.mean(record.wall_seconds for record in result.rounds),
        rounds=len(result.rounds),
        **counts,
    )


def run_grid(
    base: BenchmarkConfig,
    cells: Sequence[Cell],
    out: Path,
    parallel: int,
    run_worker: Any,
    privacy: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Run every cell (``parallel`` worker processes at a time) and write results.json and results.md."""
    from tqdm import tqdm

    jobs = out / "jobs"
    jobs.mkdir(parents=True, exist_ok=True)
    base_path = out / "config.json"
    base_path.write_text(json.dumps(base.to_dict(), indent=2) + "\n")
    reference = run_worker(base_path, RANDOM_INIT_JOB, jobs / "random-init.json")

    def run_cell(cell: Cell) -> CellResult:
        output = jobs / f"{cell.name}.json"
        if output.exists():
            loaded = json.loads(output.read_text())
        else:
            config_path = jobs / f"{cell.name}.config.json"
            config_path.write_text(json.dumps(cell_config(base, cell).to_dict(), indent=2) + "\n")
            loaded = run_worker(config_path, base.modes[0], output)
        return summarise_cell(cell, ModeResult.from_dict(loaded["result"]))

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=parallel) as pool:
        results = list(
            tqdm(pool.map(run_cell, cells), total=len(cells), desc="robustness cells", file=sys.stderr)
        )
    document = {
        "schema": SCHEMA,
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": list(sys.argv),
        "config": base.to_dict(),
        "parallel_workers": parallel,
        "wall_seconds": time.perf_counter() - started,
        "random_init": reference["result"],
        "cells": [result.to_dict() for result in results],
        "privacy": privacy,
    }
    (out / "results.json").write_text(json.dumps(document, indent=2) + "\n")
    markdown = render_robustness(document)
    (out / "results.md").write_text(markdown)
    print(markdown)
    print(f"wrote {out / 'results.json'} and {out / 'results.md'}")
    return document


def render_robustness(document: dict[str, Any]) -> str:
    """The robustness tables: one per scenario, aggregators as rows, attacks as columns."""
    cells = [CellResult(**item) for item in document["cells"]]
    config = document["config"]
    random_init = document["random_init"]["linear_probe_accuracy"]
    lines = [
        f"# layerfed robustness: {config['model']}, preset {config['preset']}, mode {config['modes'][0]}",
        "",
        f"Linear-probe accuracy of the final model; {config['spec']['stages']} stages x "
        f"{config['rounds_per_stage']} rounds, seed {config['seed']}, "
        f"{(config['train_limit'] or 0) // config['clients']} images per client. Random init: "
        f"{100 * random_init:.1f}%. Merge ms: mean merge time per round over the row's cells. Filtered: "
        "attacker updates discarded or clipped / honest updates discarded or clipped, over the row.",
    ]
    if document.get("privacy"):
        lines += ["", f"Differential privacy of every honest update: {document['privacy']['description']}."]
    scenarios = sorted({(cell.attackers or 0, cell.clients) for cell in cells if cell.attack != NO_ATTACK})
    attacks = list(dict.fromkeys(cell.attack for cell in cells))
    aggregators = list(dict.fromkeys(cell.aggregator for cell in cells))
    for attackers, clients in scenarios:
        lines += ["", f"## {attackers} attacker(s) of {clients}", ""]
        lines.append("| aggregator | " + " | ".join(attacks) + " | merge ms | filtered |")
        lines.append("|---|" + "---:|" * (len(attacks) + 2))
        for aggregator in aggregators:
            row = [
                cell
                for cell in cells
                if cell.aggregator == aggregator
                and cell.clients == clients
                and (cell.attackers in (0, attackers))
            ]
            by_attack = {cell.attack: cell for cell in row}
            values = [
                f"{100 * by_attack[attack].linear_probe_accuracy:.1f}%" if attack in by_attack else "-"
                for attack in attacks
            ]
            merge = 1000 * statistics.mean(cell.merge_seconds_per_round for cell in row) if row else 0.0
            attacker_hits = sum(cell.attacker_discarded + cell.attacker_clipped for cell in row)
            honest_hits = sum(cell.honest_discarded + cell.honest_clipped for cell in row)
            lines.append(
                f"| {aggregator} | "
                + " | ".join(values)
                + f" | {merge:.1f} | {attacker_hits} / {honest_hits} |"
            )
        lines.append(f"| random init | {100 * random_init:.1f}% |" + " |" * (len(attacks) + 1))
    return "\n".join(lines) + "\n"
