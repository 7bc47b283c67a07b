"""Attacks by registered participants that play by the format and against the federation (issue 10).

Whole federations of round engines on the embedded services (in-process chain with the Coordinator, MQTT
broker, local content store), the tiny recipe of the engine tests. A malicious peer is an honest engine
given a misbehaving ledger wrapper: it trains and submits like everyone else, then withholds its
attestation or attests a model of its own. Each test checks the chain's record and that the honest peers
end with the same trained model.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Mapping
from pathlib import Path

import torch

from agent.adapters.ethereum_ledger import cid_from_chain
from agent.commands.local_federation import LocalFederation
from agent.engine.federation import DEFAULT_STRIKE_LIMIT, DEFAULT_SUSPENSION_ROUNDS
from agent.engine.round_engine import RoundEngine
from agent.learning.model_file import decode_model
from agent.learning.simulation import initial_state
from agent.ports.ledger import Ledger, RoundPhase
from tests.test_round_engine import TINY, shard

ROUND_SECONDS = 15  # each phase's window: short, since the attacks make honest peers wait for deadlines
TIMEOUT_SECONDS = 240.0


class WithholdingLedger:
    """Submits like an honest peer but never attests: the round cannot reach a majority without it."""

    def __init__(self, inner: Ledger) -> None:
        self._inner = inner
        self.withheld = 0

    def __getattr__(self, name: str) -> object:
        return getattr(self._inner, name)

    def attest_model(self, round_number: int, model_cid: str) -> None:
        self.withheld += 1


class DissentingLedger:
    """Attests a model of its own instead of the one its engine merged (all attackers agree on it)."""

    def __init__(self, inner: Ledger) -> None:
        self._inner = inner

    def __getattr__(self, name: str) -> object:
        return getattr(self._inner, name)

    def attest_model(self, round_number: int, model_cid: str) -> None:
        forged = cid_from_chain(0x55, hashlib.sha256(f"forged model {round_number}".encode()).digest())
        self._inner.attest_model(round_number, forged)


def run_federation(
    federation: LocalFederation, malicious: Mapping[int, type[WithholdingLedger] | type[DissentingLedger]]
) -> tuple[list[RoundEngine], dict[int, str]]:
    """Run every peer, the ``malicious`` ones through their wrapper; the honest ones' final model CIDs."""
    engines = []
    for index in range(len(federation.accounts)):
        engine = federation.engine(index, shard(index))
        if index in malicious:
            engine.ledger = malicious[index](engine.ledger)  # type: ignore[assignment]
        engines.append(engine)
    stop = threading.Event()
    threads, results = federation.start(engines, stop)
    deadline = time.monotonic() + TIMEOUT_SECONDS
    for index, thread in enumerate(threads):
        if index not in malicious:
            thread.join(max(0.0, deadline - time.monotonic()))
    stop.set()
    for thread in threads:
        thread.join(30)
    honest = {index: cid for index, cid in results.items() if index not in malicious}
    assert len(honest) == len(engines) - len(malicious), "an honest peer did not finish in time"
    return engines, honest


def assert_trained_and_agreed(federation: LocalFederation, honest: dict[int, str]) -> None:
    assert len(set(honest.values())) == 1, honest
    final = next(iter(honest.values()))
    assert final == federation.observer.latest_canonical_model()
    state, _ = decode_model(federation.store.get(final))
    genesis = initial_state(TINY)
    assert all(not torch.equal(state[name], genesis[name]) for name in state if name.startswith("stages."))


def test_a_withholding_half_is_suspended_and_the_federation_finalizes_again(tmp_path: Path) -> None:
    """3 of 6 never attest: with the default strike limit (2), two rounds fail at their attestation
    deadline, the withholders' next submission is refused (suspended for the default 4 rounds) and every
    following round finalizes with the honest half: progress resumes after DEFAULT_STRIKE_LIMIT rounds."""
    with LocalFederation(
        TINY, peers=6, rounds_per_stage=1, work_directory=tmp_path, round_duration_seconds=ROUND_SECONDS
    ) as federation:
        withholders = {3: WithholdingLedger, 4: WithholdingLedger, 5: WithholdingLedger}
        engines, honest = run_federation(federation, withholders)
        observer = federation.observer
        log = observer.round_log()
        summaries = [observer.round_summary(number) for number in range(1, log[-1].number + 1)]
        withheld = [s.number for s in summaries if s.phase is RoundPhase.FAILED and s.submission_count]
        finalized = [entry.number for entry in log]
        print(f"\nwithholding 3 of 6: rounds failed without a majority {withheld}, finalized {finalized}")
        # Every withheld round strikes the withholders; the strike limit's worth of them suspends them, and
        # from the next round on every round finalizes: progress resumes after DEFAULT_STRIKE_LIMIT rounds.
        # (Round 1 may go either way: it opens at deployment and can expire while the six peers first train.)
        assert len(withheld) == DEFAULT_STRIKE_LIMIT
        assert withheld == list(range(withheld[0], withheld[0] + DEFAULT_STRIKE_LIMIT))
        last_strike = withheld[-1]
        assert [number for number in finalized if number > last_strike] == list(
            range(last_strike + 1, finalized[-1] + 1)
        )
        for index in withholders:
            address = federation.accounts[index].address
            record = observer.participant_record(address)
            # A withholder that missed the submission window of a withheld round has one strike fewer.
            struck = [number for number in withheld if address in _submitters(observer, number)]
            assert record.withheld == len(struck) >= 1
            assert record.suspensions == len(struck) // DEFAULT_STRIKE_LIMIT
            if record.suspensions:
                assert record.suspended_until_round == struck[-1] + DEFAULT_SUSPENSION_ROUNDS
                assert engines[index].statistics.snapshot().rounds_suspended >= 1
                assert address not in _submitters(observer, struck[-1] + 1)
        honest_records = [observer.participant_record(federation.accounts[index].address) for index in honest]
        for record in honest_records:
            assert (record.attested_other, record.withheld, record.suspended_until_round) == (0, 0, 0)
        # 2 of 3 submitters finalize a round: the slowest honest attestation may come too late to count
        resumed_rounds = finalized[-1] - last_strike
        assert sum(record.attested_canonical for record in honest_records) >= 2 * resumed_rounds
        assert_trained_and_agreed(federation, honest)


def _submitters(observer: Ledger, round_number: int) -> set[str]:
    return {submission.participant for submission in observer.submissions(round_number)}


def test_a_dissenting_two_of_five_never_stalls_the_federation(tmp_path: Path) -> None:
    """2 of 5 attest a forged model every round: 3 honest attestations are a majority at once, so no
    round fails; the dissenters are struck, then suspended, and the honest peers agree."""
    # A longer window than the other test's: round 1 must not expire while the five peers first train.
    with LocalFederation(
        TINY, peers=5, rounds_per_stage=1, work_directory=tmp_path, round_duration_seconds=3 * ROUND_SECONDS
    ) as federation:
        dissenters = {3: DissentingLedger, 4: DissentingLedger}
        _, honest = run_federation(federation, dissenters)
        observer = federation.observer
        rounds = range(1, observer.current_round().number + 1)
        summaries = [observer.round_summary(number) for number in rounds]
        print(f"\ndissenting 2 of 5: {[(s.number, s.phase.name, s.submission_count) for s in summaries]}")
        assert [entry.number for entry in observer.round_log()] == [1, 2, 3]  # not one failed round
        for index in dissenters:
            record = observer.participant_record(federation.accounts[index].address)
            # A forged attestation that arrives after the honest majority finalized is refused (not counted)
            assert record.attested_other >= 1 and record.attested_canonical == 0
            assert record.suspensions == record.attested_other // DEFAULT_STRIKE_LIMIT
        assert_trained_and_agreed(federation, honest)
