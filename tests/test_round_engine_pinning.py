"""The merged model is attested first and pinned after (issue 12): order, crash safety, late downloads.

On the in-memory twins (tests/in_memory_federation.py), engines run through their public ``run``. A peer's
view of the store or the chain is a wrapper that records what it did, or cuts the power at a chosen step.
"""

from __future__ import annotations

import threading
from pathlib import Path

from agent import content_id
from agent.engine.checkpoint import Checkpoint
from agent.errors import ContentNotFoundError, ContentStoreError
from agent.ports.content_store import ContentStore
from agent.ports.ledger import Ledger
from tests.in_memory_federation import InMemoryFederation
from tests.test_committee_rounds import COMMITTEE, OPTIONS, PEERS
from tests.test_round_engine_peers import ROUNDS, TINY, shard


class RecordingStore:
    """Passes every call to ``inner`` and records ("put", CID) and ("pin", CID) in ``events``."""

    def __init__(self, inner: ContentStore, events: list[tuple[str, str]]) -> None:
        self._inner = inner
        self.events = events

    def __getattr__(self, name: str) -> object:
        return getattr(self._inner, name)

    def put(self, data: bytes) -> str:
        cid = self._inner.put(data)
        self.events.append(("put", cid))
        return cid

    def pin(self, cid: str) -> None:
        self._inner.pin(cid)
        self.events.append(("pin", cid))


class RecordingLedger:
    """Passes every call to ``inner`` and records each attempt to attest as ("attest", CID) in ``events``
    (an attempt: the third peer's attestation comes after the round finalized, and is refused)."""

    def __init__(self, inner: Ledger, events: list[tuple[str, str]]) -> None:
        self._inner = inner
        self.events = events

    def __getattr__(self, name: str) -> object:
        return getattr(self._inner, name)

    def attest_model(self, round_number: int, model_cid: str) -> None:
        self.events.append(("attest", model_cid))
        self._inner.attest_model(round_number, model_cid)


def test_each_peer_attests_the_cid_it_computed_then_pins_those_very_bytes(tmp_path: Path) -> None:
    federation = InMemoryFederation(TINY, peers=3, work_directory=tmp_path)
    events: list[list[tuple[str, str]]] = [[] for _ in range(3)]
    engines = [
        federation.engine(
            index,
            shard(index),
            ledger=RecordingLedger(federation.ledger(index), events[index]),  # type: ignore[arg-type]
            store=RecordingStore(federation.store, events[index]),  # type: ignore[arg-type]
        )
        for index in range(3)
    ]
    results = federation.run(engines)
    assert len(results) == 3 and len(set(results.values())) == 1
    canonical = [entry.model_cid for entry in federation.ledger(0).round_log()]
    for number, cid in enumerate(canonical):  # a peer that looks after two others finalized merges nothing
        assert sum(("attest", cid) in peer_events for peer_events in events) >= 2, f"round {number + 1}"
    for peer_events in events:
        attested = [cid for kind, cid in peer_events if kind == "attest"]
        assert set(attested) <= set(canonical)
        for cid in attested:
            # The store named the bytes with the CID attested (computed locally), after the attestation.
            assert peer_events.index(("put", cid)) > peer_events.index(("attest", cid))


class PowerCutAfterAttesting:
    """A ledger view that, once its first attestation is on chain, cuts the power at the next store write."""

    def __init__(self, inner: Ledger, stop: threading.Event) -> None:
        self._inner = inner
        self.stop = stop
        self.attested: list[str] = []

    def __getattr__(self, name: str) -> object:
        return getattr(self._inner, name)

    def attest_model(self, round_number: int, model_cid: str) -> None:
        self._inner.attest_model(round_number, model_cid)
        self.attested.append(model_cid)


class StoreLosingPower:
    """A store whose writes fail (and stop the engine) once ``ledger`` has attested: the device died."""

    def __init__(self, inner: ContentStore, ledger: PowerCutAfterAttesting) -> None:
        self._inner = inner
        self.ledger = ledger

    def __getattr__(self, name: str) -> object:
        return getattr(self._inner, name)

    def put(self, data: bytes) -> str:
        if self.ledger.attested:
            self.ledger.stop.set()
            raise ContentStoreError("power cut")
        return self._inner.put(data)


def test_a_peer_restarted_between_attesting_and_pinning_merges_again_and_pins(tmp_path: Path) -> None:
    # One peer, so nobody else pins the model: the restarted peer must rebuild the bytes from the updates.
    federation = InMemoryFederation(TINY, peers=1, work_directory=tmp_path)
    stop = threading.Event()
    ledger = PowerCutAfterAttesting(federation.ledger(0), stop)
    crashing = federation.engine(
        0,
        shard(0),
        ledger=ledger,  # type: ignore[arg-type]
        store=StoreLosingPower(federation.store, ledger),  # type: ignore[arg-type]
    )
    crashing.run(stop)
    attested = ledger.attested[0]
    checkpoint = crashing.checkpoints.load()
    assert (checkpoint.round_number, checkpoint.merged_model_cid) == (1, attested)
    assert checkpoint.attested and checkpoint.pin_pending, "the checkpoint claims a pin that never happened"
    assert federation.ledger(0).canonical_model(1) == attested and not federation.store.has(attested)

    events: list[tuple[str, str]] = []
    recording = RecordingStore(federation.store, events)
    restarted = federation.engine(0, shard(0), store=recording)  # type: ignore[arg-type]
    results = federation.run([restarted])
    assert results[0] == federation.ledger(0).round_log()[-1].model_cid
    assert events[0] == ("put", attested), "the restarted peer pins the attested model before anything else"
    assert restarted.statistics.snapshot().updates_trained == ROUNDS - 1


def test_the_checkpoint_owes_a_pin_only_between_attesting_and_pinning() -> None:
    cid = content_id.compute(b"a merged model")
    checkpoint = Checkpoint(round_number=1, merged_model_cid=cid, attested=True)
    assert checkpoint.pin_pending and not checkpoint.with_pinned_model().pin_pending
    assert not checkpoint.without_merged_model().pin_pending
    assert not Checkpoint(round_number=1, merged_model_cid=cid).pin_pending  # not attested yet: not owed


class LateStore:
    """Every CID stored after it was made is absent at its first ``get`` by this peer: content that an IPFS
    peer pins a moment after the chain names it."""

    def __init__(self, inner: ContentStore, early: set[str]) -> None:
        self._inner = inner
        self._asked: set[str] = set()
        self._early = early  # what was there all along (the genesis model)
        self.misses = 0

    def __getattr__(self, name: str) -> object:
        return getattr(self._inner, name)

    def get(self, cid: str) -> bytes:
        if cid not in self._early and cid not in self._asked:
            self._asked.add(cid)
            self.misses += 1
            raise ContentNotFoundError(f"{cid} is not there yet")
        return self._inner.get(cid)


def test_peers_wait_for_updates_and_canonical_models_that_appear_late(tmp_path: Path) -> None:
    """With committees, outsiders download each canonical model; members download every update."""
    federation = InMemoryFederation(TINY, peers=PEERS, work_directory=tmp_path, **COMMITTEE)
    stores = [LateStore(federation.store, {federation.genesis_cid}) for _ in range(PEERS)]
    engines = [
        federation.engine(index, shard(index), options=OPTIONS, store=stores[index])  # type: ignore[arg-type]
        for index in range(PEERS)
    ]
    results = federation.run(engines)
    assert len(results) == PEERS and len(set(results.values())) == 1
    snapshots = [engine.statistics.snapshot() for engine in engines]
    assert all(snapshot.rejected_updates == 0 for snapshot in snapshots)
    assert sum(snapshot.updates_merged for snapshot in snapshots) == 3 * PEERS * ROUNDS
    observer = federation.ledger(0)
    for store, engine in zip(stores, engines, strict=True):
        me = engine.identity.address
        outside = [number for number in range(1, ROUNDS) if me not in observer.committee(number)]
        inside = [number for number in range(1, ROUNDS + 1) if me in observer.committee(number)]
        # One miss per model downloaded from outside the committee and per update of a round merged inside.
        assert store.misses == len(outside) + PEERS * len(inside)
    assert content_id.compute(federation.store.get(results[0])) == results[0]
