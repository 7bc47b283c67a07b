"""Rounds merged by a committee (issue 12), on the in-memory twins: who downloads what, and what a dishonest
minority or majority of the committee can do.

Five peers, rounds above four submissions merged by a committee of three. A dishonest committee member is
an honest engine whose ledger view attests something else when the chain drew it (tests pick the member by
its place in the draw, so that every round has the dishonest members the test wants).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from agent.engine.round_engine import EngineOptions, RoundEngine
from agent.errors import ContractRevertError
from agent.ports.ledger import Ledger
from tests.in_memory_federation import InMemoryFederation
from tests.test_round_engine_peers import ROUNDS, TINY, shard

PEERS = 5
# No suspensions: a suspended forger would leave 4 submitters, below the threshold and the quorum.
COMMITTEE = {"committee_threshold": 4, "committee_size": 3, "strike_limit": 0}
SIZES: dict[str, int] = {}  # bytes of every CID stored in these tests
OPTIONS = EngineOptions(poll_seconds=0.05, retry_seconds=0.1)


class ForgingWhenDrawn:
    """Attests the round's base model (a real model, but not the merge) when drawn at ``places``; records
    the rounds its engine merged and tried to attest in ``attempted``."""

    def __init__(self, inner: Ledger, places: tuple[int, ...]) -> None:
        self._inner = inner
        self.places = places
        self.forged: list[int] = []
        self.attempted: list[int] = []

    def __getattr__(self, name: str) -> object:
        return getattr(self._inner, name)

    def attest_model(self, round_number: int, model_cid: str) -> None:
        self.attempted.append(round_number)
        committee = self._inner.committee(round_number)
        if self._inner.account in [committee[place] for place in self.places]:
            self.forged.append(round_number)
            model_cid = self._inner.latest_canonical_model()
        self._inner.attest_model(round_number, model_cid)


class DrawnOneBlockLate:
    """Refuses each round's first draw as a chain does whose latest block is the anchor (the twin has no
    blocks), so that the engine must retry it."""

    def __init__(self, inner: Ledger) -> None:
        self._inner = inner
        self.refused: set[int] = set()

    def __getattr__(self, name: str) -> object:
        return getattr(self._inner, name)

    def draw_committee(self, round_number: int) -> bool:
        if round_number not in self.refused:
            self.refused.add(round_number)
            reason = f"CoordinatorCommitteeNotDrawable({round_number}, 7)"
            raise ContractRevertError(f"drawCommittee: the contract refused: {reason}", reason)
        return self._inner.draw_committee(round_number)


def federation_of(
    tmp_path: Path, places: tuple[int, ...] = (), verify: bool = False
) -> tuple[InMemoryFederation, list[RoundEngine]]:
    federation = InMemoryFederation(TINY, peers=PEERS, work_directory=tmp_path, **COMMITTEE)
    put = federation.store.put

    def put_and_remember(data: bytes) -> str:  # retention drops old content: remember what was stored
        cid = put(data)
        SIZES[cid] = len(data)
        return cid

    federation.store.put = put_and_remember  # type: ignore[method-assign]
    options = dataclasses.replace(OPTIONS, verify=verify)
    engines = []
    for index in range(PEERS):
        ledger = ForgingWhenDrawn(federation.ledger(index), places)
        engines.append(federation.engine(index, shard(index), ledger, options))  # type: ignore[arg-type]
    return federation, engines


def test_only_the_committee_merges_and_the_others_download_one_model(tmp_path: Path) -> None:
    federation, engines = federation_of(tmp_path)
    results = federation.run(engines)
    assert len(results) == PEERS and len(set(results.values())) == 1
    observer = federation.ledger(0)
    log = observer.round_log()
    assert len(log) == ROUNDS and log[-1].model_cid == results[0]

    for engine in engines:
        me = engine.identity.address
        drawn = [me in observer.committee(number) for number in range(1, ROUNDS + 1)]
        assert all(len(observer.committee(number)) == 3 for number in range(1, ROUNDS + 1))
        # A member fetches every update of the rounds it merges (its own included); an outsider fetches
        # nothing of them, and only the canonical model it starts the next round from (a member has it in
        # memory). A member that looks after the other two finalized the round merges nothing: like an
        # outsider, it downloads the canonical model.
        merged = engine.ledger.attempted  # type: ignore[attr-defined]
        assert set(merged) <= {number for number, member in enumerate(drawn, start=1) if member}
        updates = sum(
            SIZES[submission.update_cid] for number in merged for submission in observer.submissions(number)
        )
        models = sum(SIZES[log[number - 1].model_cid] for number in range(1, ROUNDS) if number not in merged)
        snapshot = engine.statistics.snapshot()
        assert snapshot.bytes_downloaded == updates + models
        assert snapshot.rounds_outside_committee == drawn.count(False)
        assert snapshot.updates_merged == PEERS * len(merged)


def test_a_dishonest_committee_minority_still_finalizes_the_honest_merge(tmp_path: Path) -> None:
    federation, engines = federation_of(tmp_path, places=(0,))  # the first drawn member forges, every round
    results = federation.run(engines)
    assert len(results) == PEERS and len(set(results.values())) == 1
    observer = federation.ledger(0)
    for entry in observer.round_log():
        committee = observer.committee(entry.number)
        attested = {
            attestation.participant: attestation.model_cid
            for attestation in observer.attestations(entry.number)
        }
        assert attested.get(committee[0]) != entry.model_cid  # the forger's vote lost
        honest = {attested[member] for member in committee[1:] if member in attested}
        assert honest == {entry.model_cid}
    recorded_forgeries: dict[str, int] = {}
    for entry in observer.round_log():
        forger = observer.committee(entry.number)[0]
        counted = any(
            attestation.participant == forger for attestation in observer.attestations(entry.number)
        )
        recorded_forgeries[forger] = recorded_forgeries.get(forger, 0) + counted  # refused once finalized
    for forger, count in recorded_forgeries.items():
        assert observer.participant_record(forger).attested_other == count  # each one a strike


def test_a_verifying_outsider_catches_a_forging_committee_majority(tmp_path: Path) -> None:
    """Two of three members attest the unchanged base model: it finalizes (the majority rules on chain), and
    every verifying outsider, re-merging, finds that the canonical model is not the merge."""
    federation, engines = federation_of(tmp_path, places=(0, 1), verify=True)
    federation.run(engines)
    observer = federation.ledger(0)
    log = observer.round_log()
    assert len(log) == ROUNDS
    assert log[0].model_cid == federation.genesis_cid  # the forged "merge" of round 1 is the genesis model
    snapshots = [engine.statistics.snapshot() for engine in engines]
    assert (
        sum(snapshot.verification_mismatches for snapshot in snapshots) == 2 * ROUNDS
    )  # 2 outsiders a round
    assert all(snapshot.rounds_verified == snapshot.rounds_outside_committee for snapshot in snapshots)


def test_verifying_outsiders_confirm_an_honest_committee(tmp_path: Path) -> None:
    federation, engines = federation_of(tmp_path, verify=True)
    federation.run(engines)
    outside = [engine.statistics.snapshot() for engine in engines]
    assert sum(snapshot.rounds_outside_committee for snapshot in outside) == 2 * ROUNDS
    assert all(snapshot.rounds_verified == snapshot.rounds_outside_committee for snapshot in outside)
    assert all(snapshot.verification_mismatches == 0 for snapshot in outside)


def test_members_retry_a_draw_refused_until_the_next_block(tmp_path: Path) -> None:
    federation = InMemoryFederation(TINY, peers=PEERS, work_directory=tmp_path, **COMMITTEE)
    ledgers = [DrawnOneBlockLate(federation.ledger(index)) for index in range(PEERS)]
    engines = [
        federation.engine(index, shard(index), ledger, OPTIONS)  # type: ignore[arg-type]
        for index, ledger in enumerate(ledgers)
    ]
    results = federation.run(engines)
    assert len(results) == PEERS and len(set(results.values())) == 1
    observer = federation.ledger(0)
    assert len(observer.round_log()) == ROUNDS
    for number in range(1, ROUNDS + 1):  # each member asked to draw was refused once, then drew or lost
        committee = observer.committee(number)
        asked = {ledger.account for ledger in ledgers if number in ledger.refused}
        assert asked and asked <= set(committee)
