"""Training artifacts per stage: export to ONNX, generate ONNX Runtime's training graphs, cache them.

For a (model spec, mode, stage, loss and optimizer settings) the ``ort`` backend needs three files that
``onnxruntime.training.artifacts.generate_artifacts`` derives from an exported ONNX model (training graph
with gradients, optimizer graph, initial checkpoint) plus, in ``lw`` from stage 2 on, the frozen prefix as
an inference model. Exporting takes seconds, so the files are built once and kept in a cache directory
under a content hash of everything they depend on (:func:`artifact_key`): the spec, which stages are
frozen, trained and read out, the temperature, the optimizer constants, and the versions of torch, onnx,
onnxruntime and this format. The learning rate is not in it (it is set at run time) and neither are the
weights: every round loads the global state into a fresh checkpoint state. So a stage is exported once,
``e2e`` once for all its stages, and a restarted agent finds its artifacts again without exporting.

A cache entry is built in a temporary directory and renamed into place, and ``manifest.json`` is written
last, so a crash mid-export leaves no entry that looks complete.

Workarounds that these versions need, all here:

- the legacy TorchScript exporter (``dynamo=False``) in training mode with constant folding off, from a
  deep copy (tracing updates BatchNorm running statistics); it warns that it is deprecated, so the export
  runs with warnings silenced;
- the copy's floating-point tensors are nudged by distinct tiny amounts before export, because the
  exporter merges initializers of equal value when not training (freshly initialised zero biases and unit
  LayerNorm weights would lose their names); names are then checked one by one against the model;
- ``generate_artifacts`` always builds the AdamW optimizer graph in Hugging Face mode (``adam_mode=1``:
  bias correction folded into the learning rate, weight decay after the update, eps 1e-6, weight decay 0);
  the graph is rewritten to PyTorch's mode (``adam_mode=0``) with torch's betas and eps and the recipe's
  weight decay, which is exactly the update ``torch.optim.AdamW`` makes;
- LayerNormalization nodes get their two optional outputs named, which the gradient builder needs;
- the generated eval model is deleted: it is never used (evaluation runs in torch on merged models), and
  it would need its BatchNormalization nodes trimmed to one output to load at all.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import importlib.metadata
import json
import os
import shutil
import sys
import tempfile
import threading
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import onnx
import onnxruntime
import torch
from onnxruntime.training import artifacts as training_artifacts
from onnxruntime.training import onnxblock

from agent.errors import LayerfedError
from agent.learning.backends.onnx_runtime.graphs import (
    LOSS_OUTPUT,
    PREFIX_INPUT,
    PREFIX_OUTPUT,
    TRAINING_INPUTS,
    FrozenPrefix,
    StagePlan,
    TrainedObjective,
    contrastive_masks,
)
from agent.learning.training import TrainingConfig
from models.spec import EncoderSpec
from models.staged_model import StagedModel, head_prefix, stage_prefix

ARTIFACT_FORMAT = 1
OPSET_VERSION = 17
# torch.optim.AdamW's defaults, which train_client relies on (a test checks that they still are).
ADAMW_BETAS = (0.9, 0.999)
ADAMW_EPSILON = 1e-8
PYTORCH_ADAMW_MODE = 0  # ONNX Runtime's AdamWOptimizer attribute: 0 is torch's AdamW, 1 Hugging Face's

TRAINING_MODEL = "training_model.onnx"
OPTIMIZER_MODEL = "optimizer_model.onnx"
CHECKPOINT = "checkpoint"
EVAL_MODEL = "eval_model.onnx"
PREFIX_MODEL = "prefix_model.onnx"
MANIFEST = "manifest.json"
TRACE_IMAGES = 2  # the traced batch; every axis that depends on it is exported as dynamic
NUDGE = 1e-4


@dataclass(frozen=True)
class StageArtifacts:
    """One cache entry: where its files are and which global-state tensors each graph holds."""

    directory: Path
    plan: StagePlan
    trained_names: tuple[str, ...]  # initializers of the training graph: trained parameters, BN statistics
    prefix_names: tuple[str, ...]  # initializers of the frozen-prefix model (empty without one)

    @property
    def training_model(self) -> Path:
        return self.directory / TRAINING_MODEL

    @property
    def optimizer_model(self) -> Path:
        return self.directory / OPTIMIZER_MODEL

    @property
    def checkpoint(self) -> Path:
        return self.directory / CHECKPOINT

    @property
    def prefix_model(self) -> Path | None:
        return self.directory / PREFIX_MODEL if self.prefix_names else None


def artifact_key(config: TrainingConfig, stage: int) -> dict[str, Any]:
    """Everything the artifacts of ``stage`` depend on; equal keys give interchangeable artifacts."""
    plan = StagePlan.of(config.mode, stage, config.spec.stages)
    return {
        "format": ARTIFACT_FORMAT,
        "spec": config.spec.to_dict(),
        "frozen_stages": plan.frozen_stages,
        "first_trained": plan.first_trained,
        "readout_stage": plan.readout_stage,
        "temperature": config.temperature,
        "optimizer": {
            "name": "AdamW",
            "mode": PYTORCH_ADAMW_MODE,
            "betas": list(ADAMW_BETAS),
            "eps": ADAMW_EPSILON,
            "weight_decay": config.weight_decay,
        },
        "versions": backend_versions(),
    }


def backend_versions() -> dict[str, str]:
    return {
        "torch": str(torch.__version__),
        "onnx": importlib.metadata.version("onnx"),
        "onnxruntime": str(onnxruntime.__version__),
    }


def artifact_digest(key: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(key, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


_build_locks: dict[Path, threading.Lock] = {}
_build_locks_guard = threading.Lock()


def _build_lock(path: Path) -> threading.Lock:
    """One lock per cache entry, so peers in threads of one process (the demo) export it once."""
    with _build_locks_guard:
        return _build_locks.setdefault(path, threading.Lock())


class ArtifactCache:
    """Artifacts by content hash in ``directory``; built on first use, found again after a restart."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def artifacts(self, config: TrainingConfig, stage: int) -> StageArtifacts:
        key = artifact_key(config, stage)
        entry = self.directory / f"stage-{artifact_digest(key)[:32]}"
        with _build_lock(entry):
            found = _read_manifest(entry)
            if found is not None:
                return found
            if entry.exists():  # entries appear complete (renamed into place), so this one was damaged
                shutil.rmtree(entry, ignore_errors=True)
            self.directory.mkdir(parents=True, exist_ok=True)
            building = Path(tempfile.mkdtemp(dir=self.directory, prefix=".building-"))
            try:
                build_stage_artifacts(config, stage, key, building)
                try:
                    os.replace(building, entry)
                except OSError:  # another process finished the same entry first: use theirs
                    shutil.rmtree(building, ignore_errors=True)
            except BaseException:
                shutil.rmtree(building, ignore_errors=True)
                raise
        built = _read_manifest(entry)
        if built is None:
            raise LayerfedError(f"training artifacts in {entry} are incomplete after building them")
        return built


def _read_manifest(entry: Path) -> StageArtifacts | None:
    try:
        manifest = json.loads((entry / MANIFEST).read_text())
        return StageArtifacts(
            directory=entry,
            plan=StagePlan(manifest["first_trained"], manifest["readout_stage"]),
            trained_names=tuple(manifest["trained_names"]),
            prefix_names=tuple(manifest["prefix_names"]),
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None


def build_stage_artifacts(config: TrainingConfig, stage: int, key: dict[str, Any], directory: Path) -> None:
    """Export the stage's graphs into ``directory`` and write its manifest last. This is the exporter."""
    plan = StagePlan.of(config.mode, stage, config.spec.stages)
    model = _model_for_export(config.spec)
    trace_views = torch.zeros(
        2 * TRACE_IMAGES, config.spec.image_channels, config.spec.image_size, config.spec.image_size
    )
    prefix_names: list[str] = []
    trace_inputs = trace_views
    if plan.frozen_stages:
        prefix = FrozenPrefix(copy.deepcopy(model), plan).eval()
        with torch.no_grad():
            trace_inputs = prefix(trace_views)
        prefix_names = _expected_names(
            model, tuple(stage_prefix(index) for index in range(1, plan.first_trained))
        )
        _export(prefix, (trace_views,), directory / PREFIX_MODEL, training=False)
        _check_initializers(directory / PREFIX_MODEL, prefix_names)
    trained_names = _expected_names(
        model,
        (
            *(stage_prefix(index) for index in range(plan.first_trained, plan.readout_stage + 1)),
            head_prefix(plan.readout_stage),
        ),
    )
    objective = TrainedObjective(copy.deepcopy(model), plan, config.temperature).train()
    logits_mask, positive_mask = contrastive_masks(TRACE_IMAGES)
    exported = directory / "objective.onnx"
    _export(
        objective,
        (trace_inputs, torch.from_numpy(logits_mask), torch.from_numpy(positive_mask)),
        exported,
        training=True,
    )
    _check_initializers(exported, trained_names)
    _name_layer_normalization_statistics(exported)
    parameters = {name for name, _ in objective.named_parameters()}
    with _without_native_info_lines():
        training_artifacts.generate_artifacts(
            onnx.load(str(exported)),
            requires_grad=[name for name in trained_names if name in parameters],
            frozen_params=[name for name in trained_names if name not in parameters],
            loss=None,  # the graph's output already is the NT-Xent loss
            optimizer=onnxblock.optim.AdamW(
                bias_correction=True, betas=ADAMW_BETAS, eps=ADAMW_EPSILON, weight_decay=config.weight_decay
            ),
            artifact_directory=str(directory),
        )
    exported.unlink()
    (directory / EVAL_MODEL).unlink(missing_ok=True)
    _use_pytorch_adamw(directory / OPTIMIZER_MODEL, config.weight_decay)
    manifest = {
        "key": key,
        "first_trained": plan.first_trained,
        "readout_stage": plan.readout_stage,
        "trained_names": trained_names,
        "prefix_names": prefix_names,
    }
    (directory / MANIFEST).write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")


@contextlib.contextmanager
def _without_native_info_lines() -> Iterator[None]:
    """Drop the INFO lines ONNX Runtime's gradient builder writes to file descriptor 2, keep the rest.

    Its native logger ignores ``set_default_logger_severity`` and prints a few hundred
    ``[I:onnxruntime:...]`` lines per export into the agent's journal. Whatever else reaches stderr
    meanwhile (warnings, errors, other threads) is written back once the export is done.
    """
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            kept = [
                line for line in captured.read().splitlines(keepends=True) if b"[I:onnxruntime" not in line
            ]
            if kept:
                sys.stderr.buffer.write(b"".join(kept))
                sys.stderr.flush()


def _model_for_export(spec: EncoderSpec) -> StagedModel:
    """A model of the right shape whose floating-point tensors all differ (values are never used)."""
    model = StagedModel(spec, federation_seed=0)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for tensor in model.state_dict().values():
            if tensor.is_floating_point():
                tensor.add_(torch.rand(tensor.shape, generator=generator) * NUDGE)
    return model


def _expected_names(model: StagedModel, prefixes: tuple[str, ...]) -> list[str]:
    return sorted(
        name
        for name, tensor in model.state_dict().items()
        if tensor.is_floating_point() and name.startswith(prefixes)
    )


def _export(module: torch.nn.Module, inputs: tuple[torch.Tensor, ...], path: Path, *, training: bool) -> None:
    """Legacy-exporter ONNX of ``module`` with the batch axis (views) dynamic."""
    if training:
        names = list(TRAINING_INPUTS)
        dynamic = {"inputs": {0: "views"}, "logits_mask": {0: "views", 1: "views"}}
        dynamic["positive_mask"] = {0: "views", 1: "views"}
        outputs = [LOSS_OUTPUT]
    else:
        names, outputs = [PREFIX_INPUT], [PREFIX_OUTPUT]
        dynamic = {PREFIX_INPUT: {0: "views"}, PREFIX_OUTPUT: {0: "views"}}
    mode = torch.onnx.TrainingMode.TRAINING if training else torch.onnx.TrainingMode.EVAL
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the legacy exporter is deprecated and says so, loudly
        torch.onnx.export(
            module,
            inputs,
            str(path),
            dynamo=False,
            export_params=True,
            training=mode,
            do_constant_folding=False,
            opset_version=OPSET_VERSION,
            input_names=names,
            output_names=outputs,
            dynamic_axes=dynamic,
        )


def _check_initializers(path: Path, expected: list[str]) -> None:
    """Every expected tensor is an initializer under its own name, and nothing else is."""
    found = sorted(initializer.name for initializer in onnx.load(str(path)).graph.initializer)
    if found != expected:
        missing = sorted(set(expected) - set(found))[:3]
        unexpected = sorted(set(found) - set(expected))[:3]
        raise LayerfedError(
            f"the exported {path.name} does not hold the model's tensors by name: "
            f"missing {missing}, unexpected {unexpected}"
        )


def _name_layer_normalization_statistics(path: Path) -> None:
    """Give every LayerNormalization node its optional mean and inverse-deviation outputs.

    torch exports LayerNorm at opset 17 as one LayerNormalization node with only its first output, and
    ONNX Runtime's gradient builder for it reads the other two, failing with
    ``GradientBuilderBase::O(size_t, bool) const i < node_->OutputDefs().size() was false``.
    """
    model = onnx.load(str(path))
    changed = False
    for node in model.graph.node:
        if node.op_type == "LayerNormalization" and len(node.output) == 1:
            node.output.extend([f"{node.output[0]}.mean", f"{node.output[0]}.inverse_deviation"])
            changed = True
    if changed:
        onnx.save(model, str(path))


def _use_pytorch_adamw(path: Path, weight_decay: float) -> None:
    """Rewrite the optimizer graph's AdamW node to torch's update rule and constants."""
    model = onnx.load(str(path))
    nodes = [node for node in model.graph.node if node.op_type == "AdamWOptimizer"]
    if len(nodes) != 1:
        raise LayerfedError(f"{path.name} has {len(nodes)} AdamWOptimizer nodes, expected 1")
    values = {
        "alpha": ADAMW_BETAS[0],
        "beta": ADAMW_BETAS[1],
        "epsilon": ADAMW_EPSILON,
        "weight_decay": weight_decay,
        "adam_mode": PYTORCH_ADAMW_MODE,
        "correct_bias": 1,
    }
    kept = [attribute for attribute in nodes[0].attribute if attribute.name not in values]
    del nodes[0].attribute[:]
    nodes[0].attribute.extend(kept)
    nodes[0].attribute.extend(onnx.helper.make_attribute(name, value) for name, value in values.items())
    onnx.save(model, str(path))
