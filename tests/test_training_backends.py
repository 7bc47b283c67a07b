"""Choosing a training backend: by name, in the agent's configuration and on the command line.

Selecting ``ort`` where onnxruntime-training cannot be installed must fail with exit code 69 and say
which extra to install and where wheels exist; the backend never enters the training recipe. These tests
need no onnxruntime: its absence is simulated. Parity with torch is in ``test_ort_backend.py``.
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Mapping
from dataclasses import fields
from importlib.machinery import ModuleSpec
from pathlib import Path

import pytest
import torch

from agent.cli import main
from agent.commands.agent_config import load_agent_config
from agent.errors import BackendUnavailableError, ConfigurationError
from agent.learning import backends
from agent.learning.backends import BACKEND_NAMES, TrainingBackend, select_backend, unavailable_reason
from agent.learning.backends.torch_backend import TorchBackend
from agent.learning.modes import TrainingMode
from agent.learning.simulation import Schedule, initial_state, simulate
from agent.learning.training import ClientResult, TrainingConfig, train_client
from agent.learning.training_progress import TrainingHooks
from models.spec import EncoderSpec

CONFIG = TrainingConfig(
    spec=EncoderSpec(architecture="resnet", stages=2, widths=(8, 16), image_size=16, projection_dim=8),
    mode=TrainingMode.LAYER_WISE,
    federation_seed=2,
    batch_size=8,
)
CONTRACT = "0x" + "ab" * 20


def images(count: int = 24) -> torch.Tensor:
    generator = torch.Generator().manual_seed(0)
    return torch.randint(0, 256, (count, 1, 16, 16), generator=generator, dtype=torch.uint8)


@pytest.fixture
def without_onnxruntime(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make onnxruntime look uninstalled, as on a Raspberry Pi."""
    real_find_spec = importlib.util.find_spec

    def find_spec(name: str, package: str | None = None) -> ModuleSpec | None:
        if name.split(".")[0] == "onnxruntime":
            return None
        return real_find_spec(name, package)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    for name in [name for name in sys.modules if name.startswith("agent.learning.backends.onnx_runtime")]:
        monkeypatch.delitem(sys.modules, name)


def test_torch_is_the_default_and_is_train_client() -> None:
    backend = select_backend("torch")
    assert isinstance(backend, TorchBackend) and backend.name == "torch" == backends.DEFAULT_BACKEND
    state = initial_state(CONFIG)
    backend.prepare(CONFIG, 1)  # nothing to build
    ours = backend.train(state, 1, images(), CONFIG, seed=4)
    assert ours.update.to_bytes() == train_client(state, 1, images(), CONFIG, seed=4).update.to_bytes()


def test_an_unknown_backend_is_a_configuration_mistake() -> None:
    with pytest.raises(ConfigurationError, match="unknown training backend 'tensorflow'"):
        select_backend("tensorflow")


@pytest.mark.usefixtures("without_onnxruntime")
def test_ort_where_it_is_missing_names_the_extra_and_the_platforms() -> None:
    with pytest.raises(BackendUnavailableError) as raised:
        select_backend("ort")
    message = str(raised.value)
    assert raised.value.exit_code == 69
    for expected in (
        'pip install "layerfed[ort]"',
        "x86_64 Linux",
        "Python 3.10, 3.11 or 3.12",
        "deprecated",
    ):
        assert expected in message
    assert "Raspberry Pi" in message and 'backend "torch"' in message
    with pytest.raises(
        BackendUnavailableError
    ):  # importing the backend's package directly fails the same way
        import agent.learning.backends.onnx_runtime  # noqa: F401
    assert unavailable_reason("torch") is None


def test_the_backend_is_a_device_setting_not_part_of_the_recipe() -> None:
    assert "backend" not in {field.name for field in fields(TrainingConfig)}
    assert set(BACKEND_NAMES) == {"torch", "ort"}


def test_simulate_trains_every_client_with_the_given_backend() -> None:
    class CountingBackend:
        name = "counting"

        def __init__(self) -> None:
            self.calls = 0

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
            self.calls += 1
            return train_client(global_state, stage, images, config, seed, hooks=hooks)

        def prepare(self, config: TrainingConfig, stage: int) -> None:
            pass

    counting = CountingBackend()
    backend: TrainingBackend = counting
    records = list(simulate(CONFIG, Schedule(2, 1), [images(), images()], backend=backend))
    assert counting.calls == 4 and len(records) == 2


def write_config(directory: Path, agent_lines: str) -> Path:
    path = directory / "agent.toml"
    path.write_text(
        f'[federation]\ncontract = "{CONTRACT}"\nchain_url = "http://127.0.0.1:1"\n\n[agent]\n'
        f'key_file = "{directory / "key"}"\nstate_directory = "{directory / "state"}"\n{agent_lines}\n'
    )
    return path


def test_the_configuration_takes_a_backend_and_where_it_keeps_its_builds(tmp_path: Path) -> None:
    default = load_agent_config(write_config(tmp_path, ""))
    assert default.agent.backend == "torch"
    assert default.backend_cache_directory == tmp_path / "state" / "backend-cache"
    chosen = load_agent_config(write_config(tmp_path, f'backend_cache_directory = "{tmp_path / "cache"}"'))
    assert chosen.backend_cache_directory == tmp_path / "cache"
    if unavailable_reason("ort") is None:
        assert load_agent_config(write_config(tmp_path, 'backend = "ort"')).agent.backend == "ort"


@pytest.mark.usefixtures("without_onnxruntime")
def test_an_agent_configured_for_ort_where_it_is_missing_exits_69_naming_the_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(tmp_path, 'backend = "ort"')
    assert main(["agent", "run", "--config", str(config)]) == 69
    error = capsys.readouterr().err
    assert 'agent.backend "ort"' in error and str(config) in error and "layerfed[ort]" in error


@pytest.mark.usefixtures("without_onnxruntime")
def test_the_demo_refuses_ort_where_it_is_missing(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--preset", "smoke", "--peers", "2", "--backend", "ort"]) == 69
    assert "layerfed[ort]" in capsys.readouterr().err
