"""FedAvg arithmetic, and bit-identical merges whatever the arrival order."""

from __future__ import annotations

import random
import subprocess
import sys

import pytest
import torch

from agent.errors import UpdateRejectedError
from agent.learning.merging import merge_updates
from agent.learning.modes import TrainingMode
from agent.learning.update import ModelUpdate


def update(samples: int, values: dict[str, torch.Tensor]) -> ModelUpdate:
    return ModelUpdate(mode=TrainingMode.LAYER_WISE, stage=1, samples=samples, deltas=values)


def test_sample_weighted_average_of_deltas() -> None:
    state = {
        "stages.0.weight": torch.tensor([1.0, 2.0]),
        "heads.0.bias": torch.tensor([0.5]),
        "stages.1.weight": torch.tensor([9.0]),
    }
    first = update(1, {"stages.0.weight": torch.tensor([3.0, 0.0]), "heads.0.bias": torch.tensor([1.0])})
    second = update(3, {"stages.0.weight": torch.tensor([-1.0, 4.0]), "heads.0.bias": torch.tensor([-1.0])})
    merged = merge_updates(state, [first, second])
    # weights 1/4 and 3/4: [1 + (3 - 3)/4, 2 + (0 + 12)/4], 0.5 + (1 - 3)/4
    assert merged["stages.0.weight"].tolist() == [1.0, 5.0]
    assert merged["heads.0.bias"].tolist() == [0.0]
    assert merged["stages.1.weight"] is not state["stages.1.weight"]
    assert torch.equal(merged["stages.1.weight"], state["stages.1.weight"])
    assert state["stages.0.weight"].tolist() == [1.0, 2.0], "the merge must not mutate its input"


def random_updates(count: int, seed: int) -> tuple[dict[str, torch.Tensor], list[ModelUpdate]]:
    generator = torch.Generator().manual_seed(seed)
    shapes = {"stages.0.weight": (64, 33), "stages.0.bias": (64,), "heads.0.weight": (7, 64)}
    state = {name: torch.randn(shape, generator=generator) for name, shape in shapes.items()}
    updates = [
        update(
            int(torch.randint(1, 5000, (1,), generator=generator)),
            {name: torch.randn(shape, generator=generator) * 1e-3 for name, shape in shapes.items()},
        )
        for _ in range(count)
    ]
    return state, updates


def merged_bytes(state: dict[str, torch.Tensor], updates: list[ModelUpdate]) -> bytes:
    merged = merge_updates(state, updates)
    return b"".join(merged[name].numpy().tobytes() for name in sorted(merged))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_any_arrival_order_gives_identical_bytes(seed: int) -> None:
    state, updates = random_updates(9, seed)
    reference = merged_bytes(state, updates)
    shuffler = random.Random(seed)
    for _ in range(5):
        shuffled = list(updates)
        shuffler.shuffle(shuffled)
        assert merged_bytes(state, shuffled) == reference


def test_identical_bytes_in_a_process_with_other_thread_settings() -> None:
    state, updates = random_updates(6, 11)
    reference = merged_bytes(state, updates).hex()
    script = (
        "import torch; torch.set_num_threads(1);"
        "from tests.test_merging import random_updates, merged_bytes;"
        "state, updates = random_updates(6, 11);"
        "print(merged_bytes(state, list(reversed(updates))).hex())"
    )
    other = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert other.stdout.strip() == reference


def test_float64_accumulation_beats_naive_float32() -> None:
    # Many tiny deltas on a large weight: float32 accumulation would drop them entirely.
    state = {"stages.0.weight": torch.tensor([1.0e4])}
    updates = [update(1, {"stages.0.weight": torch.tensor([1.0e-4 * (index + 1)])}) for index in range(10)]
    merged = merge_updates(state, updates)
    expected = torch.tensor([1.0e4 + 5.5e-4], dtype=torch.float64).to(torch.float32)
    assert torch.equal(merged["stages.0.weight"], expected)


def test_merge_refuses_empty_and_mismatched_sets() -> None:
    state = {"a": torch.zeros(2), "b": torch.zeros(2)}
    with pytest.raises(UpdateRejectedError, match="no updates"):
        merge_updates(state, [])
    with pytest.raises(UpdateRejectedError, match="different tensors"):
        merge_updates(state, [update(1, {"a": torch.ones(2)}), update(1, {"b": torch.ones(2)})])
