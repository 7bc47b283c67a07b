"""The ``ort`` training backend against ``torch``: same inputs, same result, within justified tolerances.

Both backends train from the same global state on the same images with the same seed, so they see the
same batches and the same augmented views (the ``ort`` backend runs the same SimCLRAugmentation, in torch,
with the same generators). What can still differ, and by how much:

- float32 kernels. ONNX Runtime (MLAS, Eigen) and torch (oneDNN, MKL) sum in different orders; gradients
  of the first step agree to about 1e-5 relative per tensor (measured), losses to about 1e-6.
- AdamW amplifies that. It divides each gradient element by its own running root mean square, so an
  element's step does not shrink with its gradient: a 1e-5 relative difference in a gradient is not a
  1e-5 difference in the step when the element's gradient is small against its rounding. Torch differs
  from itself as much: started from weights perturbed by 1e-6 relative (float32 rounding is 6e-8), a
  ResNet in ``prog`` mode drifted to 2e-3 in loss within 10 steps (measured); ``lw`` stayed below 3e-5.
  So the parity runs are a few steps (four), where the drift is still small. Measured there: mean losses
  within 3e-7 relative, updates (relative L2 over every trained parameter, as one vector) within 4e-5
  for ResNet and 3e-4 for ViT, ResNet running means within 7e-7. The tolerances below are 6 to 40 times
  those: loss 1e-5, update 2e-3, running mean 1e-5.
- Directions with no gradient at all. The bias of a ViT's last MLP layer before the head adds the same
  vector to every sample's features, which the head's BatchNorm subtracts again: its exact gradient is
  zero, so both backends move it by AdamW steps of pure rounding noise, up to the learning rate each.
  It is left out of the comparison (it is checked to stay within that size). The head's BatchNorm
  running mean follows that shift, so for ViT it is only checked within the same size.
- BatchNorm running variance. ONNX Runtime's kernel averages the biased batch variance (the ONNX
  specification), torch the unbiased one, which is larger by n / (n - 1) for n values per channel
  (n = 2B for the heads' BatchNorm1d). So it may differ by that factor, relatively.
- AdamW constants and rule are set to torch's (eps 1e-8, betas, decoupled weight decay before the update,
  bias correction on both moments); ONNX Runtime computes the bias corrections in float32, torch in
  float64: below 1e-7 relative.
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import torch

from agent.engine.training_step import TrainingStepFile
from agent.errors import ConfigurationError
from agent.learning.backends import TrainingBackend, onnx_runtime_platform_has_wheels, select_backend
from agent.learning.merging import merge_updates
from agent.learning.modes import TrainingMode
from agent.learning.simulation import initial_state
from agent.learning.training import TrainingConfig, train_client
from agent.learning.training_progress import (
    TrainingHooks,
    TrainingInterrupted,
    TrainingProgress,
    TrainingProgressError,
)
from agent.learning.update import validate_update
from models.spec import EncoderSpec
from tests.test_training_resume import stop_after

pytestmark = pytest.mark.skipif(
    not onnx_runtime_platform_has_wheels(),
    reason="onnxruntime-training has no wheels for this platform (x86_64 Linux, Python 3.10-3.12 only)",
)

SPECS = {
    "resnet": EncoderSpec(architecture="resnet", stages=2, widths=(8, 16), projection_dim=16),
    "vit": EncoderSpec(
        architecture="vit",
        stages=2,
        depth=2,
        embed_dim=24,
        attention_heads=2,
        patch_size=7,
        projection_dim=16,
    ),
}
BATCH = 16
STEPS = 4
LOSS_RELATIVE_TOLERANCE = 1e-5
UPDATE_RELATIVE_TOLERANCE = 2e-3
RUNNING_MEAN_TOLERANCE = 1e-5


def images(count: int = BATCH * STEPS, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (count, 1, 28, 28), generator=generator, dtype=torch.uint8)


def config_for(architecture: str, mode: TrainingMode) -> TrainingConfig:
    return TrainingConfig(spec=SPECS[architecture], mode=mode, federation_seed=7, batch_size=BATCH)


@pytest.fixture(scope="module")
def ort_backend(tmp_path_factory: pytest.TempPathFactory) -> TrainingBackend:
    """One backend (and artifact cache) for the module: each stage's graphs are exported once."""
    return select_backend("ort", cache_directory=tmp_path_factory.mktemp("ort-cache"))


def zero_gradient(architecture: str, name: str, config: TrainingConfig, stage: int) -> bool:
    """The last trained ViT block's final MLP bias: a constant shift of the features, undone by the
    head's BatchNorm, so its exact gradient is zero (see the module docstring)."""
    from agent.learning.modes import head_stage

    readout = head_stage(config.mode, stage, config.spec.stages)
    return architecture == "vit" and name.startswith(f"stages.{readout - 1}.") and name.endswith("mlp.2.bias")


def relative_difference(first: list[torch.Tensor], second: list[torch.Tensor]) -> float:
    left = torch.cat([tensor.flatten() for tensor in first])
    right = torch.cat([tensor.flatten() for tensor in second])
    return float((left - right).norm() / right.norm())


@pytest.mark.parametrize(
    ("architecture", "mode", "stage"),
    [
        ("resnet", TrainingMode.LAYER_WISE, 1),
        ("resnet", TrainingMode.LAYER_WISE, 2),
        ("vit", TrainingMode.LAYER_WISE, 1),
        ("vit", TrainingMode.LAYER_WISE, 2),
        ("resnet", TrainingMode.PROGRESSIVE, 2),
        ("vit", TrainingMode.END_TO_END, 2),
    ],
)
def test_ort_and_torch_give_the_same_losses_and_updates(
    ort_backend: TrainingBackend, architecture: str, mode: TrainingMode, stage: int
) -> None:
    config = config_for(architecture, mode)
    state = initial_state(config)
    data = images()
    reference = train_client(state, stage, data, config, seed=11)
    result = ort_backend.train(state, stage, data, config, seed=11)

    validate_update(result.update, state, mode, stage, config.spec.stages)
    assert sorted(result.update.deltas) == sorted(reference.update.deltas)
    assert result.metrics.steps == reference.metrics.steps == STEPS
    assert result.metrics.samples == reference.metrics.samples
    assert result.metrics.flops == reference.metrics.flops
    assert result.metrics.update_bytes == reference.metrics.update_bytes
    assert result.metrics.loss == pytest.approx(reference.metrics.loss, rel=LOSS_RELATIVE_TOLERANCE)

    ours, theirs = result.update.deltas, reference.update.deltas
    trained = [
        name
        for name in sorted(theirs)
        if "running_" not in name and not zero_gradient(architecture, name, config, stage)
    ]
    assert relative_difference([ours[name] for name in trained], [theirs[name] for name in trained]) < (
        UPDATE_RELATIVE_TOLERANCE
    )
    noise_bound = config.learning_rate * STEPS * 1.1
    for name in theirs:
        if zero_gradient(architecture, name, config, stage):
            assert ours[name].abs().max() <= noise_bound and theirs[name].abs().max() <= noise_bound
        elif name.endswith("running_mean"):
            tolerance = noise_bound if architecture == "vit" else RUNNING_MEAN_TOLERANCE
            assert (ours[name] - theirs[name]).abs().max() <= tolerance, name
        elif name.endswith("running_var"):
            values = 2 * BATCH  # fewest values per channel: the heads' BatchNorm1d over 2B views
            expected = state[name] + theirs[name]
            difference = (ours[name] - theirs[name]).abs() / expected
            assert difference.max() <= 1 / (values - 1) + 1e-4, name


def test_an_ort_update_merges_with_a_torch_update(ort_backend: TrainingBackend) -> None:
    config = config_for("resnet", TrainingMode.LAYER_WISE)
    state = initial_state(config)
    from_torch = train_client(state, 1, images(seed=1), config, seed=1).update
    from_ort = ort_backend.train(state, 1, images(seed=2), config, seed=2).update
    merged = merge_updates(state, [from_torch, from_ort])
    assert merged.keys() == state.keys()
    assert all(torch.isfinite(tensor).all() for tensor in merged.values())


# ------------------------------------------------------------------------------ artifacts and restarts


def test_artifacts_are_built_once_and_found_again_after_a_restart(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A second backend on the same cache directory (a restarted agent) trains without exporting."""
    from agent.learning.backends.onnx_runtime import artifacts

    config = config_for("resnet", TrainingMode.LAYER_WISE)
    state = initial_state(config)
    calls: list[int] = []
    real_exporter = artifacts.build_stage_artifacts

    def counting_exporter(*arguments: Any) -> None:
        calls.append(1)
        real_exporter(*arguments)

    monkeypatch.setattr(artifacts, "build_stage_artifacts", counting_exporter)
    backend = select_backend("ort", cache_directory=tmp_path)
    backend.prepare(config, 2)  # what a benchmark does before measuring
    first = backend.train(state, 2, images(), config, seed=3)
    select_backend("ort", cache_directory=tmp_path).train(state, 2, images(), config, seed=4)
    assert calls == [1]

    def refusing_exporter(*arguments: Any) -> None:
        raise AssertionError("exported again although nothing changed")

    monkeypatch.setattr(artifacts, "build_stage_artifacts", refusing_exporter)
    restarted = select_backend("ort", cache_directory=tmp_path).train(state, 2, images(), config, seed=3)
    assert restarted.update.to_bytes() == first.update.to_bytes()
    assert not list(tmp_path.glob(".building-*"))

    (entry,) = tmp_path.glob("stage-*")
    (entry / "manifest.json").write_text("{")  # a damaged entry is built again
    monkeypatch.setattr(artifacts, "build_stage_artifacts", counting_exporter)
    rebuilt = select_backend("ort", cache_directory=tmp_path).train(state, 2, images(), config, seed=3)
    assert calls == [1, 1] and rebuilt.update.to_bytes() == first.update.to_bytes()


def test_the_cache_key_holds_what_the_graphs_depend_on_and_nothing_else() -> None:
    from agent.learning.backends.onnx_runtime.artifacts import artifact_digest, artifact_key

    config = config_for("resnet", TrainingMode.LAYER_WISE)

    def digest(changed: TrainingConfig, stage: int = 1) -> str:
        return artifact_digest(artifact_key(changed, stage))

    same = [
        replace(config, learning_rate=0.5),
        replace(config, federation_seed=99),
        replace(config, batch_size=64),
        replace(config, local_epochs=3),
        replace(config, minimum_crop_scale=0.5),
    ]
    assert {digest(changed) for changed in same} == {digest(config)}
    different = [
        replace(config, temperature=0.1),
        replace(config, weight_decay=0.0),
        replace(config, spec=replace(config.spec, widths=(8, 32))),
    ]
    assert len({digest(changed) for changed in [config, *different]}) == 4
    assert digest(config, 1) != digest(config, 2)
    end_to_end = config_for("resnet", TrainingMode.END_TO_END)
    assert digest(end_to_end, 1) == digest(end_to_end, 2)  # e2e trains the same graph at every stage


def test_the_optimizer_graph_is_torch_adamw_with_torch_constants(ort_backend: TrainingBackend) -> None:
    import onnx

    from agent.learning.backends.onnx_runtime.artifacts import ADAMW_BETAS, ADAMW_EPSILON, ArtifactCache

    defaults = torch.optim.AdamW([torch.zeros(1, requires_grad=True)]).defaults
    assert (defaults["betas"], defaults["eps"]) == (ADAMW_BETAS, ADAMW_EPSILON)  # what train_client uses
    config = replace(config_for("resnet", TrainingMode.LAYER_WISE), weight_decay=0.25)
    cache = ort_backend.cache  # type: ignore[attr-defined]
    assert isinstance(cache, ArtifactCache)
    graph = onnx.load(str(cache.artifacts(config, 1).optimizer_model)).graph
    (node,) = [node for node in graph.node if node.op_type == "AdamWOptimizer"]
    attributes = {attribute.name: onnx.helper.get_attribute_value(attribute) for attribute in node.attribute}
    assert attributes["adam_mode"] == 0 and attributes["correct_bias"] == 1
    assert attributes["epsilon"] == pytest.approx(1e-8, rel=1e-6)
    assert attributes["weight_decay"] == pytest.approx(0.25)
    assert (attributes["alpha"], attributes["beta"]) == pytest.approx(ADAMW_BETAS)


# ------------------------------------------------------------------------------ stopping and resuming


@pytest.mark.parametrize("steps", [1, 3, 5])
def test_resuming_ort_training_gives_the_uninterrupted_update_bytes(
    ort_backend: TrainingBackend, steps: int
) -> None:
    config = replace(config_for("vit", TrainingMode.LAYER_WISE), local_epochs=2)  # 8 steps
    state = initial_state(config)
    uninterrupted = ort_backend.train(state, 2, images(), config, seed=5, hooks=TrainingHooks())
    with pytest.raises(TrainingInterrupted) as stopped:
        ort_backend.train(state, 2, images(), config, seed=5, hooks=stop_after(steps))
    progress = TrainingProgress.from_bytes(stopped.value.progress.to_bytes())
    assert progress.steps_done == steps
    resumed = ort_backend.train(state, 2, images(), config, seed=5, hooks=TrainingHooks(resume_from=progress))
    assert resumed.update.to_bytes() == uninterrupted.update.to_bytes()
    assert resumed.metrics.loss == uninterrupted.metrics.loss
    assert resumed.metrics.flops == uninterrupted.metrics.flops


def test_progress_of_the_other_backend_is_refused(ort_backend: TrainingBackend) -> None:
    """A device switched from torch to ort between a stop and a restart retrains that round."""
    config = config_for("resnet", TrainingMode.LAYER_WISE)
    state = initial_state(config)
    with pytest.raises(TrainingInterrupted) as stopped:
        train_client(state, 1, images(), config, seed=5, hooks=stop_after(2))
    with pytest.raises(TrainingProgressError):
        ort_backend.train(
            state, 1, images(), config, seed=5, hooks=TrainingHooks(resume_from=stopped.value.progress)
        )
    with pytest.raises(TrainingInterrupted) as stopped_ort:
        ort_backend.train(state, 1, images(), config, seed=5, hooks=stop_after(2))
    with pytest.raises(TrainingProgressError):
        train_client(
            state, 1, images(), config, seed=5, hooks=TrainingHooks(resume_from=stopped_ort.value.progress)
        )


def test_the_engine_resumes_ort_training_and_survives_a_backend_switch(
    ort_backend: TrainingBackend, tmp_path: Path
) -> None:
    from agent.engine.training_step import ResumableTraining

    config = replace(config_for("resnet", TrainingMode.LAYER_WISE), local_epochs=2)
    state = initial_state(config)
    expected = ort_backend.train(state, 1, images(), config, seed=9).update.to_bytes()
    stops = iter([False, False, True])
    torch_training = ResumableTraining(tmp_path)  # the device ran torch, stopped after 3 steps ...
    assert torch_training.train(1, "base", state, 1, images(), config, 9, lambda: next(stops)) is None
    ort_training = ResumableTraining(tmp_path, backend=ort_backend)  # ... and restarted on ort
    stops = iter([False, True])
    assert ort_training.train(1, "base", state, 1, images(), config, 9, lambda: next(stops)) is None
    assert TrainingStepFile(tmp_path).load(1, "base") is not None
    finished = ort_training.train(1, "base", state, 1, images(), config, 9, lambda: False)
    assert finished is not None and finished.update.to_bytes() == expected


# ------------------------------------------------------------------------------ inputs


def test_batches_of_any_size_train_and_a_single_leftover_image_is_skipped(
    ort_backend: TrainingBackend,
) -> None:
    config = config_for("vit", TrainingMode.LAYER_WISE)
    state = initial_state(config)
    data = images(count=BATCH + 5 + 1)  # 16, then 6 (5 + 1)
    assert ort_backend.train(state, 1, data, config, seed=1).metrics.steps == 2
    odd = images(count=2 * BATCH + 1)  # 16, 16, then one image: no contrastive pair, skipped
    result = ort_backend.train(state, 1, odd, config, seed=1)
    assert result.metrics.steps == train_client(state, 1, odd, config, seed=1).metrics.steps == 2


def test_ort_refuses_what_torch_refuses(ort_backend: TrainingBackend) -> None:
    config = config_for("resnet", TrainingMode.LAYER_WISE)
    state = initial_state(config)
    with pytest.raises(ConfigurationError, match="uint8"):
        ort_backend.train(state, 1, images().float(), config, seed=0)
    with pytest.raises(ConfigurationError, match="at least 2 images"):
        ort_backend.train(state, 1, images(count=1), config, seed=0)
    with pytest.raises(ConfigurationError, match="outside"):
        ort_backend.train(state, 3, images(), config, seed=0)


@pytest.mark.slow
def test_the_demo_federation_agrees_on_every_model_with_ort(tmp_path: Path) -> None:
    """``layerfed demo --backend ort``: three peers on ort, all ending with the same model."""
    report_file = tmp_path / "demo.json"
    command = ["demo", "--preset", "smoke", "--peers", "3", "--backend", "ort", "--json", str(report_file)]
    completed = subprocess.run(
        [sys.executable, "-m", "agent.cli", *command],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=Path(__file__).resolve().parent.parent,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert "all peers ended with the same model: yes" in completed.stdout
    assert "[I:onnxruntime" not in completed.stderr  # the exporter's native INFO lines are filtered
    report = json.loads(report_file.read_text())
    assert report["backend"] == "ort" and len({peer["final_model_cid"] for peer in report["peers"]}) == 1


@pytest.mark.parametrize("architecture", ["resnet", "vit"])
def test_the_frozen_prefix_runs_in_chunks_and_matches_torch(architecture: str, tmp_path: Path) -> None:
    """A batch larger than a chunk (and not a multiple of it) gives torch's frozen features, and the
    same values as running the whole batch at once: chunking changes memory, not results."""
    from agent.learning.backends.onnx_runtime.artifacts import ArtifactCache
    from agent.learning.backends.onnx_runtime.backend import PREFIX_CHUNK_VIEWS, _FrozenPrefixSession
    from agent.learning.model_state import load_state
    from models.staged_model import StagedModel

    assert set(PREFIX_CHUNK_VIEWS) == {"resnet", "vit"}
    config = config_for(architecture, TrainingMode.LAYER_WISE)
    state = initial_state(config)
    artifacts = ArtifactCache(tmp_path).artifacts(config, 2)
    chunk = 16
    views = (images(2 * chunk + 5, seed=3).to(torch.float32) / 255).numpy()
    chunked = torch.from_numpy(_FrozenPrefixSession(artifacts, state, chunk).run(views))
    whole = torch.from_numpy(_FrozenPrefixSession(artifacts, state, None).run(views))
    assert chunked.shape[0] == len(views)
    assert torch.allclose(chunked, whole, rtol=1e-5, atol=1e-6)
    model = StagedModel(config.spec, config.federation_seed).eval()
    load_state(model, state)
    with torch.no_grad():
        expected = model.hidden(torch.from_numpy(views), 1)
    assert torch.allclose(chunked, expected, rtol=1e-4, atol=1e-5)
