"""A whole federation in one process, built from exactly the client step and merge the agent runs.

Used by the benchmark and the tests: N clients train the current stage on their shards, every
participant's update is merged with :func:`merge_updates`, and the byte counts are those of the
decentralised protocol: a peer uploads its own update once and downloads every other participant's
update (there is no server to download a merged model from).

With the recipe's differential privacy on, every client's update is clipped and noised before the merge,
as a device does before pinning (:mod:`agent.learning.privacy.mechanism`).
An :class:`Adversary` may replace some clients' results before the merge (the benchmark's attacks, in
:mod:`agent.benchmark.attacks`): attackers run through the same client step, and their updates through
the same merge, as everyone else's.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Protocol

import torch

from agent.errors import ConfigurationError
from agent.learning.aggregation.contribution import Decision
from agent.learning.backends import TrainingBackend
from agent.learning.compression import compress_update, decompress_update
from agent.learning.merging import merge_round
from agent.learning.model_state import ModelState, extract_state
from agent.learning.participation import sample_participants
from agent.learning.privacy.mechanism import privatize
from agent.learning.training import ClientResult, TrainingConfig, train_client
from models.seeding import derive_seed
from models.staged_model import StagedModel


@dataclass(frozen=True)
class Schedule:
    """S stages x R rounds per stage; round indices are 0-based and global across stages."""

    stages: int
    rounds_per_stage: int

    def __post_init__(self) -> None:
        if self.rounds_per_stage < 1:
            raise ConfigurationError(f"rounds_per_stage must be at least 1, not {self.rounds_per_stage}")

    @property
    def total_rounds(self) -> int:
        return self.stages * self.rounds_per_stage

    def stage_of(self, round_index: int) -> int:
        """1-based stage of a 0-based round index."""
        return round_index // self.rounds_per_stage + 1

    def is_last_round_of_stage(self, round_index: int) -> bool:
        return (round_index + 1) % self.rounds_per_stage == 0


@dataclass(frozen=True)
class RoundRecord:
    """What happened in one simulated round."""

    round_index: int
    stage: int
    participants: tuple[int, ...]
    results: tuple[ClientResult, ...]
    upload_bytes: tuple[int, ...]
    download_bytes: tuple[int, ...]
    state: ModelState
    decisions: tuple[Decision, ...] = ()
    merge_seconds: float = 0.0


class Adversary(Protocol):
    """Replaces attackers' results with what they send instead (same order and length)."""

    def tamper(
        self, round_index: int, participants: tuple[int, ...], results: list[ClientResult]
    ) -> list[ClientResult]: ...


def client_label(client: int) -> str:
    """How a simulated client is named in merge decisions."""
    return f"client-{client}"


def initial_state(config: TrainingConfig) -> ModelState:
    """The genesis model every peer builds from the federation seed."""
    return extract_state(StagedModel(config.spec, config.federation_seed))


def participation_randomness(federation_seed: int) -> bytes:
    """What stands in for the chain's randomness in a simulation: 32 bytes derived from the seed."""
    return hashlib.sha256(f"layerfed-simulation/{federation_seed}".encode()).digest()


def choose_participants(
    clients: int, fraction: float, federation_seed: int, round_index: int
) -> tuple[int, ...]:
    """The clients due in ``round_index``: :func:`sample_participants` over the clients' labels, exactly
    the sampler an agent runs over the members' addresses, with the seed's stand-in randomness."""
    labels = [client_label(client) for client in range(clients)]
    chosen = sample_participants(labels, fraction, participation_randomness(federation_seed), round_index)
    return tuple(sorted(int(label.removeprefix("client-")) for label in chosen))


def simulate(
    config: TrainingConfig,
    schedule: Schedule,
    client_images: Sequence[torch.Tensor],
    participation: float = 1.0,
    state: Mapping[str, torch.Tensor] | None = None,
    on_client_start: Callable[[int, int], None] | None = None,
    backend: TrainingBackend | None = None,
    adversary: Adversary | None = None,
) -> Iterator[RoundRecord]:
    """Run every round of ``schedule`` and yield a record after each merge.

    ``on_client_start(round_index, client)`` is called before each client trains (the benchmark resets
    its peak-memory counter there). Clients train with ``backend`` (default: torch's ``train_client``)
    and privatize their updates if the recipe says so; ``adversary`` then replaces its clients' results
    (built from their own privatized updates: an attacker sends what it likes); the merge uses the
    recipe's aggregation rule.
    """
    train = backend.train if backend is not None else train_client
    if schedule.stages != config.spec.stages:
        raise ConfigurationError(f"schedule has {schedule.stages} stages, the model {config.spec.stages}")
    current: ModelState = dict(state) if state is not None else initial_state(config)
    residuals: dict[int, ModelState] = {}  # each client's error-feedback residual, as its device keeps it
    for round_index in range(schedule.total_rounds):
        stage = schedule.stage_of(round_index)
        participants = choose_participants(
            len(client_images), participation, config.federation_seed, round_index
        )
        results = []
        for client in participants:
            if on_client_start is not None:
                on_client_start(round_index, client)
            seed = derive_seed(config.federation_seed, "train", round_index, client)
            result = train(current, stage, client_images[client], config, seed)
            if config.privacy.enabled:
                # A simulated client's noise seed is derived from the public federation seed, which is
                # fine for measuring; a device derives its own from its key (agent.engine.privacy_noise).
                noise_seed = derive_seed(config.federation_seed, "privacy-noise", round_index, client)
                result = replace(result, update=privatize(result.update, config.privacy, noise_seed).update)
            results.append(result)
        if adversary is not None:
            results = adversary.tamper(round_index, participants, results)
        payloads = []
        for client, result in zip(participants, results, strict=True):
            compressed = compress_update(result.update, config.compression, residuals.get(client))
            residuals[client] = compressed.residual
            payloads.append(compressed.payload)
        started = time.perf_counter()
        outcome = merge_round(
            current,
            [
                (client_label(client), decompress_update(payload, config.compression, current))
                for client, payload in zip(participants, payloads, strict=True)
            ],
            config.aggregation,
        )
        merge_seconds = time.perf_counter() - started
        current = outcome.state
        sizes = [len(payload) for payload in payloads]
        yield RoundRecord(
            round_index=round_index,
            stage=stage,
            participants=participants,
            results=tuple(results),
            upload_bytes=tuple(sizes),
            download_bytes=tuple(sum(sizes) - own for own in sizes),
            state=current,
            decisions=outcome.decisions,
            merge_seconds=merge_seconds,
        )
