"""Every rule merges bit-identically: any arrival order, another process, other torch thread settings.

Peers attest the CID of the bytes they merged, so one differing last bit splits the federation. The
updates here include what makes order matter: an attacker far from the rest (clipped, discarded or
trimmed), two byte-identical updates from different peers, signed zeros, and unequal claims.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import subprocess
import sys

import pytest
import torch

from agent.learning.aggregation.arithmetic import (
    odd_even_merge_comparators,
    pairwise_row_sums,
    pairwise_sum,
    sorted_rows,
)
from agent.learning.aggregation.config import LEGACY_FEDAVG, RULE_NAMES, WEIGHTING_NAMES, AggregationConfig
from agent.learning.merging import LabelledUpdate, merge_round, merge_updates
from agent.learning.modes import TrainingMode
from agent.learning.update import ModelUpdate

SHAPES = {"stages.1.weight": (16, 9), "stages.1.bias": (16,), "heads.1.weight": (5, 16), "heads.1.bias": (5,)}


def configurations() -> dict[str, AggregationConfig]:
    """Every rule, with and without the norm bound, and every weighting for the weighted rules."""
    found: dict[str, AggregationConfig] = {}
    for rule in RULE_NAMES:
        for norm_bound in (None, 1.5):
            for weighting in WEIGHTING_NAMES:
                config = AggregationConfig(rule=rule, norm_bound=norm_bound, sample_weighting=weighting)
                found[config.describe() + f"/{weighting}"] = config
    found["legacy"] = LEGACY_FEDAVG
    return found


CONFIGURATIONS = configurations()


def round_updates(count: int, seed: int) -> tuple[dict[str, torch.Tensor], list[LabelledUpdate]]:
    generator = torch.Generator().manual_seed(seed)
    state = {name: torch.randn(shape, generator=generator) for name, shape in SHAPES.items()}
    state["stages.0.weight"] = torch.randn(3, 3, generator=generator)  # frozen: no update touches it
    updates: list[LabelledUpdate] = []
    for index in range(count):
        deltas = {name: torch.randn(shape, generator=generator) * 1e-3 for name, shape in SHAPES.items()}
        deltas["stages.1.bias"][:4] = torch.tensor([0.0, -0.0, 0.0 if index % 2 else -0.0, 1e-3])
        samples = int(torch.randint(1, 5000, (1,), generator=generator))
        updates.append((f"0xpeer{index:02d}", ModelUpdate(TrainingMode.LAYER_WISE, 1, samples, deltas)))
    attacker = updates[-1][1]
    updates[-1] = (
        updates[-1][0],
        ModelUpdate(attacker.mode, attacker.stage, 10**6, {n: d * -50 for n, d in attacker.deltas.items()}),
    )
    updates.append(("0xcopycat", updates[0][1]))  # the same bytes from a second peer
    return state, updates


def merged_bytes(
    state: dict[str, torch.Tensor], updates: list[LabelledUpdate], config: AggregationConfig
) -> bytes:
    merged = merge_round(state, updates, config).state
    return b"".join(merged[name].numpy().tobytes() for name in sorted(merged))


def fingerprints(count: int, seed: int) -> dict[str, str]:
    """SHA-256 of the merged bytes under every configuration, updates given in reverse."""
    state, updates = round_updates(count, seed)
    return {
        name: hashlib.sha256(merged_bytes(state, list(reversed(updates)), config)).hexdigest()
        for name, config in CONFIGURATIONS.items()
    }


@pytest.mark.parametrize("name", sorted(CONFIGURATIONS))
@pytest.mark.parametrize("count", [4, 7])
def test_any_arrival_order_gives_identical_bytes(name: str, count: int) -> None:
    config = CONFIGURATIONS[name]
    state, updates = round_updates(count, seed=count)
    reference = merged_bytes(state, updates, config)
    reference_decisions = merge_round(state, updates, config).decisions
    shuffler = random.Random(count)
    for _ in range(6):
        shuffled = list(updates)
        shuffler.shuffle(shuffled)
        assert merged_bytes(state, shuffled, config) == reference
        assert merge_round(state, shuffled, config).decisions == reference_decisions


def test_the_rules_do_differ_on_these_updates() -> None:
    # guards the test above: were every configuration to give the same bytes, it would prove little
    state, updates = round_updates(7, seed=7)
    distinct = {merged_bytes(state, updates, config) for config in CONFIGURATIONS.values()}
    assert len(distinct) >= len(RULE_NAMES) * 2


def test_identical_bytes_in_a_process_with_other_thread_settings() -> None:
    reference = fingerprints(6, 11)
    script = (
        "import json, torch; torch.set_num_interop_threads(1)\n"
        "from tests.test_aggregation_determinism import fingerprints\n"
        "runs = {}\n"
        "for threads in (1, 3):\n"
        "    torch.set_num_threads(threads); runs[threads] = fingerprints(6, 11)\n"
        "print(json.dumps(runs))"
    )
    other = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    runs = json.loads(other.stdout)
    assert sorted(runs) == ["1", "3"]
    for threads, fingerprint in runs.items():
        assert fingerprint == reference, f"with {threads} thread(s)"


def test_merge_round_does_not_mutate_its_inputs() -> None:
    state, updates = round_updates(5, seed=3)
    state_copy = {name: tensor.clone() for name, tensor in state.items()}
    update_bytes = [update.to_bytes() for _, update in updates]
    for config in CONFIGURATIONS.values():
        outcome = merge_round(state, updates, config)
        for tensor in outcome.state.values():
            tensor.add_(1.0)
        assert all(torch.equal(state[name], state_copy[name]) for name in state)
        assert [update.to_bytes() for _, update in updates] == update_bytes


def test_untouched_tensors_keep_their_bytes_and_merged_ones_are_float32() -> None:
    state, updates = round_updates(5, seed=4)
    for config in CONFIGURATIONS.values():
        merged = merge_round(state, updates, config).state
        assert torch.equal(merged["stages.0.weight"], state["stages.0.weight"])
        assert merged["stages.0.weight"] is not state["stages.0.weight"]
        assert all(tensor.dtype == torch.float32 for tensor in merged.values())
        assert all(bool(torch.isfinite(tensor).all()) for tensor in merged.values())


def test_legacy_fedavg_is_the_merge_of_before_rules_existed() -> None:
    # The formula of agent.learning.merging before issue 9, byte for byte: old and new peers must agree.
    state, labelled = round_updates(6, seed=5)
    updates = [update for _, update in labelled]
    ordered = sorted(updates, key=lambda update: hashlib.sha256(update.to_bytes()).digest())
    total = float(sum(update.samples for update in ordered))
    expected = {name: tensor.clone() for name, tensor in state.items()}
    for name in SHAPES:
        accumulated = torch.zeros(state[name].shape, dtype=torch.float64)
        for update in ordered:
            accumulated = accumulated + update.deltas[name].to(torch.float64) * float(update.samples)
        expected[name] = (state[name].to(torch.float64) + accumulated / total).to(torch.float32)
    merged = merge_updates(state, list(reversed(updates)))
    assert all(merged[name].numpy().tobytes() == expected[name].numpy().tobytes() for name in expected)


@pytest.mark.parametrize("size", [1, 2, 3, 7, 1000, 65_537])
def test_pairwise_sum_is_the_same_for_every_thread_count_and_close_to_fsum(size: int) -> None:
    generator = torch.Generator().manual_seed(size)
    values = torch.randn(size, generator=generator, dtype=torch.float64) * 10 ** torch.randint(
        -8, 8, (size,), generator=generator
    ).to(torch.float64)
    previous = torch.get_num_threads()
    results = set()
    try:
        for threads in (1, 2, 4):
            torch.set_num_threads(threads)
            results.add(pairwise_sum(values))
    finally:
        torch.set_num_threads(previous)
    assert len(results) == 1
    exact = math.fsum(values.tolist())
    magnitude = math.fsum(abs(value) for value in values.tolist())
    assert results.pop() == pytest.approx(exact, abs=1e-15 * magnitude * math.log2(size + 1) + 1e-300)


def test_pairwise_sum_of_nothing_and_of_float32() -> None:
    assert pairwise_sum(torch.zeros(0)) == 0.0
    assert pairwise_sum(torch.tensor([[0.5, 0.25], [0.125, 1.0]], dtype=torch.float32)) == 1.875
    values = torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64)
    pairwise_sum(values)
    assert values.tolist() == [1.0, 2.0, 3.0]


@pytest.mark.parametrize("count", [*range(1, 21), 33, 64])
def test_the_sorting_network_sorts_every_coordinate(count: int) -> None:
    generator = torch.Generator().manual_seed(count)
    rows = [torch.randn(50, dtype=torch.float64, generator=generator) for _ in range(count)]
    rows[0][:5] = rows[-1][:5]  # ties
    expected = torch.sort(torch.stack(rows), dim=0).values
    assert torch.equal(torch.stack(sorted_rows(rows)), expected)


def test_batchers_network_has_its_known_size_and_rows_sum_like_pairwise_sum() -> None:
    assert len(odd_even_merge_comparators(16)) == 63  # Batcher's odd-even merge sort on 16 inputs
    assert len(odd_even_merge_comparators(1)) == 0
    matrix = torch.randn(4, 1000, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    sums = pairwise_row_sums(matrix).tolist()
    assert sums == [pairwise_sum(row) for row in matrix]
