"""Update serialisation and the validation every peer's update passes before it is merged."""

from __future__ import annotations

import pytest
import torch

from agent.errors import UpdateRejectedError
from agent.learning.modes import TrainingMode
from agent.learning.update import ModelUpdate, capped_claim, expected_update_names, validate_update

REFERENCE = {
    "stages.0.weight": torch.zeros(4, 3),
    "stages.1.weight": torch.zeros(5, 4),
    "stages.1.bias": torch.zeros(5),
    "heads.1.weight": torch.zeros(2, 5),
    "heads.0.weight": torch.zeros(2, 4),
}


def good_update() -> ModelUpdate:
    names = expected_update_names(REFERENCE, TrainingMode.LAYER_WISE, 2, 2)
    return ModelUpdate(
        TrainingMode.LAYER_WISE, 2, 10, {name: torch.ones_like(REFERENCE[name]) for name in names}
    )


def test_expected_names_are_the_stage_and_its_head() -> None:
    assert expected_update_names(REFERENCE, TrainingMode.LAYER_WISE, 2, 2) == [
        "heads.1.weight",
        "stages.1.bias",
        "stages.1.weight",
    ]
    assert "stages.0.weight" in expected_update_names(REFERENCE, TrainingMode.PROGRESSIVE, 2, 2)


def test_round_trip_and_deterministic_bytes() -> None:
    original = good_update()
    payload = original.to_bytes()
    assert payload == good_update().to_bytes()
    decoded = ModelUpdate.from_bytes(payload)
    assert (decoded.mode, decoded.stage, decoded.samples) == (TrainingMode.LAYER_WISE, 2, 10)
    assert all(torch.equal(decoded.deltas[name], original.deltas[name]) for name in original.deltas)
    validate_update(decoded, REFERENCE, TrainingMode.LAYER_WISE, 2, 2)


def replace(name: str, tensor: torch.Tensor) -> ModelUpdate:
    base = good_update()
    return ModelUpdate(base.mode, base.stage, base.samples, {**base.deltas, name: tensor})


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (replace("stages.1.bias", torch.full((5,), float("nan"))), "NaN or infinite"),
        (replace("stages.1.bias", torch.full((5,), float("inf"))), "NaN or infinite"),
        (replace("stages.1.bias", torch.zeros(6)), "shape"),
        (replace("stages.1.bias", torch.zeros(5, dtype=torch.float64)), "dtype"),
        (replace("stages.0.weight", torch.zeros(4, 3)), "unexpected"),
        (ModelUpdate(TrainingMode.LAYER_WISE, 2, 0, good_update().deltas), "samples"),
        (ModelUpdate(TrainingMode.LAYER_WISE, 1, 10, good_update().deltas), "stage 1"),
        (ModelUpdate(TrainingMode.END_TO_END, 2, 10, good_update().deltas), "mode e2e"),
    ],
)
def test_bad_updates_are_rejected_with_the_reason(bad: ModelUpdate, message: str) -> None:
    with pytest.raises(UpdateRejectedError, match=message):
        validate_update(bad, REFERENCE, TrainingMode.LAYER_WISE, 2, 2)


def test_missing_tensor_is_rejected() -> None:
    base = good_update()
    deltas = dict(base.deltas)
    del deltas["heads.1.weight"]
    with pytest.raises(UpdateRejectedError, match="missing"):
        validate_update(
            ModelUpdate(base.mode, base.stage, base.samples, deltas), REFERENCE, TrainingMode.LAYER_WISE, 2, 2
        )


@pytest.mark.parametrize("payload", [b"", b"not safetensors at all", b"\xff" * 64])
def test_garbage_bytes_are_rejected(payload: bytes) -> None:
    with pytest.raises(UpdateRejectedError):
        ModelUpdate.from_bytes(payload)


def test_foreign_format_is_rejected() -> None:
    from agent.learning.model_state import encode_tensors

    payload = encode_tensors({"x": torch.zeros(1)}, {"format": "something-else"})
    with pytest.raises(UpdateRejectedError, match="format"):
        ModelUpdate.from_bytes(payload)


def test_a_claim_above_the_recipes_limit_is_capped_to_it() -> None:
    update = ModelUpdate(
        mode=TrainingMode.LAYER_WISE, stage=2, samples=250_000, deltas={"stages.1.weight": torch.ones(2)}
    )
    capped = capped_claim(update, 100_000)
    assert capped.samples == 100_000 and capped.deltas is update.deltas
    assert capped_claim(capped, 100_000) is capped
