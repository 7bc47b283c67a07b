"""A merge fetches and verifies its round's updates in parallel (issue 12), and merges them as if one by one.

On the in-memory twins (tests/in_memory_federation.py) with committees, so that members fetch every update
while merging (nobody prefetches a round it may not merge). Rejections in the fetch threads are covered
by the engine tests with bad updates (tests/test_round_engine_peers.py, tests/test_round_engine.py).
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from agent.engine.round_engine import EngineOptions
from agent.engine.statistics import EngineStatistics
from agent.errors import ConfigurationError
from agent.ports.content_store import ContentStore
from tests.in_memory_federation import InMemoryFederation
from tests.test_committee_rounds import COMMITTEE, OPTIONS, PEERS
from tests.test_round_engine_peers import ROUNDS, TINY, shard

OVERLAP_WAIT_SECONDS = 5.0  # a get waits at most this long for a second one (a sequential merge would)


class OverlapStore:
    """Until two gets of updates were in flight at once, each ``get`` of an update waits for another one
    (at most OVERLAP_WAIT_SECONDS); records the most gets in flight at once."""

    def __init__(self, inner: ContentStore, is_update: Callable[[str], bool]) -> None:
        self._inner = inner
        self._is_update = is_update
        self._changed = threading.Condition()
        self.in_flight = 0
        self.most_in_flight = 0

    def __getattr__(self, name: str) -> object:
        return getattr(self._inner, name)

    def get(self, cid: str) -> bytes:
        if not self._is_update(cid):
            return self._inner.get(cid)
        with self._changed:
            self.in_flight += 1
            self.most_in_flight = max(self.most_in_flight, self.in_flight)
            self._changed.notify_all()
            self._changed.wait_for(lambda: self.most_in_flight > 1, timeout=OVERLAP_WAIT_SECONDS)
        try:
            return self._inner.get(cid)
        finally:
            with self._changed:
                self.in_flight -= 1


def run_federation(directory: Path, fetch_workers: int) -> tuple[set[str], list[OverlapStore]]:
    """The peers' final CIDs, and their stores: OverlapStores when several fetches may run at once."""
    federation = InMemoryFederation(TINY, peers=PEERS, work_directory=directory, **COMMITTEE)
    coordinator = federation.coordinator

    def is_update(cid: str) -> bool:
        number = coordinator.current_round().number
        return any(submission.update_cid == cid for submission in coordinator.submissions(number))

    stores = [OverlapStore(federation.store, is_update) for _ in range(PEERS)] if fetch_workers > 1 else []
    options = dataclasses.replace(OPTIONS, fetch_workers=fetch_workers)
    engines = [
        federation.engine(index, shard(index), options=options, store=stores[index] if stores else None)  # type: ignore[arg-type]
        for index in range(PEERS)
    ]
    results = federation.run(engines)
    assert len(results) == PEERS and len(federation.ledger(0).round_log()) == ROUNDS
    return set(results.values()), stores


def test_a_member_fetches_a_rounds_updates_at_once_and_merges_what_one_at_a_time_gives(
    tmp_path: Path,
) -> None:
    parallel, stores = run_federation(tmp_path / "parallel", fetch_workers=4)
    members = [store for store in stores if store.most_in_flight > 0]  # the peers that merged a round
    assert members and all(store.most_in_flight > 1 for store in members)
    sequential, _ = run_federation(tmp_path / "sequential", fetch_workers=1)
    assert len(parallel) == 1 and parallel == sequential, "the merge must not depend on how it fetched"


def test_fetch_workers_must_be_at_least_one() -> None:
    with pytest.raises(ConfigurationError, match="fetch_workers"):
        EngineOptions(fetch_workers=0)


@pytest.mark.parametrize(
    ("ticks", "counted"),
    [
        # Two threads: fetch 0 to 3 and verify 0 to 1 overlap in 2 s of wall time: each counts half.
        ((0.0, 0.0, 3.0, 0.0, 1.0, 2.0), {"fetch": 1.5, "verify": 0.5}),
        # One thread: fetch 0 to 1, then verify 1 to 2, in 2.5 s: nothing overlapped, both count in full.
        ((0.0, 0.0, 1.0, 1.0, 2.0, 2.5), {"fetch": 1.0, "verify": 1.0}),
    ],
)
def test_overlapping_steps_count_the_wall_time_split_as_the_threads_spent_it(
    ticks: tuple[float, ...], counted: dict[str, float]
) -> None:
    clock = iter(ticks)  # the overlapping body starts, each step starts and ends, the body ends
    statistics = EngineStatistics(clock=lambda: next(clock))
    with statistics.overlapping() as timer:
        with timer.measure("fetch"):
            pass
        with timer.measure("verify"):
            pass
    assert statistics.snapshot().protocol_step_seconds == counted
