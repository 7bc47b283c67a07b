"""The round engine against what peers and the chain do, on the in-memory twins of the three ports.

Every engine runs through its public ``run`` (tests/in_memory_federation.py); a misbehaving peer is played by
the test with the same ports a device has (its own ledger view, the store, a signed message on the bus).
"""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
import torch

from agent.errors import ContractRevertError, LedgerError
from agent.learning.modes import TrainingMode
from agent.learning.simulation import initial_state
from agent.learning.training import TrainingConfig
from agent.learning.update import ModelUpdate, expected_update_names
from agent.ports.identity import Signer
from agent.ports.ledger import Ledger, RoundPhase
from agent.ports.message_bus import MessageBus
from agent.protocol.messages import UpdateAnnounced, encode, topic_of
from models.spec import EncoderSpec
from tests.in_memory_federation import InMemoryFederation

TINY = TrainingConfig(
    spec=EncoderSpec(architecture="resnet", stages=3, widths=(4, 8, 8), projection_dim=8),
    mode=TrainingMode.LAYER_WISE,
    federation_seed=3,
    batch_size=8,
)
ROUNDS = TINY.spec.stages  # one round per stage


def shard(index: int, count: int = 16) -> torch.Tensor:
    generator = torch.Generator().manual_seed(100 + index)
    return torch.randint(0, 256, (count, 1, 28, 28), generator=generator, dtype=torch.uint8)


def zero_update(stage: int, salt: int = 0) -> bytes:
    """A well-formed update that changes nothing (``salt`` makes its bytes, hence its CID, differ)."""
    reference = initial_state(TINY)
    names = expected_update_names(reference, TINY.mode, stage, TINY.spec.stages)
    return ModelUpdate(
        TINY.mode, stage, 16 + salt, {name: torch.zeros_like(reference[name]) for name in names}
    ).to_bytes()


def announce(bus: MessageBus, federation: InMemoryFederation, author: Signer, number: int, cid: str) -> None:
    """Publish ``author``'s signed announcement of ``cid`` for round ``number`` (stage = round here)."""
    message = UpdateAnnounced(
        federation=federation.federation_id,
        round=number,
        stage=number,
        participant=author.address,
        cid=cid,
        samples=16,
        sent_at=0,
    )
    bus.publish(topic_of(message), encode(message, author))


def test_honest_peers_agree_and_the_chain_records_each_round(tmp_path: Path) -> None:
    federation = InMemoryFederation(TINY, peers=3, work_directory=tmp_path)
    results = federation.run([federation.engine(index, shard(index)) for index in range(3)])
    assert len(results) == 3 and len(set(results.values())) == 1
    log = federation.ledger(0).round_log()
    assert [(entry.number, entry.stage) for entry in log] == [(1, 1), (2, 2), (3, 3)]
    assert log[-1].model_cid == results[0]


def test_bytes_that_do_not_match_their_cid_are_left_out(tmp_path: Path) -> None:
    federation = InMemoryFederation(TINY, peers=3, quorum=4, work_directory=tmp_path)
    attacker = federation.ledger(3)
    attacker.register()

    def submit_tampered(number: int) -> None:
        cid = federation.store.put(zero_update(number))
        federation.store.tamper(cid, zero_update(number, salt=1))  # what a lying store or peer serves
        attacker.submit_update(number, cid, 16)

    honest = [federation.engine(index, shard(index)) for index in range(3)]
    results = federation.run(honest, each_round=submit_tampered)
    assert len(results) == 3 and len(set(results.values())) == 1
    for engine in honest:
        snapshot = engine.statistics.snapshot()
        assert (snapshot.rejected_updates, snapshot.updates_merged) == (ROUNDS, 3 * ROUNDS)


def test_an_announcement_of_a_cid_not_on_chain_is_rejected_and_never_fetched(tmp_path: Path) -> None:
    federation = InMemoryFederation(TINY, peers=3, work_directory=tmp_path)
    stranger, bus = federation.identity(3), federation.broker.connect()
    federation.ledger(3).register()  # registered, so its signed messages pass the inbox
    never_submitted = federation.store.put(b"never submitted")

    def announce_unsubmitted(number: int) -> None:
        announce(bus, federation, stranger, number, never_submitted)

    honest = [federation.engine(index, shard(index)) for index in range(3)]
    results = federation.run(honest, each_round=announce_unsubmitted)
    assert len(set(results.values())) == 1 and len(results) == 3
    assert never_submitted not in federation.store.reads
    assert sum(engine.statistics.snapshot().rejected_messages for engine in honest) >= 1


def test_an_announcement_of_another_peers_cid_is_rejected(tmp_path: Path) -> None:
    """A free-rider announcing (signed, registered) a CID that the chain records under another submitter."""
    federation = InMemoryFederation(TINY, peers=3, quorum=4, spare_accounts=2, work_directory=tmp_path)
    accomplice, free_rider = federation.ledger(3), federation.identity(4)
    accomplice.register()
    federation.ledger(4).register()
    bus = federation.broker.connect()

    def claim_the_accomplices_update(number: int) -> None:
        cid = federation.store.put(zero_update(number))
        accomplice.submit_update(number, cid, 16)  # on chain, never announced by its author
        announce(bus, federation, free_rider, number, cid)

    honest = [federation.engine(index, shard(index)) for index in range(3)]
    results = federation.run(honest, each_round=claim_the_accomplices_update)
    assert len(set(results.values())) == 1 and len(results) == 3
    # The update is merged once per round, as its on-chain submitter's; a peer reads the claim when it next
    # waits on the round (after the round ends it is not read at all), so only the sum is sure to count.
    assert all(engine.statistics.snapshot().updates_merged == 4 * ROUNDS for engine in honest)
    assert sum(engine.statistics.snapshot().rejected_messages for engine in honest) >= 1


class RefusingFirstRound:
    """A ledger view whose round-1 submission the chain refuses with ``reason`` (the rest passes through)."""

    def __init__(self, inner: Ledger, reason: str) -> None:
        self._inner = inner
        self.reason = reason
        self.refusals = 0

    def __getattr__(self, name: str) -> object:
        return getattr(self._inner, name)

    def submit_update(self, round_number: int, update_cid: str, samples: int) -> None:
        if round_number == 1:
            self.refusals += 1
            raise ContractRevertError("refused", reason=self.reason)
        self._inner.submit_update(round_number, update_cid, samples)


@pytest.mark.parametrize(
    "reason",
    [
        "CoordinatorSuspended(0xA, 1)",  # suspended since it last read its record
        "CoordinatorDuplicateUpdate(1, 85, 0x76, 0x3B)",  # another peer submitted byte-identical bytes
    ],
)
def test_a_peer_refused_a_round_sits_it_out_without_retraining_and_takes_the_next(
    tmp_path: Path, reason: str
) -> None:
    federation = InMemoryFederation(TINY, peers=3, work_directory=tmp_path, round_duration_seconds=5)
    refused = RefusingFirstRound(federation.ledger(0), reason)
    engines = [
        federation.engine(0, shard(0), ledger=refused),  # type: ignore[arg-type]
        *(federation.engine(index, shard(index)) for index in (1, 2)),
    ]
    results = federation.run(engines)
    assert len(set(results.values())) == 1 and len(results) == 3
    assert refused.refusals == 1  # refused once, never resubmitted to round 1
    assert engines[0].statistics.snapshot().updates_trained == ROUNDS  # round 1 trained once, not again
    ledger = federation.ledger(1)
    assert len(ledger.submissions(1)) == 2 and ledger.round_summary(1).phase is RoundPhase.FINALIZED


class PowerCutBeforeSubmitting:
    """The device loses power right before its first submission: stop the engine there."""

    def __init__(self, inner: Ledger, stop: threading.Event) -> None:
        self._inner = inner
        self.stop = stop

    def __getattr__(self, name: str) -> object:
        return getattr(self._inner, name)

    def submit_update(self, round_number: int, update_cid: str, samples: int) -> None:
        self.stop.set()
        raise LedgerError("power cut")


def test_a_peer_restarted_between_training_and_submitting_does_not_retrain(tmp_path: Path) -> None:
    federation = InMemoryFederation(TINY, peers=3, work_directory=tmp_path)
    stop = threading.Event()
    crashing = federation.engine(0, shard(0), ledger=PowerCutBeforeSubmitting(federation.ledger(0), stop))  # type: ignore[arg-type]
    crashing.run(stop)
    assert crashing.statistics.snapshot().updates_trained == 1
    pinned_cid = crashing.checkpoints.load().update_cid
    assert pinned_cid and federation.ledger(0).submissions(1) == ()

    restarted = federation.engine(0, shard(0))  # same key and state directory: a new process
    results = federation.run([restarted, *(federation.engine(index, shard(index)) for index in (1, 2))])
    assert len(set(results.values())) == 1 and len(results) == 3
    assert restarted.statistics.snapshot().updates_trained == ROUNDS - 1, "round 1 must not be trained again"
    assert pinned_cid in {submission.update_cid for submission in federation.ledger(0).submissions(1)}
