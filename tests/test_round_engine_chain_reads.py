"""How often an engine reads the chain (issue 12): the current state once per pass of its loop, and little
else per round, however often it polls.

On the in-memory twins (tests/in_memory_federation.py): each peer's ledger view counts the reads it serves.
The engines poll every 10 ms, so a read repeated on every pass would show up hundreds of times.
"""

from __future__ import annotations

import collections
from pathlib import Path

import pytest

from agent.engine.round_engine import EngineOptions
from agent.ports.ledger import Ledger
from tests.in_memory_federation import InMemoryFederation
from tests.test_committee_rounds import COMMITTEE
from tests.test_committee_rounds import PEERS as COMMITTEE_PEERS
from tests.test_round_engine_peers import ROUNDS, TINY, shard

WRITES = frozenset({"register", "leave", "submit_update", "attest_model", "close_expired_round"})
OPTIONS = EngineOptions(poll_seconds=0.01, retry_seconds=0.1)


class CountingLedger:
    """Passes every call to ``inner`` and counts the reads by method name."""

    def __init__(self, inner: Ledger) -> None:
        self._inner = inner
        self.reads: collections.Counter[str] = collections.Counter()

    def __getattr__(self, name: str) -> object:
        attribute = getattr(self._inner, name)
        if not callable(attribute) or name in WRITES:
            return attribute

        def counted(*arguments: object) -> object:
            self.reads[name] += 1
            return attribute(*arguments)

        return counted


# Reads besides the current state, per peer and round, at most: its record (1); the round's submissions
# to see whether it submitted (1), to check announcements (at most one per other peer), to merge (1) and
# to keep the new round's updates (1); the latest canonical model (1 per finalization, 2 at the start);
# one canonical model for retention; the committee twice (to merge, to review) and the participants once
# (whether a committee is expected). Measured: about 8 (3 peers) and 10 (5, committee); before the chain
# cache, 34 and 55, growing with every extra pass of the loop.
def most_reads_per_round(peers: int) -> int:
    return 1 + (1 + (peers - 1) + 1 + 1) + 2 + 1 + 2 + 1


@pytest.mark.parametrize(("peers", "committee"), [(3, {}), (COMMITTEE_PEERS, COMMITTEE)])
def test_an_engine_reads_the_chain_a_bounded_number_of_times_per_round(
    tmp_path: Path, peers: int, committee: dict[str, int]
) -> None:
    federation = InMemoryFederation(TINY, peers=peers, work_directory=tmp_path, **committee)
    ledgers = [CountingLedger(federation.ledger(index)) for index in range(peers)]
    engines = [
        federation.engine(index, shard(index), ledger=ledgers[index], options=OPTIONS)  # type: ignore[arg-type]
        for index in range(peers)
    ]
    results = federation.run(engines)
    assert len(results) == peers and len(set(results.values())) == 1
    assert len(federation.ledger(0).round_log()) == ROUNDS
    for ledger in ledgers:
        others = sum(count for name, count in ledger.reads.items() if name != "current_round")
        assert others <= most_reads_per_round(peers) * ROUNDS, dict(ledger.reads)
        assert ledger.reads["settings"] <= 1 and ledger.reads["is_participant"] <= 1
        assert ledger.reads["participant_record"] <= ROUNDS


def test_the_cache_keeps_submissions_only_once_their_round_is_closed(tmp_path: Path) -> None:
    federation = InMemoryFederation(TINY, peers=1, work_directory=tmp_path, quorum=2)
    counting = CountingLedger(federation.ledger(0))
    engine = federation.engine(0, shard(0), ledger=counting)  # type: ignore[arg-type]
    cache, own, second = engine.chain, federation.ledger(0), federation.ledger(1)
    own.register()
    cache.current_round()
    assert cache.submissions(1) == () and cache.submissions(1) == ()
    assert counting.reads["submissions"] == 2  # open: read each time
    own.submit_update(1, federation.store.put(b"an update"), 16)
    second.register()
    second.submit_update(1, federation.store.put(b"another update"), 16)  # the quorum: submission closes
    assert len(cache.submissions(1)) == 2  # the state read last still says open: read again
    cache.current_round()
    assert len(cache.submissions(1)) == 2 and len(cache.submissions(1)) == 2
    assert counting.reads["submissions"] == 4  # closed: read once more, then kept
    assert cache.settings() == cache.settings()
    assert counting.reads["settings"] == 2  # the engine's own read when it started, and one for the cache
