"""The round engine on the embedded services: agreement, bad peers, restarts.

Real in-process chain (eth-tester + the Coordinator contract), real embedded MQTT broker, real local
content store; only the model is tiny so a round takes a second.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from eth_account import Account

from agent.adapters.account_identity import AccountIdentity
from agent.commands.local_federation import LocalFederation
from agent.engine.round_engine import EngineOptions
from agent.engine.verification import unique_updates
from agent.errors import ConfigurationError, ContractRevertError, LedgerError
from agent.learning.model_file import decode_model
from agent.learning.modes import TrainingMode
from agent.learning.simulation import initial_state
from agent.learning.training import TrainingConfig
from agent.learning.update import ModelUpdate, expected_update_names
from agent.ports.ledger import Submission
from agent.protocol.messages import UpdateAnnounced, encode, topic_of
from models.spec import EncoderSpec

TINY = TrainingConfig(
    spec=EncoderSpec(architecture="resnet", stages=3, widths=(4, 8, 8), projection_dim=8),
    mode=TrainingMode.LAYER_WISE,
    federation_seed=3,
    batch_size=8,
)


def shard(index: int, count: int = 16) -> torch.Tensor:
    generator = torch.Generator().manual_seed(100 + index)
    return torch.randint(0, 256, (count, 1, 28, 28), generator=generator, dtype=torch.uint8)


@pytest.fixture
def federation(tmp_path: Path) -> Iterator[LocalFederation]:
    with LocalFederation(TINY, peers=3, rounds_per_stage=1, work_directory=tmp_path) as embedded:
        yield embedded


def run_to_completion(federation: LocalFederation, timeout_seconds: float = 120.0) -> dict[int, str]:
    engines = [federation.engine(index, shard(index)) for index in range(len(federation.accounts))]
    results = federation.run_to_completion(engines, timeout_seconds)
    assert len(results) == len(engines), "a peer did not finish in time"
    federation.engines = engines  # type: ignore[attr-defined]
    return results


@pytest.mark.slow
def test_every_peer_ends_with_the_same_model_and_the_chain_records_each_round(
    federation: LocalFederation,
) -> None:
    results = run_to_completion(federation)
    assert sorted(results) == [0, 1, 2]
    assert len(set(results.values())) == 1
    log = federation.observer.round_log()
    assert [(entry.number, entry.stage) for entry in log] == [(1, 1), (2, 2), (3, 3)]
    assert log[-1].model_cid == results[0] == federation.observer.latest_canonical_model()
    state, config = decode_model(federation.store.get(results[0]))
    assert config == TINY
    genesis = initial_state(TINY)
    assert all(not torch.equal(state[name], genesis[name]) for name in state if name.startswith("stages.2."))
    # Each peer holds the last base and its merge in memory, not one model per round.
    assert all(len(engine._models) <= 2 for engine in federation.engines)  # type: ignore[attr-defined]


def bad_update(kind: str, stage: int) -> bytes:
    reference = initial_state(TINY)
    names = expected_update_names(reference, TINY.mode, stage, TINY.spec.stages)
    deltas = {name: torch.zeros_like(reference[name]) for name in names}
    if kind == "nan":
        deltas[names[0]] = torch.full_like(reference[names[0]], float("nan"))
    elif kind == "shape":
        deltas[names[0]] = torch.zeros(3, 3)
    elif kind == "garbage":
        return b"this is not a safetensors file"
    return ModelUpdate(TINY.mode, stage, 16, deltas).to_bytes()


@pytest.mark.slow
def test_poisoned_updates_are_left_out_and_the_honest_peers_still_agree(tmp_path: Path) -> None:
    # Four participants, quorum four: the fourth submits a bad update every round and never attests.
    with LocalFederation(TINY, peers=4, rounds_per_stage=1, work_directory=tmp_path) as federation:
        attacker = federation.accounts[3]
        attacker_ledger = federation.ledger(attacker)
        attacker_ledger.register()
        honest = [federation.engine(index, shard(index)) for index in range(3)]
        stop = threading.Event()
        threads, results = federation.start(honest, stop)
        for round_number, kind in ((1, "nan"), (2, "shape"), (3, "garbage")):
            deadline = time.monotonic() + 60
            while federation.observer.current_round().number != round_number:
                assert time.monotonic() < deadline, f"round {round_number} never opened"
                time.sleep(0.05)
            cid = federation.store.put(bad_update(kind, round_number))
            attacker_ledger.submit_update(round_number, cid, 16)
        for thread in threads:
            thread.join(120)
        stop.set()
        assert len(set(results.values())) == 1 and len(results) == 3
        assert len(federation.observer.round_log()) == 3
        for engine in honest:
            assert engine.statistics.snapshot().rejected_updates == 3
            assert engine.statistics.snapshot().updates_merged == 9


def test_a_device_not_admitted_is_told_how_to_join(tmp_path: Path) -> None:
    with LocalFederation(TINY, peers=1, rounds_per_stage=1, work_directory=tmp_path) as federation:
        federation.observer.disallow(federation.accounts[0].address)  # the observer is the deployer
        engine = federation.engine(0, shard(0))
        with pytest.raises(ConfigurationError, match="layerfed contract admit"):
            engine.run(threading.Event())


def test_the_merge_counts_each_cid_once() -> None:
    """Coordinator v2 refuses a duplicate CID; the engine does not rely on it."""
    first = Submission(participant="0xA", update_cid="bafkreione", samples=10)
    copy = Submission(participant="0xB", update_cid="bafkreione", samples=99)
    other = Submission(participant="0xC", update_cid="bafkreitwo", samples=10)
    assert unique_updates([first, copy, other, copy]) == [first, other]


def test_the_inbox_rejects_what_a_bus_may_carry(federation: LocalFederation) -> None:
    engine = federation.engine(0, shard(0))
    member = AccountIdentity(federation.accounts[1])
    federation.ledger(member.account).register()
    stranger = AccountIdentity(Account.create())
    announcement = UpdateAnnounced(
        federation=federation.federation_id,
        round=1,
        stage=1,
        participant=member.address,
        cid="bafkreiabc",
        samples=1,
        sent_at=1,
    )
    topic = topic_of(announcement)
    signed = encode(announcement, member)
    unregistered = dataclasses.replace(announcement, participant=stranger.address)
    engine.inbox.receive(topic, b"{not json")
    engine.inbox.receive(topic, signed.replace(b'"signature":"0x', b'"signature":"0x00'))
    engine.inbox.receive(topic_of(unregistered), encode(unregistered, stranger))
    engine.inbox.receive(topic_of(unregistered), signed)  # right signer, someone else's topic
    assert engine.statistics.snapshot().rejected_messages == 4
    assert engine.inbox.next(0.01) is None
    far_ahead = UpdateAnnounced(
        federation=federation.federation_id,
        round=10**6,
        stage=1,
        participant=member.address,
        cid="bafkreiabc",
        samples=1,
        sent_at=1,
    )
    engine.inbox.current_round = 1
    engine.inbox.receive(topic, encode(far_ahead, member))  # would push the replay horizon past every round
    assert engine.statistics.snapshot().rejected_messages == 5
    engine.inbox.receive(topic, signed)
    engine.inbox.receive(topic, signed)  # a QoS 1 redelivery or a replay
    assert engine.inbox.next(0.01) == announcement
    assert engine.inbox.next(0.01) is None


class CrashingLedger:
    """Wraps a ledger and fails the first submission, as if the device lost power right before it."""

    def __init__(self, inner: object) -> None:
        self._inner = inner
        self.crashed = False

    def __getattr__(self, name: str) -> object:
        return getattr(self._inner, name)

    def submit_update(self, round_number: int, update_cid: str, samples: int) -> None:
        if not self.crashed:
            self.crashed = True
            raise LedgerError("power cut")
        self._inner.submit_update(round_number, update_cid, samples)  # type: ignore[attr-defined]


class RevertingLedger(CrashingLedger):
    """Reads the round as the inner ledger does, but every read raises ``revert`` until ``stop`` is set."""

    def __init__(self, inner: object, revert: ContractRevertError, stop: threading.Event) -> None:
        super().__init__(inner)
        self.revert = revert
        self.stop = stop
        self.reads = 0

    def current_round(self) -> object:
        self.reads += 1
        if self.reads >= 3:
            self.stop.set()
        raise self.revert


def test_a_revert_saying_the_round_moved_on_is_read_again(federation: LocalFederation) -> None:
    engine = federation.engine(0, shard(0), EngineOptions(retry_seconds=0.01))
    stop = threading.Event()
    moved_on = ContractRevertError("refused", reason="CoordinatorRoundNotCurrent(1, 2)")
    engine.ledger = RevertingLedger(engine.ledger, moved_on, stop)  # type: ignore[assignment]
    assert engine.run(stop) == federation.genesis_cid
    assert engine.ledger.reads == 3  # type: ignore[attr-defined]


def test_any_other_revert_ends_the_engine_instead_of_being_retried(federation: LocalFederation) -> None:
    engine = federation.engine(0, shard(0), EngineOptions(retry_seconds=0.01))
    stop = threading.Event()
    refused = ContractRevertError("refused", reason="CoordinatorNotAllowed(0x0)")
    engine.ledger = RevertingLedger(engine.ledger, refused, stop)  # type: ignore[assignment]
    with pytest.raises(ContractRevertError, match="refused"):
        engine.run(stop)
    assert engine.ledger.reads == 1  # type: ignore[attr-defined]


def test_engine_options_keep_sane_defaults() -> None:
    options = EngineOptions()
    assert options.poll_seconds > 0 and options.fetch_attempts >= 1
    assert options.maximum_update_bytes >= 64 * 1024 * 1024


@pytest.mark.slow
def test_a_peer_that_joins_late_catches_up_from_the_canonical_models(tmp_path: Path) -> None:
    with LocalFederation(TINY, peers=3, rounds_per_stage=1, work_directory=tmp_path, quorum=2) as federation:
        early = [federation.engine(index, shard(index)) for index in (0, 1)]
        stop = threading.Event()
        threads, results = federation.start(early, stop)
        deadline = time.monotonic() + 60
        while federation.observer.current_round().finalized_rounds < 1:
            assert time.monotonic() < deadline, "round 1 never finalized"
            time.sleep(0.05)
        late = federation.engine(2, shard(2))
        late_threads, late_results = federation.start([late], stop)
        for thread in [*threads, *late_threads]:
            thread.join(120)
        stop.set()
        assert len(results) == 2 and late_results[0] == results[0] == results[1]
        assert late.statistics.snapshot().bytes_downloaded > 0
        assert late.identity.address in federation.observer.participants()
