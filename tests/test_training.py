"""The client step trains exactly what its mode says, and its update holds exactly that."""

from __future__ import annotations

import pytest
import torch

from agent.errors import ConfigurationError
from agent.learning.merging import merge_updates
from agent.learning.modes import TrainingMode
from agent.learning.simulation import initial_state
from agent.learning.training import TrainingConfig, train_client
from models.spec import EncoderSpec

SMALL_RESNET = EncoderSpec(architecture="resnet", stages=3, widths=(8, 16, 16), image_size=16)
SMALL_VIT = EncoderSpec(
    architecture="vit", stages=3, depth=3, embed_dim=24, attention_heads=2, patch_size=4, image_size=16
)


def images(count: int = 24, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (count, 1, 16, 16), generator=generator, dtype=torch.uint8)


def changed_prefixes(before: dict[str, torch.Tensor], after: dict[str, torch.Tensor]) -> set[str]:
    """'stages.i' / 'heads.i' of every tensor whose bytes changed."""
    return {".".join(name.split(".")[:2]) for name in before if not torch.equal(before[name], after[name])}


@pytest.mark.parametrize("spec", [SMALL_RESNET, SMALL_VIT], ids=["resnet", "vit"])
@pytest.mark.parametrize(
    ("mode", "stage", "expected"),
    [
        (TrainingMode.LAYER_WISE, 1, {"stages.0", "heads.0"}),
        (TrainingMode.LAYER_WISE, 2, {"stages.1", "heads.1"}),
        (TrainingMode.LAYER_WISE, 3, {"stages.2", "heads.2"}),
        (TrainingMode.PROGRESSIVE, 2, {"stages.0", "stages.1", "heads.1"}),
        (TrainingMode.END_TO_END, 1, {"stages.0", "stages.1", "stages.2", "heads.2"}),
    ],
)
def test_a_round_changes_only_what_the_mode_trains(
    spec: EncoderSpec, mode: TrainingMode, stage: int, expected: set[str]
) -> None:
    config = TrainingConfig(spec=spec, mode=mode, federation_seed=5, batch_size=8)
    before = initial_state(config)
    result = train_client(before, stage, images(), config, seed=1)
    after = merge_updates(before, [result.update])
    assert changed_prefixes(before, after) == expected
    exchanged = {".".join(name.split(".")[:2]) for name in result.update.deltas}
    assert exchanged == expected
    every_tensor_under_expected = {name for name in before if ".".join(name.split(".")[:2]) in expected}
    assert set(result.update.deltas) == every_tensor_under_expected


def test_frozen_batch_norm_statistics_do_not_move_in_layer_wise_mode() -> None:
    config = TrainingConfig(spec=SMALL_RESNET, mode=TrainingMode.LAYER_WISE, federation_seed=5, batch_size=8)
    before = initial_state(config)
    # Make stage 1's running statistics distinctive, then train stage 2 on top of it.
    before = {
        name: tensor + 0.25 if "stages.0" in name and "running" in name else tensor
        for name, tensor in before.items()
    }
    result = train_client(before, 2, images(), config, seed=2)
    after = merge_updates(before, [result.update])
    for name in before:
        if name.startswith("stages.0."):
            assert torch.equal(before[name], after[name]), name


def test_same_seed_same_update_and_metrics_are_plausible() -> None:
    config = TrainingConfig(spec=SMALL_VIT, mode=TrainingMode.LAYER_WISE, federation_seed=5, batch_size=8)
    state = initial_state(config)
    first = train_client(state, 2, images(), config, seed=9)
    second = train_client(state, 2, images(), config, seed=9)
    assert first.update.to_bytes() == second.update.to_bytes()
    assert first.metrics.samples == 24
    assert first.metrics.steps == 3
    assert first.metrics.flops > 0
    assert first.metrics.update_bytes == len(first.update.to_bytes())
    other = train_client(state, 2, images(), config, seed=10)
    assert other.update.to_bytes() != first.update.to_bytes()


def test_layer_wise_counts_fewer_flops_than_end_to_end() -> None:
    counts = {}
    for mode in TrainingMode:
        config = TrainingConfig(spec=SMALL_VIT, mode=mode, federation_seed=5, batch_size=8)
        counts[mode] = train_client(initial_state(config), 3, images(), config, seed=1).metrics.flops
    # At the last stage lw runs stages 1-2 forward only; prog and e2e back-propagate through all three.
    assert counts[TrainingMode.LAYER_WISE] < counts[TrainingMode.PROGRESSIVE]
    assert counts[TrainingMode.PROGRESSIVE] == counts[TrainingMode.END_TO_END]


def test_bad_inputs_are_refused() -> None:
    config = TrainingConfig(spec=SMALL_RESNET, mode=TrainingMode.LAYER_WISE, federation_seed=5)
    state = initial_state(config)
    with pytest.raises(ConfigurationError, match="uint8"):
        train_client(state, 1, images().float(), config, seed=0)
    with pytest.raises(ConfigurationError, match="stage 4"):
        train_client(state, 4, images(), config, seed=0)
    with pytest.raises(ConfigurationError, match="batch_size"):
        TrainingConfig(spec=SMALL_RESNET, mode=TrainingMode.LAYER_WISE, federation_seed=5, batch_size=1)
