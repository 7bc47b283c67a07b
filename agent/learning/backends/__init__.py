"""Training backends: interchangeable engines for one client's local training, chosen per device.

A backend turns (global state, stage, uint8 images, :class:`TrainingConfig`, seed) into a
:class:`ClientResult`: the deltas of exactly the tensors the mode exchanges, and the round's metrics. Merge,
protocol and benchmark only ever see that result, so they cannot tell backends apart, and peers running
different backends take part in the same federation. The backend is therefore a device setting (like the
thread count), never part of the recipe: :meth:`TrainingConfig.digest` does not include it.

- ``torch`` (the default): :func:`agent.learning.training.train_client`, on every platform torch runs on.
- ``ort``: ONNX Runtime's on-device training (``onnxruntime-training``), installed with the optional extra
  ``layerfed[ort]``; wheels exist for x86_64 Linux with Python 3.10-3.12 only, and upstream has deprecated
  the package (1.19.2 was its last release). Everything that touches it lives in
  :mod:`agent.learning.backends.onnx_runtime`.

This module imports neither torch nor onnxruntime, so configuration checks can ask what is available
without loading either.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import platform
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from agent.errors import BackendUnavailableError, ConfigurationError

if TYPE_CHECKING:
    import torch

    from agent.learning.training import ClientResult, TrainingConfig
    from agent.learning.training_progress import TrainingHooks

TORCH_BACKEND = "torch"
ONNX_RUNTIME_BACKEND = "ort"
BACKEND_NAMES: tuple[str, ...] = (TORCH_BACKEND, ONNX_RUNTIME_BACKEND)
DEFAULT_BACKEND = TORCH_BACKEND
ONNX_RUNTIME_EXTRA = "layerfed[ort]"
ONNX_RUNTIME_PLATFORMS = "x86_64 Linux with Python 3.10, 3.11 or 3.12"
# onnx 1.17 is the newest whose generated training graphs onnxruntime 1.19 loads (newer ones write an
# IR version it rejects); the extra pins it.
ONNX_SERIES = "1.17."


class TrainingBackend(Protocol):
    """One client's local training of one stage; see :func:`agent.learning.training.train_client`."""

    @property
    def name(self) -> str:
        """The name it is selected by (``[agent] backend``, ``--backend``)."""
        ...

    # Deliberate repetition: the TrainingBackend.train signature, repeated by every backend.
    def train(
        self,
        global_state: Mapping[str, torch.Tensor],
        stage: int,
        images: torch.Tensor,
        config: TrainingConfig,
        seed: int,
        *,
        hooks: TrainingHooks | None = None,
    ) -> ClientResult:
        """Train ``stage`` from ``global_state`` on ``images`` (uint8 [N, C, H, W]); return the update.

        ``hooks`` may stop training between optimizer steps and resume it later (see
        :mod:`agent.learning.training_progress`); progress of another backend or run raises
        :class:`agent.learning.training_progress.TrainingProgressError`.
        """
        ...

    def prepare(self, config: TrainingConfig, stage: int) -> None:
        """Build now whatever training ``stage`` needs built once (``ort``: export its graphs).

        Training builds it anyway on first use; a benchmark calls this first so that building is not
        counted in a client's time or memory.
        """
        ...


def onnx_runtime_platform_has_wheels() -> bool:
    """Whether ``onnxruntime-training-cpu`` 1.19.2 publishes a wheel for this machine and Python."""
    return (
        sys.platform.startswith("linux")
        and platform.machine() in ("x86_64", "AMD64")
        and (3, 10) <= sys.version_info[:2] <= (3, 12)
    )


def unavailable_reason(name: str) -> str | None:
    """Why backend ``name`` cannot run here, or None when it can; found without importing it.

    Raises ConfigurationError for a name that is not a backend at all.
    """
    if name not in BACKEND_NAMES:
        choices = " or ".join(f'"{backend}"' for backend in BACKEND_NAMES)
        raise ConfigurationError(f"unknown training backend {name!r}; choose {choices}")
    if name == TORCH_BACKEND:
        return None
    runtime = importlib.util.find_spec("onnxruntime")
    if runtime is None or importlib.util.find_spec("onnx") is None:
        problem = "onnxruntime-training is not installed"
    elif not any((Path(folder) / "training").is_dir() for folder in runtime.submodule_search_locations or ()):
        problem = (
            "plain onnxruntime is installed, without its training part (uninstall it first: it and "
            "onnxruntime-training-cpu install into the same folder)"
        )
    elif not importlib.metadata.version("onnx").startswith(ONNX_SERIES):
        problem = (
            f"onnx {importlib.metadata.version('onnx')} is installed, but onnxruntime-training 1.19 needs "
            f"onnx {ONNX_SERIES}x (newer onnx writes graphs it rejects)"
        )
    else:
        return None
    where = f"{platform.machine()} {sys.platform}, Python {sys.version_info[0]}.{sys.version_info[1]}"
    return (
        f'the "{ONNX_RUNTIME_BACKEND}" training backend is not available here: {problem}. Install it with '
        f'pip install "{ONNX_RUNTIME_EXTRA}"; its wheels exist for {ONNX_RUNTIME_PLATFORMS} only (not for '
        f"aarch64 such as Raspberry Pi or Jetson, nor for Python 3.13+; this machine: {where}), and upstream "
        f'has deprecated it. Use backend "{TORCH_BACKEND}" elsewhere.'
    )


def select_backend(name: str, *, cache_directory: Path | None = None) -> TrainingBackend:
    """The backend called ``name``.

    ``cache_directory`` is where a backend that compiles the model (``ort``) keeps what it built, so that
    it is built once per stage and survives restarts; without one it uses a temporary directory.
    Raises BackendUnavailableError (exit code 69) when the backend's packages are not installed here.
    """
    reason = unavailable_reason(name)
    if reason is not None:
        raise BackendUnavailableError(reason)
    if name == TORCH_BACKEND:
        from agent.learning.backends.torch_backend import TorchBackend

        return TorchBackend()
    from agent.learning.backends.onnx_runtime import OnnxRuntimeBackend

    return OnnxRuntimeBackend(cache_directory)
