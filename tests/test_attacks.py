"""The benchmark's attacks: what each attacker sends, that it passes validation, and that the simulation
merges it through the recipe's rule (FedAvg is destroyed by it, the default robust rule is not)."""

from __future__ import annotations

import pytest
import torch

from agent.benchmark.attacks import ATTACK_NAMES, Attack, check_attack
from agent.errors import ConfigurationError
from agent.learning.aggregation.config import DEFAULT_AGGREGATION, LEGACY_FEDAVG
from agent.learning.modes import TrainingMode
from agent.learning.simulation import Schedule, initial_state, simulate
from agent.learning.training import ClientResult, TrainingConfig, TrainingMetrics
from agent.learning.update import ModelUpdate, validate_update
from models.spec import EncoderSpec

MAXIMUM = 5000


def honest_result(client: int, samples: int = 100) -> ClientResult:
    generator = torch.Generator().manual_seed(client)
    deltas = {
        "stages.0.weight": torch.randn(4, 3, generator=generator) * 0.01,
        "heads.0.bias": torch.randn(2, generator=generator) * 0.01,
    }
    update = ModelUpdate(mode=TrainingMode.LAYER_WISE, stage=1, samples=samples, deltas=deltas)
    metrics = TrainingMetrics(loss=1.0, samples=samples, steps=1, seconds=0.1, flops=1, update_bytes=1)
    return ClientResult(update=update, metrics=metrics)


def forged(name: str, attackers: int = 1, clients: int = 4) -> tuple[list[ClientResult], list[ClientResult]]:
    results = [honest_result(client) for client in range(clients)]
    attack = Attack(name, attackers, clients, None, seed=3, maximum_samples=MAXIMUM)
    return results, attack.tamper(0, tuple(range(clients)), list(results))


@pytest.mark.parametrize(
    ("name", "factor"), [("sign-flip", -10.0), ("scale", 50.0), ("inflate-samples", -10.0)]
)
def test_scaling_attacks_send_a_multiple_of_their_own_delta(name: str, factor: float) -> None:
    results, tampered = forged(name)
    own, sent = results[-1].update, tampered[-1].update
    for tensor, delta in sent.deltas.items():
        assert torch.equal(delta, own.deltas[tensor] * factor)
    assert sent.samples == (MAXIMUM if name == "inflate-samples" else own.samples)
    assert tampered[:-1] == results[:-1], "honest clients' results are untouched"
    assert tampered[-1].metrics.update_bytes == len(sent.to_bytes())


def test_noise_is_seeded_per_round_and_client_and_scaled_to_the_own_delta() -> None:
    clients = 3
    results = [honest_result(client) for client in range(clients)]
    attack = Attack("noise", 1, clients, 10.0, seed=3, maximum_samples=MAXIMUM)
    first = attack.tamper(0, (0, 1, 2), list(results))[-1].update
    again = attack.tamper(0, (0, 1, 2), list(results))[-1].update
    later = attack.tamper(1, (0, 1, 2), list(results))[-1].update
    name = "stages.0.weight"
    assert torch.equal(first.deltas[name], again.deltas[name])
    assert not torch.equal(first.deltas[name], later.deltas[name])
    own_std = float(results[-1].update.deltas[name].std())
    assert 2 * own_std < float(first.deltas[name].std()) < 50 * own_std


def test_copy_sends_the_first_honest_update() -> None:
    results, tampered = forged("copy", attackers=2, clients=5)
    for attacker in (3, 4):
        assert tampered[attacker].update.to_bytes() == results[0].update.to_bytes()


@pytest.mark.parametrize("name", ATTACK_NAMES)
def test_every_forged_update_passes_validation(name: str) -> None:
    _, tampered = forged(name)
    reference = {"stages.0.weight": torch.zeros(4, 3), "heads.0.bias": torch.zeros(2)}
    for result in tampered:
        validate_update(result.update, reference, TrainingMode.LAYER_WISE, 1, 1, MAXIMUM)


def test_bad_attack_settings_are_refused() -> None:
    with pytest.raises(ConfigurationError, match="unknown attack"):
        check_attack("bribe", 1, 5)
    with pytest.raises(ConfigurationError, match="attackers must be"):
        check_attack("scale", 5, 5)
    with pytest.raises(ConfigurationError, match="or neither"):
        check_attack("scale", 0, 5)
    with pytest.raises(ConfigurationError, match="or neither"):
        check_attack(None, 1, 5)


def simulated_final_state(aggregation_is_robust: bool) -> dict[str, torch.Tensor]:
    config = TrainingConfig(
        spec=EncoderSpec(architecture="resnet", stages=1, widths=(4,)),
        mode=TrainingMode.LAYER_WISE,
        federation_seed=0,
        batch_size=8,
        aggregation=DEFAULT_AGGREGATION if aggregation_is_robust else LEGACY_FEDAVG,
    )
    images = [
        torch.randint(0, 256, (16, 1, 28, 28), dtype=torch.uint8, generator=torch.Generator().manual_seed(c))
        for c in range(5)
    ]
    attack = Attack("scale", 1, 5, 1000.0, seed=0, maximum_samples=config.aggregation.maximum_samples)
    records = list(simulate(config, Schedule(1, 1), images, adversary=attack))
    assert len(records) == 1
    if aggregation_is_robust:
        assert any(decision.label == "client-4" for decision in records[0].decisions)
    return records[0].state


def test_the_simulation_merges_attackers_through_the_recipes_rule() -> None:
    config = TrainingConfig(
        spec=EncoderSpec(architecture="resnet", stages=1, widths=(4,)),
        mode=TrainingMode.LAYER_WISE,
        federation_seed=0,
    )
    genesis = initial_state(config)
    robust = simulated_final_state(aggregation_is_robust=True)
    undefended = simulated_final_state(aggregation_is_robust=False)
    name = (
        "stages.0.0.weight"
        if "stages.0.0.weight" in genesis
        else sorted(n for n in genesis if n.startswith("stages.0"))[0]
    )
    robust_step = float((robust[name] - genesis[name]).abs().max())
    undefended_step = float((undefended[name] - genesis[name]).abs().max())
    assert undefended_step > 20 * robust_step, (undefended_step, robust_step)
