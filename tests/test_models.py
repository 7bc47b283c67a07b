"""Staged encoders: shapes, deterministic per-stage initialisation, spec validation, augmentation."""

from __future__ import annotations

import pytest
import torch

from models.augmentation import SimCLRAugmentation
from models.spec import EncoderSpec, ModelSpecError
from models.staged_model import StagedModel, head_prefix, stage_prefix

RESNET = EncoderSpec(architecture="resnet", stages=3, widths=(8, 16, 24), image_size=16)
VIT = EncoderSpec(architecture="vit", stages=2, depth=4, embed_dim=32, attention_heads=4, image_size=16)


def tensors_under(model: StagedModel, prefix: str) -> dict[str, torch.Tensor]:
    return {name: tensor for name, tensor in model.state_dict().items() if name.startswith(prefix)}


@pytest.mark.parametrize("spec", [RESNET, VIT], ids=["resnet", "vit"])
def test_features_and_projections_have_the_declared_widths(spec: EncoderSpec) -> None:
    model = StagedModel(spec, federation_seed=3).eval()
    batch = torch.randn(5, 1, 16, 16)
    for stage in range(1, spec.stages + 1):
        features = model.features(batch, stage)
        assert features.shape == (5, spec.feature_dim(stage))
        assert model.project(features, stage).shape == (5, spec.projection_dim)


@pytest.mark.parametrize("spec", [RESNET, VIT], ids=["resnet", "vit"])
def test_same_seed_same_weights_other_seed_other_weights(spec: EncoderSpec) -> None:
    first, second, other = StagedModel(spec, 3), StagedModel(spec, 3), StagedModel(spec, 4)
    for name, tensor in first.state_dict().items():
        assert torch.equal(tensor, second.state_dict()[name])
    assert not torch.equal(
        first.state_dict()["heads.0.layers.0.weight"], other.state_dict()["heads.0.layers.0.weight"]
    )


def test_a_stage_depends_only_on_the_seed_and_its_own_index() -> None:
    # A deeper model (one more stage) must not change the weights of the stages both have.
    shallow = StagedModel(EncoderSpec(architecture="resnet", stages=2, widths=(8, 16), image_size=16), 3)
    deep = StagedModel(RESNET, 3)
    for prefix in (stage_prefix(1), stage_prefix(2), head_prefix(1), head_prefix(2)):
        shallow_tensors, deep_tensors = tensors_under(shallow, prefix), tensors_under(deep, prefix)
        assert shallow_tensors.keys() == deep_tensors.keys()
        assert all(torch.equal(shallow_tensors[name], deep_tensors[name]) for name in shallow_tensors)


def test_vit_stages_cost_the_same() -> None:
    model = StagedModel(
        EncoderSpec(architecture="vit", stages=3, depth=6, embed_dim=32, attention_heads=2), 0
    )
    counts = [
        sum(
            p.numel()
            for n, p in model.named_parameters()
            if n.startswith(stage_prefix(s)) and "patch" not in n
        )
        for s in (1, 2, 3)
    ]
    assert counts[0] == counts[1] == counts[2]


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"architecture": "mlp"}, "architecture"),
        ({"stages": 0}, "stages"),
        ({"stages": 3, "widths": (8, 16)}, "one width per stage"),
        ({"architecture": "vit", "stages": 4, "depth": 6}, "divisible into 4 stages"),
        (
            {"architecture": "vit", "stages": 2, "depth": 4, "embed_dim": 30, "attention_heads": 4},
            "attention_heads",
        ),
        ({"architecture": "vit", "stages": 2, "depth": 4, "patch_size": 5}, "patch_size"),
        ({"image_channels": 2}, "image_channels"),
    ],
)
def test_bad_specs_are_refused(values: dict[str, object], message: str) -> None:
    with pytest.raises(ModelSpecError, match=message):
        EncoderSpec(**values)  # type: ignore[arg-type]


def test_spec_round_trips_through_a_dict_and_its_digest_is_stable() -> None:
    assert EncoderSpec.from_dict(VIT.to_dict()) == VIT
    assert VIT.digest() == EncoderSpec.from_dict(VIT.to_dict()).digest() != RESNET.digest()
    with pytest.raises(ModelSpecError, match="unknown model spec keys: colour"):
        EncoderSpec.from_dict({"colour": "red"})


@pytest.mark.parametrize("channels", [1, 3])
def test_augmentation_makes_two_different_normalised_views(channels: int) -> None:
    augment = SimCLRAugmentation(channels, 16)
    images = torch.randint(
        0, 256, (6, channels, 16, 16), generator=torch.Generator().manual_seed(0), dtype=torch.uint8
    )
    torch.manual_seed(1)
    first, second = augment(images), augment(images)
    assert first.shape == second.shape == (6, channels, 16, 16)
    assert first.dtype == torch.float32
    assert not torch.equal(first, second)
    assert float(first.min()) >= -2.0 - 1e-6 and float(first.max()) <= 2.0 + 1e-6
    torch.manual_seed(1)
    assert torch.equal(augment(images), first), "the same seed must give the same view"
