"""A federation on the three in-memory port twins, for round-engine tests that run in about a second.

The engines run through their public ``run`` (no private methods driven): content in an
InMemoryContentStore, messages on an InMemoryBroker, the chain an InMemoryCoordinator whose rules
tests/test_ledger_conformance.py holds to the contract's. Accounts and keys are real (messages are signed
and verified as in production), derived from the federation seed.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable
from pathlib import Path

import torch

from agent.adapters.account_identity import AccountIdentity, account_from_seed
from agent.adapters.in_memory import InMemoryBroker, InMemoryContentStore
from agent.adapters.in_memory_ledger import InMemoryCoordinator, InMemoryLedger
from agent.commands.local_federation import LocalFederation
from agent.engine.federation import DEFAULT_STRIKE_LIMIT, federation_settings
from agent.engine.round_engine import EngineOptions, RoundEngine
from agent.learning.model_file import encode_model
from agent.learning.simulation import initial_state
from agent.learning.training import TrainingConfig
from agent.ports.content_store import ContentStore
from agent.ports.ledger import Ledger


class CountingStore(InMemoryContentStore):
    """An in-memory store that remembers which CIDs were read (what a peer fetched)."""

    def __init__(self) -> None:
        super().__init__()
        self.reads: list[str] = []

    def get(self, cid: str) -> bytes:
        self.reads.append(cid)
        return super().get(cid)


class InMemoryFederation:
    """``peers`` registered participants (plus spare accounts for attackers) on in-memory services."""

    def __init__(
        self,
        config: TrainingConfig,
        *,
        peers: int,
        work_directory: Path,
        rounds_per_stage: int = 1,
        quorum: int | None = None,
        round_duration_seconds: int = 3600,
        spare_accounts: int = 1,
        committee_threshold: int = 0,
        committee_size: int = 0,
        strike_limit: int = DEFAULT_STRIKE_LIMIT,
    ) -> None:
        self.config = config
        self.work_directory = work_directory
        self.store = CountingStore()
        self.broker = InMemoryBroker()
        self.genesis_cid = self.store.put(encode_model(initial_state(config), config))
        seed = config.federation_seed
        self.accounts = [account_from_seed(seed, f"peer-{index}") for index in range(peers + spare_accounts)]
        settings = federation_settings(
            config,
            self.genesis_cid,
            rounds_per_stage,
            quorum=quorum or peers,
            round_duration_seconds=round_duration_seconds,
        )
        settings = dataclasses.replace(
            settings,
            committee_threshold=committee_threshold,
            committee_size=committee_size,
            strike_limit=strike_limit,
        )
        self.coordinator = InMemoryCoordinator(settings, deployer=account_from_seed(seed, "deployer").address)
        for account in self.accounts:
            self.coordinator.allow(account.address)
        self.federation_id = "in-memory-federation"

    def ledger(self, index: int) -> InMemoryLedger:
        return self.coordinator.ledger(self.accounts[index].address)

    def identity(self, index: int) -> AccountIdentity:
        return AccountIdentity(self.accounts[index])

    def engine(
        self,
        index: int,
        images: torch.Tensor,
        ledger: Ledger | None = None,
        options: EngineOptions | None = None,
        store: ContentStore | None = None,
    ) -> RoundEngine:
        """Peer ``index``'s engine; ``ledger`` and ``store`` replace its view of the chain and the shared
        store (a wrapper that misbehaves or records)."""
        return RoundEngine(
            identity=self.identity(index),
            ledger=ledger or self.ledger(index),
            store=store or self.store,
            bus=self.broker.connect(),
            images=images,
            state_directory=self.work_directory / f"peer-{index}",
            federation_id=self.federation_id,
            options=options or EngineOptions(poll_seconds=0.05, retry_seconds=0.1),
        )

    def run(
        self,
        engines: list[RoundEngine],
        timeout_seconds: float = 120.0,
        each_round: Callable[[int], None] | None = None,
    ) -> dict[int, str]:
        """Run the engines to the end of the schedule; each peer's final model CID.

        ``each_round(number)``, when given, runs on a thread of its own as soon as each round opens, once
        the engines listen (what a misbehaving peer does).
        """
        attacker = None
        if each_round is not None:
            attacker = threading.Thread(target=self._every_round, args=(each_round,), daemon=True)
            attacker.start()
        results = LocalFederation.run_to_completion(engines, timeout_seconds)
        if attacker is not None:
            attacker.join(timeout_seconds)
        assert len(results) == len(engines), "a peer did not finish in time"
        return results

    def _every_round(self, act: Callable[[int], None]) -> None:
        observer = self.coordinator.ledger(self.accounts[0].address)
        for number in range(1, self.coordinator.settings.total_rounds + 1):
            deadline = time.monotonic() + 60
            while observer.current_round().number < number:
                if time.monotonic() > deadline:
                    return
                time.sleep(0.01)
            act(number)
