"""Attacks on the merge, for measuring aggregation rules: a measurement tool, never part of an agent.

Each attacker is a registered participant that trains honestly on its own shard (so it knows what an
honest update looks like) and then sends something else, well-formed enough to pass validation (the
right tensors, shapes and dtype, finite values, a claim within the recipe's limit):

- ``sign-flip``: its own delta times ``-scale`` (default 10): pushes the model against the honest direction.
- ``scale``: its own delta times ``scale`` (default 50): one update large enough to own a mean.
- ``noise``: Gaussian noise whose standard deviation is ``scale`` (default 10) times that of its own
  delta, tensor by tensor, from a generator seeded by (seed, round, client).
- ``inflate-samples``: the sign flip (times ``-scale``, default 10), claiming the recipe's maximum
  sample count, so that claim-weighted averaging gives it almost all the weight.
- ``copy``: a free-rider's copy of the first honest participant's update (deltas and claim).

Attackers are the last ``attackers`` clients. The simulation hands every round's results to
:meth:`Attack.tamper` just before the same merge the agent runs (:mod:`agent.learning.simulation`);
nothing under ``agent/engine`` or ``agent/commands`` imports this module (a test keeps it so).
"""

from __future__ import annotations

from dataclasses import replace

import torch

from agent.errors import ConfigurationError
from agent.learning.training import ClientResult
from agent.learning.update import ModelUpdate
from models.seeding import derive_seed

ATTACK_NAMES: tuple[str, ...] = ("sign-flip", "scale", "noise", "inflate-samples", "copy")
DEFAULT_SCALES: dict[str, float] = {
    "sign-flip": 10.0,
    "scale": 50.0,
    "noise": 10.0,
    "inflate-samples": 10.0,
    "copy": 1.0,
}


def check_attack(attack: str | None, attackers: int, clients: int) -> None:
    """ConfigurationError unless ``attackers`` of ``clients`` can run ``attack``."""
    if attack is not None and attack not in ATTACK_NAMES:
        raise ConfigurationError(f"unknown attack {attack!r}; choose from {', '.join(ATTACK_NAMES)}")
    if attackers < 0 or attackers >= clients:
        raise ConfigurationError(
            f"attackers must be in 0..{clients - 1} for {clients} clients, not {attackers}"
        )
    if (attack is None) != (attackers == 0):
        raise ConfigurationError("give both an attack and a number of attackers above 0, or neither")


class Attack:
    """Replaces the results of the last ``attackers`` clients with forged ones."""

    def __init__(
        self, name: str, attackers: int, clients: int, scale: float | None, seed: int, maximum_samples: int
    ) -> None:
        check_attack(name, attackers, clients)
        self.name = name
        self.attackers = frozenset(range(clients - attackers, clients))
        self.scale = DEFAULT_SCALES[name] if scale is None else scale
        self.seed = seed
        self.maximum_samples = maximum_samples

    def tamper(
        self, round_index: int, participants: tuple[int, ...], results: list[ClientResult]
    ) -> list[ClientResult]:
        honest = [
            result
            for client, result in zip(participants, results, strict=True)
            if client not in self.attackers
        ]
        forged = []
        for client, result in zip(participants, results, strict=True):
            if client in self.attackers:
                update = self.forge(round_index, client, result.update, honest)
                metrics = replace(result.metrics, update_bytes=len(update.to_bytes()))
                result = ClientResult(update=update, metrics=metrics)
            forged.append(result)
        return forged

    def forge(
        self, round_index: int, client: int, own: ModelUpdate, honest: list[ClientResult]
    ) -> ModelUpdate:
        """What attacker ``client`` sends instead of its honest update ``own``."""
        if self.name == "copy" and honest:
            return replace(honest[0].update)
        samples = self.maximum_samples if self.name == "inflate-samples" else own.samples
        if self.name in ("sign-flip", "inflate-samples"):
            deltas = {name: delta * -self.scale for name, delta in own.deltas.items()}
        elif self.name == "scale":
            deltas = {name: delta * self.scale for name, delta in own.deltas.items()}
        elif self.name == "noise":
            generator = torch.Generator().manual_seed(derive_seed(self.seed, "attack", round_index, client))
            deltas = {
                name: torch.randn(delta.shape, generator=generator) * (float(delta.std()) * self.scale)
                if delta.numel() > 1
                else torch.randn(delta.shape, generator=generator) * (abs(float(delta.sum())) * self.scale)
                for name, delta in sorted(own.deltas.items())
            }
        else:  # copy with nobody honest to copy from: its own update
            deltas = dict(own.deltas)
        return ModelUpdate(mode=own.mode, stage=own.stage, samples=samples, deltas=deltas)
