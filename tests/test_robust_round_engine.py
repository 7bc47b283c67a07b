"""One attacker among five peers, on the embedded services: the recipe's rule decides what it can do.

The attacker runs the same round engine as everyone else; only its training backend differs: it trains
honestly, then scales its update (x50, or a sign flip x-10) and sends that, well-formed (right names,
shapes, dtype, finite values, an honest sample count), so every validation passes and only the merge
rule stands between it and the model. With the default robust rule every honest peer still ends with
the same finite model, and reports the attacker; with legacy FedAvg the same attack goes unreported and
drags the model away.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
import torch

from agent.commands.local_federation import LocalFederation
from agent.engine.round_engine import RoundEngine
from agent.learning.aggregation.config import DEFAULT_AGGREGATION, AggregationConfig
from agent.learning.backends.torch_backend import TorchBackend
from agent.learning.model_file import decode_model
from agent.learning.model_state import ModelState
from agent.learning.simulation import initial_state
from agent.learning.training import ClientResult, TrainingConfig
from agent.learning.training_progress import TrainingHooks
from agent.learning.update import ModelUpdate
from models.spec import EncoderSpec
from tests.test_round_engine import TINY, shard

PEERS = 5
ATTACKER = PEERS - 1
ROUNDS = 2
# two stages, one round each: the smallest federation that merges on top of a merged model
SMALL = replace(TINY, spec=EncoderSpec(architecture="resnet", stages=ROUNDS, widths=(4, 8), projection_dim=8))

pytestmark = pytest.mark.slow


class ScalingAttacker(TorchBackend):
    """Trains honestly, then sends ``factor`` times its honest update."""

    def __init__(self, factor: float) -> None:
        self.factor = factor

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
        honest = super().train(global_state, stage, images, config, seed, hooks=hooks)
        deltas = {name: delta * self.factor for name, delta in honest.update.deltas.items()}
        return replace(honest, update=replace(honest.update, deltas=deltas))


@dataclass(frozen=True)
class AttackedRun:
    honest_cids: list[str]
    final: ModelState
    honest_engines: list[RoundEngine]
    attacker_address: str


def run_attacked_federation(tmp_path: Path, aggregation: AggregationConfig, factor: float) -> AttackedRun:
    config = replace(SMALL, aggregation=aggregation)
    with LocalFederation(config, peers=PEERS, rounds_per_stage=1, work_directory=tmp_path) as federation:
        engines = [
            federation.engine(
                index, shard(index), backend=ScalingAttacker(factor) if index == ATTACKER else None
            )
            for index in range(PEERS)
        ]
        results = federation.run_to_completion(engines, timeout_seconds=180)
        assert len(results) == PEERS, "a peer did not finish in time"
        honest = sorted(index for index in results if index != ATTACKER)
        assert honest == list(range(ATTACKER)), f"honest peers that finished: {honest}"
        cids = [results[index] for index in honest]
        state, decoded_config = decode_model(federation.store.get(cids[0]))
        assert decoded_config == config
        return AttackedRun(cids, state, engines[:ATTACKER], federation.accounts[ATTACKER].address)


def displacement(state: ModelState) -> float:
    """L2 distance of the encoder from the genesis model: how far the rounds moved it."""
    genesis = initial_state(SMALL)
    return math.sqrt(
        sum(
            float(((state[name].double() - genesis[name].double()) ** 2).sum())
            for name in state
            if name.startswith("stages.") and state[name].is_floating_point()
        )
    )


@pytest.fixture(scope="module")
def robust_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[AttackedRun, list[str]]]:
    """The x50 attack against the default rule, with the engine's log messages (shared: a run costs)."""
    handler = RecordingHandler()
    engine_logger = logging.getLogger("agent.engine.round_engine")
    previous_level = engine_logger.level
    engine_logger.setLevel(logging.INFO)
    engine_logger.addHandler(handler)
    try:
        run = run_attacked_federation(tmp_path_factory.mktemp("robust"), DEFAULT_AGGREGATION, 50.0)
    finally:
        engine_logger.removeHandler(handler)
        engine_logger.setLevel(previous_level)
    yield run, handler.messages


class RecordingHandler(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def test_the_default_rule_keeps_the_model_and_reports_the_attacker(
    robust_run: tuple[AttackedRun, list[str]],
) -> None:
    run, messages = robust_run
    assert len(set(run.honest_cids)) == 1, "honest peers merged different models"
    assert all(
        bool(torch.isfinite(tensor).all()) for tensor in run.final.values() if tensor.is_floating_point()
    )
    honest_addresses = {engine.identity.address for engine in run.honest_engines}
    for engine in run.honest_engines:
        filtered = engine.statistics.snapshot().filtered_updates
        assert filtered.get(run.attacker_address, {}).get("clipped", 0) >= ROUNDS, filtered
        assert not honest_addresses & set(filtered), f"honest peers were filtered: {filtered}"
    named = [
        message for message in messages if run.attacker_address in message and "norm_bound clipped" in message
    ]
    assert len(named) >= ROUNDS * len(run.honest_engines), "not every honest peer logged the clipped attacker"


def test_the_attacker_backend_sends_a_well_formed_scaled_update() -> None:
    state = initial_state(SMALL)
    honest = TorchBackend().train(state, 1, shard(0), SMALL, seed=5)
    attacked = ScalingAttacker(50.0).train(state, 1, shard(0), SMALL, seed=5)
    assert isinstance(attacked.update, ModelUpdate)
    assert attacked.update.samples == honest.update.samples
    for name, delta in honest.update.deltas.items():
        assert attacked.update.deltas[name].dtype == torch.float32
        assert torch.allclose(attacked.update.deltas[name], delta * 50.0)
