"""Compressed deltas: each codec's arithmetic, error feedback, the recipe entry, malformed payloads,
the device's residual across restarts, and bit-identical merges of decoded updates in any order."""

from __future__ import annotations

import hashlib
import random
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from agent.commands.local_federation import LocalFederation
from agent.engine.error_feedback_file import ERROR_FEEDBACK_FILE, ErrorFeedbackFile
from agent.errors import ConfigurationError, UpdateRejectedError
from agent.learning.aggregation.config import DEFAULT_AGGREGATION, LEGACY_FEDAVG
from agent.learning.compression import NO_COMPRESSION, CompressionConfig, compress_update, decompress_update
from agent.learning.compression.codecs import encode_int8, topk_count
from agent.learning.merging import merge_round
from agent.learning.model_file import decode_model
from agent.learning.model_state import decode_tensors, encode_tensors
from agent.learning.modes import TrainingMode
from agent.learning.training import TrainingConfig
from agent.learning.update import ModelUpdate, validate_update
from models.spec import EncoderSpec
from tests.test_round_engine import TINY, run_to_completion

SHAPES = {"stages.1.weight": (16, 9), "stages.1.bias": (16,), "heads.1.weight": (5, 16), "heads.1.bias": (5,)}
METHODS = {
    "none": NO_COMPRESSION,
    "fp16": CompressionConfig("fp16"),
    "int8": CompressionConfig("int8"),
    "topk": CompressionConfig("topk", topk_fraction=0.1),
    "topk-no-feedback": CompressionConfig("topk", topk_fraction=0.3, error_feedback=False),
}


def reference_state(seed: int = 0) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    state = {name: torch.randn(shape, generator=generator) for name, shape in SHAPES.items()}
    state["stages.0.weight"] = torch.randn(3, 3, generator=generator)
    return state


def an_update(seed: int, samples: int = 100) -> ModelUpdate:
    generator = torch.Generator().manual_seed(seed)
    deltas = {name: torch.randn(shape, generator=generator) * 1e-3 for name, shape in SHAPES.items()}
    deltas["heads.1.bias"][0] = 0.0
    return ModelUpdate(TrainingMode.LAYER_WISE, 2, samples, deltas)


@pytest.mark.parametrize("name", sorted(METHODS))
def test_a_compressed_update_decodes_to_what_the_sender_computed_and_validates(name: str) -> None:
    config, state, update = METHODS[name], reference_state(), an_update(1)
    compressed = compress_update(update, config)
    decoded = decompress_update(compressed.payload, config, state)
    assert decoded.to_bytes() == compressed.decoded.to_bytes()
    assert (decoded.mode, decoded.stage, decoded.samples) == (update.mode, update.stage, update.samples)
    validate_update(decoded, state, TrainingMode.LAYER_WISE, 2, 3)


def test_payload_sizes_shrink_as_each_method_promises() -> None:
    update = ModelUpdate(TrainingMode.LAYER_WISE, 2, 5, {"stages.1.weight": torch.randn(256, 256)})
    sizes = {name: len(compress_update(update, config).payload) for name, config in METHODS.items()}
    dense = 256 * 256 * 4
    assert dense < sizes["none"] < dense + 1000
    assert sizes["fp16"] < dense / 2 + 1000
    assert sizes["int8"] < dense / 4 + 256 * 4 + 1000
    assert sizes["topk"] < 0.1 * dense * 2 + 1000  # 10 % of the entries, 8 bytes each


def test_fp16_is_exact_for_representable_values_and_saturates() -> None:
    deltas = {"stages.1.bias": torch.tensor([0.5, -0.25, 1e6, -1e6, 3.0, 0.0, 1.0, 2.0] * 2)}
    update = ModelUpdate(TrainingMode.LAYER_WISE, 2, 5, deltas)
    decoded = compress_update(update, CompressionConfig("fp16")).decoded.deltas["stages.1.bias"]
    assert decoded[:3].tolist() == [0.5, -0.25, 65504.0] and decoded[3] == -65504.0


def test_int8_scales_per_row_and_rounds_half_to_even() -> None:
    # row 0: scale 127/127 = 1, so x / scale is x itself: 0.5 -> 0, 1.5 -> 2, 2.5 -> 2, -0.5 -> -0 (even)
    row0 = torch.tensor([127.0, 0.5, 1.5, 2.5, -0.5, -1.5])
    row1 = torch.tensor([0.0, 0.0, 0.0, 0.0, 0.0, 0.0])  # all zero: scale 0, decodes to zeros
    encoded = encode_int8("w", torch.stack([row0, row1]))
    assert encoded["w#scale"].tolist() == [1.0, 0.0]
    assert encoded["w"][0].tolist() == [127, 0, 2, 2, 0, -2]
    assert encoded["w"][1].tolist() == [0] * 6
    config = CompressionConfig("int8")
    update = ModelUpdate(TrainingMode.LAYER_WISE, 2, 5, {"stages.1.weight": torch.randn(16, 9)})
    decoded = compress_update(update, config).decoded.deltas["stages.1.weight"]
    scale = update.deltas["stages.1.weight"].abs().amax(dim=1, keepdim=True) / 127
    assert bool(((decoded - update.deltas["stages.1.weight"]).abs() <= scale / 2 + 1e-7).all())


def test_topk_keeps_the_largest_entries_and_error_feedback_sends_the_rest_later() -> None:
    config = CompressionConfig("topk", topk_fraction=0.25)
    delta = torch.tensor([0.1, -4.0, 0.3, 2.0, -0.2, 0.0, 1.0, 0.05])
    update = ModelUpdate(TrainingMode.LAYER_WISE, 2, 5, {"stages.1.bias": delta})
    first = compress_update(update, config)
    assert topk_count(8, 0.25) == 2
    assert first.decoded.deltas["stages.1.bias"].tolist() == [0, -4.0, 0, 2.0, 0, 0, 0, 0]
    assert torch.equal(first.residual["stages.1.bias"], delta - first.decoded.deltas["stages.1.bias"])
    # the next round sends nothing new: what was left (1.0, then 0.3) arrives, in order of size
    silent = ModelUpdate(TrainingMode.LAYER_WISE, 2, 5, {"stages.1.bias": torch.zeros(8)})
    second = compress_update(silent, config, first.residual)
    assert second.decoded.deltas["stages.1.bias"].tolist() == pytest.approx([0, 0, 0.3, 0, 0, 0, 1.0, 0])
    sent = first.decoded.deltas["stages.1.bias"] + second.decoded.deltas["stages.1.bias"]
    assert torch.allclose(sent + second.residual["stages.1.bias"], delta)


def test_a_residual_for_other_tensors_or_shapes_is_dropped() -> None:
    config = CompressionConfig("topk", topk_fraction=1.0)
    update = an_update(2)
    stale = {"stages.0.weight": torch.ones(3, 3), "stages.1.bias": torch.ones(4)}
    compressed = compress_update(update, config, stale)
    assert all(torch.equal(compressed.decoded.deltas[name], update.deltas[name]) for name in SHAPES)


def test_the_recipe_entry_round_trips_and_only_a_real_choice_changes_the_digest() -> None:
    spec = EncoderSpec(architecture="resnet", stages=2, widths=(4, 8))
    plain = TrainingConfig(spec=spec, mode=TrainingMode.LAYER_WISE, federation_seed=1)
    assert "compression" not in plain.to_dict()
    compressed = TrainingConfig(
        spec=spec, mode=TrainingMode.LAYER_WISE, federation_seed=1, compression=CompressionConfig("int8")
    )
    assert compressed.to_dict()["compression"] == {
        "method": "int8",
        "topk_fraction": 0.01,
        "error_feedback": True,
    }
    assert TrainingConfig.from_dict(compressed.to_dict()) == compressed
    assert TrainingConfig.from_dict(plain.to_dict()) == plain
    assert compressed.digest() != plain.digest()
    legacy = TrainingConfig(
        spec=spec, mode=TrainingMode.LAYER_WISE, federation_seed=1, aggregation=LEGACY_FEDAVG
    )
    assert set(legacy.to_dict()) == set(plain.to_dict()) - {"aggregation"}


@pytest.mark.parametrize(
    "values",
    [
        {"method": "zip"},
        {"method": "topk", "topk_fraction": 0},
        {"method": "topk", "topk_fraction": 1.5},
        {"method": "topk", "topk_fraction": True},
        {"method": "topk", "error_feedback": 1},
        {"method": "int8", "bits": 4},
        "int8",
    ],
)
def test_bad_compression_settings_are_configuration_errors(values: object) -> None:
    with pytest.raises(ConfigurationError):
        CompressionConfig.from_dict(values)


def tamper(
    payload: bytes, change: dict[str, torch.Tensor | None], metadata: dict[str, str] | None = None
) -> bytes:
    tensors, original = decode_tensors(payload)
    for key, value in change.items():
        if value is None:
            tensors.pop(key)
        else:
            tensors[key] = value
    return encode_tensors(tensors, {**original, **(metadata or {})})


def malformed_payloads() -> dict[str, tuple[str, bytes]]:
    update = an_update(3)
    int8 = compress_update(update, METHODS["int8"]).payload
    topk = compress_update(update, METHODS["topk"]).payload
    fp16 = compress_update(update, METHODS["fp16"]).payload
    indices = decode_tensors(topk)[0]["stages.1.weight#indices"]
    return {
        "garbage": ("int8", b"\x00\x01not safetensors"),
        "uncompressed where int8 is due": ("int8", update.to_bytes()),
        "fp16 where int8 is due": ("int8", fp16),
        "missing scale": ("int8", tamper(int8, {"stages.1.weight#scale": None})),
        "negative scale": ("int8", tamper(int8, {"stages.1.bias#scale": torch.tensor([-1.0])})),
        "infinite scale": ("int8", tamper(int8, {"stages.1.bias#scale": torch.tensor([float("inf")])})),
        "scale of the wrong shape": ("int8", tamper(int8, {"stages.1.weight#scale": torch.ones(3)})),
        "int8 of the wrong dtype": ("int8", tamper(int8, {"stages.1.bias": torch.zeros(16)})),
        "-128": ("int8", tamper(int8, {"stages.1.bias": torch.full((16,), -128, dtype=torch.int8)})),
        "a tensor the model lacks": (
            "int8",
            tamper(int8, {"stages.9.bias": torch.zeros(2, dtype=torch.int8)}),
        ),
        "an extra entry": ("int8", tamper(int8, {"stages.1.bias#junk": torch.zeros(2)})),
        "bad metadata": ("int8", tamper(int8, {}, {"stage": "two"})),
        "fp16 of the wrong shape": (
            "fp16",
            tamper(fp16, {"stages.1.bias": torch.zeros(15, dtype=torch.float16)}),
        ),
        "index out of range": ("topk", tamper(topk, {"stages.1.weight#indices": indices + 1000})),
        "negative index": ("topk", tamper(topk, {"stages.1.weight#indices": indices - 1000})),
        "repeated index": ("topk", tamper(topk, {"stages.1.weight#indices": torch.zeros_like(indices)})),
        "descending indices": ("topk", tamper(topk, {"stages.1.weight#indices": indices.flip(0)})),
        "too many entries (dense under top-k)": (
            "topk",
            tamper(
                topk,
                {
                    "stages.1.weight#indices": torch.arange(144, dtype=torch.int32),
                    "stages.1.weight#values": torch.zeros(144),
                },
            ),
        ),
        "missing values": ("topk", tamper(topk, {"stages.1.weight#values": None})),
    }


MALFORMED = malformed_payloads()


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_compressed_updates_are_rejected_not_crashed_on(case: str) -> None:
    method, payload = MALFORMED[case]
    config = {"int8": METHODS["int8"], "topk": METHODS["topk"], "fp16": METHODS["fp16"]}[method]
    with pytest.raises(UpdateRejectedError):
        decoded = decompress_update(payload, config, reference_state())
        validate_update(decoded, reference_state(), TrainingMode.LAYER_WISE, 2, 3)


def test_non_finite_fp16_values_fail_validation() -> None:
    payload = compress_update(an_update(4), METHODS["fp16"]).payload
    bad = tamper(payload, {"stages.1.bias": torch.full((16,), float("nan"), dtype=torch.float16)})
    decoded = decompress_update(bad, METHODS["fp16"], reference_state())
    with pytest.raises(UpdateRejectedError, match="NaN"):
        validate_update(decoded, reference_state(), TrainingMode.LAYER_WISE, 2, 3)


def merged_bytes(name: str, order_seed: int | None) -> bytes:
    """Seven peers' updates compressed with method ``name``, decoded and merged, in a shuffled order."""
    config, state = METHODS[name], reference_state(5)
    payloads = [
        (f"0xpeer{index}", compress_update(an_update(10 + index, 50 + index), config).payload)
        for index in range(7)
    ]
    if order_seed is not None:
        random.Random(order_seed).shuffle(payloads)
    updates = [(label, decompress_update(payload, config, state)) for label, payload in payloads]
    merged = merge_round(state, updates, DEFAULT_AGGREGATION).state
    return b"".join(merged[key].numpy().tobytes() for key in sorted(merged))


@pytest.mark.parametrize("name", sorted(METHODS))
def test_decoded_updates_merge_bit_identically_in_any_order(name: str) -> None:
    reference = merged_bytes(name, None)
    assert all(merged_bytes(name, seed) == reference for seed in range(4))


def test_the_methods_do_change_the_merged_model() -> None:
    digests = {hashlib.sha256(merged_bytes(name, None)).hexdigest() for name in METHODS}
    assert len(digests) == len(METHODS)


def test_the_device_residual_survives_a_restart_and_a_repeated_round_gives_the_same_bytes(
    tmp_path: Path,
) -> None:
    config = CompressionConfig("topk", topk_fraction=0.1)
    first = ErrorFeedbackFile(tmp_path).compress(1, an_update(20), config)
    expected_first = compress_update(an_update(20), config)
    assert first == expected_first.payload
    assert (tmp_path / ERROR_FEEDBACK_FILE).exists()
    # a crash before the update was recorded: round 1 is compressed again, from round 1's input
    assert ErrorFeedbackFile(tmp_path).compress(1, an_update(20), config) == first
    # a fresh process (restart) in round 2 starts from what round 1 left
    second = ErrorFeedbackFile(tmp_path).compress(2, an_update(21), config)
    assert second == compress_update(an_update(21), config, expected_first.residual).payload
    assert second != compress_update(an_update(21), config).payload


def test_an_unreadable_residual_costs_only_the_residual(tmp_path: Path) -> None:
    config = CompressionConfig("topk", topk_fraction=0.1)
    (tmp_path / ERROR_FEEDBACK_FILE).write_bytes(b"half a file")
    assert (
        ErrorFeedbackFile(tmp_path).compress(3, an_update(22), config)
        == compress_update(an_update(22), config).payload
    )


def test_without_error_feedback_nothing_is_written(tmp_path: Path) -> None:
    for config in (METHODS["int8"], METHODS["topk-no-feedback"], NO_COMPRESSION):
        ErrorFeedbackFile(tmp_path).compress(1, an_update(23), config)
    assert not (tmp_path / ERROR_FEEDBACK_FILE).exists()
    assert ErrorFeedbackFile(tmp_path).compress(1, an_update(23), NO_COMPRESSION) == an_update(23).to_bytes()


@pytest.mark.slow
def test_a_federation_of_engines_agrees_on_a_model_merged_from_top_k_updates(tmp_path: Path) -> None:
    """Three peers on the embedded services: each uploads top-k payloads, keeps its residual in its state
    directory, decodes the others' and all attest the same model every round."""
    config = replace(TINY, compression=CompressionConfig("topk", topk_fraction=0.2))
    with LocalFederation(config, peers=3, rounds_per_stage=1, work_directory=tmp_path) as federation:
        results = run_to_completion(federation)
        assert sorted(results) == [0, 1, 2] and len(set(results.values())) == 1
        _, recorded = decode_model(federation.store.get(results[0]))
        assert recorded == config
        residuals = sorted(tmp_path.rglob(ERROR_FEEDBACK_FILE))
        assert len(residuals) == 3
