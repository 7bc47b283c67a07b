"""The in-memory ledger twin behaves as the Coordinator contract: the same scenarios, run against both.

Each test gets a ``Federation`` of one kind: ``contract`` (EthereumLedger on the in-process chain) or
``in-memory`` (agent.adapters.in_memory_ledger), and asserts the same outcome on either, so that tests which
run the round engine on the twin test what a real chain would do.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import pytest
from web3 import Web3

from agent import content_id
from agent.adapters.ethereum_ledger import EthereumLedger, deploy_coordinator
from agent.adapters.in_memory_ledger import InMemoryCoordinator
from agent.errors import ContractRevertError
from agent.ports.ledger import FederationSettings, Ledger, Membership, RoundPhase
from tests.services.anvil import TestChain
from tests.test_coordinator_contract import make_settings

GENESIS = content_id.compute(b"genesis model")


def settings(**changes: Any) -> FederationSettings:
    values = {
        "rounds_per_stage": 1,
        "quorum": 3,
        "round_duration_seconds": 300,
        "genesis_model_cid": GENESIS,
        "maximum_samples": 1000,
    }
    return make_settings(**{**values, **changes})


@dataclasses.dataclass
class Federation:
    """Participants' ledgers on one coordinator, the deployer's allowlist call, and the clock."""

    ledgers: list[Ledger]
    allow: Callable[[str], None]
    advance_time: Callable[[int], None]


class ManualClock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(params=["contract", "in-memory"])
def deploy(request: pytest.FixtureRequest) -> Callable[..., Federation]:
    def contract(peers: int, **changes: Any) -> Federation:
        chain = TestChain("embedded", request.getfixturevalue("embedded_web3"))
        web3: Web3 = chain.web3
        deployer = chain.new_account()
        address = deploy_coordinator(web3, deployer, settings(**changes))
        ledgers: list[Ledger] = [EthereumLedger(web3, address, chain.new_account()) for _ in range(peers)]
        owner = EthereumLedger(web3, address, deployer)
        return Federation(ledgers, owner.allow, chain.advance_time)

    def in_memory(peers: int, **changes: Any) -> Federation:
        clock = ManualClock()
        coordinator = InMemoryCoordinator(settings(**changes), deployer="0x" + "11" * 20, clock=clock)
        accounts = [Web3.to_checksum_address(f"0x{index + 1:040x}") for index in range(peers)]

        def advance(seconds: int) -> None:
            clock.now += seconds

        return Federation([coordinator.ledger(account) for account in accounts], coordinator.allow, advance)

    return contract if request.param == "contract" else in_memory


def refusal(call: Callable[[], object]) -> str:
    """The name of the custom error with which the coordinator refuses ``call``."""
    with pytest.raises(ContractRevertError) as caught:
        call()
    return (caught.value.reason or "").split("(")[0]


def update(name: str) -> str:
    return content_id.compute(name.encode())


def test_a_quorum_closes_submission_and_a_strict_majority_finalizes(
    deploy: Callable[..., Federation],
) -> None:
    federation = deploy(3)
    first, second, third = federation.ledgers
    assert all(isinstance(ledger, Ledger) for ledger in federation.ledgers)  # the port, as the engine needs
    for index, ledger in enumerate(federation.ledgers):
        ledger.register()
        assert ledger.current_round().phase is RoundPhase.SUBMISSION
        ledger.submit_update(1, update(f"update {index}"), 10 + index)
    state = first.current_round()
    assert (state.phase, state.submission_count) == (RoundPhase.ATTESTATION, 3)
    assert [submission.samples for submission in first.submissions(1)] == [10, 11, 12]
    merged = update("merged")
    first.attest_model(1, merged)
    third.attest_model(1, update("another model"))
    assert first.canonical_model(1) is None
    second.attest_model(1, merged)
    assert first.canonical_model(1) == merged == first.latest_canonical_model()
    state = first.current_round()
    assert (state.number, state.stage, state.finalized_rounds, state.phase) == (
        2,
        2,
        1,
        RoundPhase.SUBMISSION,
    )
    assert [(entry.number, entry.stage, entry.model_cid) for entry in first.round_log()] == [(1, 1, merged)]
    assert [attestation.model_cid for attestation in first.attestations(1)] == [
        merged,
        update("another model"),
        merged,
    ]
    records = [first.participant_record(ledger.account) for ledger in federation.ledgers]
    assert [(record.attested_canonical, record.attested_other) for record in records] == [
        (1, 0),
        (1, 0),
        (0, 1),
    ]


def test_the_coordinator_refuses_what_the_contract_refuses(deploy: Callable[..., Federation]) -> None:
    first, second, outsider = deploy(3, quorum=2).ledgers
    first.register()
    second.register()
    assert refusal(lambda: first.submit_update(2, update("a"), 5)) == "CoordinatorRoundNotCurrent"
    assert refusal(lambda: first.submit_update(1, update("a"), 1001)) == "CoordinatorSampleCountTooLarge"
    assert refusal(lambda: first.submit_update(1, update("a"), 0)) == "CoordinatorInvalidSampleCount"
    assert refusal(lambda: outsider.submit_update(1, update("a"), 5)) == "CoordinatorNotParticipant"
    first.submit_update(1, update("a"), 5)
    assert refusal(lambda: first.submit_update(1, update("b"), 5)) == "CoordinatorDuplicateSubmission"
    assert refusal(lambda: second.submit_update(1, update("a"), 5)) == "CoordinatorDuplicateUpdate"
    assert refusal(lambda: first.attest_model(1, update("m"))) == "CoordinatorAttestationClosed"
    assert refusal(lambda: first.register()) == "CoordinatorAlreadyRegistered"
    second.submit_update(1, update("b"), 5)
    assert refusal(lambda: outsider.attest_model(1, update("m"))) == "CoordinatorNotSubmitter"
    first.attest_model(1, update("m"))
    assert refusal(lambda: first.attest_model(1, update("m"))) == "CoordinatorDuplicateAttestation"
    assert refusal(first.close_expired_round) == "CoordinatorRoundNotExpired"
    with pytest.raises(ValueError):
        first.submit_update(1, "not a cid", 5)


def test_deadlines_close_submission_then_fail_the_round_and_withholding_suspends(
    deploy: Callable[..., Federation],
) -> None:
    federation = deploy(2, strike_limit=1, suspension_rounds=2)
    first, second = federation.ledgers
    first.register()
    second.register()
    first.submit_update(1, update("a"), 5)
    second.submit_update(1, update("b"), 5)
    federation.advance_time(301)
    first.close_expired_round()  # submission closes with the two updates that arrived
    assert first.current_round().phase is RoundPhase.ATTESTATION
    first.attest_model(1, update("m"))
    federation.advance_time(301)
    second.close_expired_round()  # attestation expires without a majority of two: the round fails
    summary = first.round_summary(1)
    assert (summary.phase, summary.attestation_expired, summary.canonical_model_cid) == (
        RoundPhase.FAILED,
        True,
        None,
    )
    state = first.current_round()
    assert (state.number, state.stage, state.finalized_rounds) == (2, 1, 0)
    record = first.participant_record(second.account)
    assert (record.withheld, record.suspended_until_round, record.suspensions) == (1, 3, 1)
    assert first.participant_record(first.account).withheld == 0
    assert refusal(lambda: second.submit_update(2, update("c"), 5)) == "CoordinatorSuspended"
    first.submit_update(2, update("c"), 5)
    federation.advance_time(301)
    first.close_expired_round()
    first.attest_model(2, update("m2"))  # one submitter of one: a majority
    assert first.canonical_model(2) == update("m2")
    assert refusal(lambda: first.round_summary(9)) == "CoordinatorUnknownRound"


def test_a_round_without_updates_fails_at_its_deadline(deploy: Callable[..., Federation]) -> None:
    federation = deploy(1)
    (only,) = federation.ledgers
    only.register()
    federation.advance_time(301)
    only.close_expired_round()
    assert only.round_summary(1).phase is RoundPhase.FAILED
    assert (only.current_round().number, only.latest_canonical_model()) == (2, GENESIS)


def test_an_allowlist_admits_only_the_accounts_the_deployer_allows(deploy: Callable[..., Federation]) -> None:
    federation = deploy(2, membership=Membership.ALLOWLIST)
    admitted, stranger = federation.ledgers
    federation.allow(admitted.account)
    admitted.register()
    assert refusal(stranger.register) == "CoordinatorNotAllowed"
    assert admitted.participants() == (admitted.account,) and not admitted.is_participant(stranger.account)


def test_a_committee_finalizes_alone_and_only_its_silent_members_withhold(
    deploy: Callable[..., Federation],
) -> None:
    """5 submitters above a threshold of 4: a committee of 3 merges; outsiders may not attest."""
    federation = deploy(
        5, quorum=5, committee_threshold=4, committee_size=3, strike_limit=1, suspension_rounds=2
    )
    for index, ledger in enumerate(federation.ledgers):
        ledger.register()
        ledger.submit_update(1, update(f"update {index}"), 10)
    drawn = federation.ledgers[0].committee(1)
    assert len(set(drawn)) == 3
    members = [next(ledger for ledger in federation.ledgers if ledger.account == member) for member in drawn]
    outsiders = [ledger for ledger in federation.ledgers if ledger.account not in drawn]
    assert outsiders[0].draw_committee(1)  # anyone may draw
    assert federation.ledgers[0].committee(1) == drawn
    assert refusal(lambda: outsiders[0].attest_model(1, update("m"))) == "CoordinatorNotCommitteeMember"
    members[0].attest_model(1, update("m"))
    members[1].attest_model(1, update("forged"))
    assert members[0].canonical_model(1) is None
    federation.advance_time(301)
    members[0].close_expired_round()  # 1 of 3 each: no majority by the deadline
    records = {ledger.account: members[0].participant_record(ledger.account) for ledger in federation.ledgers}
    assert records[members[2].account].withheld == 1
    assert all(records[ledger.account].withheld == 0 for ledger in [*members[:2], *outsiders])
    for index, ledger in enumerate([*members[:2], *outsiders]):  # the silent member is suspended
        ledger.submit_update(2, update(f"round 2 {index}"), 10)
    federation.advance_time(301)
    members[0].close_expired_round()  # 4 submissions, not above the threshold: everyone merges
    assert members[0].committee(2) == ()
    for ledger in [*members[:2], *outsiders][:3]:
        ledger.attest_model(2, update("m2"))
    assert members[0].canonical_model(2) == update("m2")


def test_committee_members_attest_only_once_someone_drew_the_committee(
    deploy: Callable[..., Federation],
) -> None:
    federation = deploy(5, quorum=5, committee_threshold=4, committee_size=3)
    first = federation.ledgers[0]
    for index, ledger in enumerate(federation.ledgers):
        ledger.register()
        if index < 4:
            ledger.submit_update(1, update(f"update {index}"), 10)
    assert refusal(lambda: first.draw_committee(1)) == "CoordinatorCommitteeNotDrawable"  # submission
    federation.ledgers[4].submit_update(1, update("update 4"), 10)
    drawn = first.committee(1)
    members = [next(ledger for ledger in federation.ledgers if ledger.account == member) for member in drawn]
    assert refusal(lambda: members[0].attest_model(1, update("m"))) == "CoordinatorCommitteeNotDrawn"
    assert members[1].draw_committee(1)
    assert not members[0].draw_committee(1)  # lost the race: harmless
    for member in members[:2]:
        member.attest_model(1, update("m"))
    assert first.canonical_model(1) == update("m")
    assert not first.draw_committee(1)  # a finalized committee round was drawn
    assert refusal(lambda: first.draw_committee(2)) == "CoordinatorCommitteeNotDrawable"  # nothing closed
    assert refusal(lambda: first.draw_committee(9)) == "CoordinatorUnknownRound"
    for index, ledger in enumerate(federation.ledgers[:4]):  # round 2: 4 submissions, everyone merges
        ledger.submit_update(2, update(f"round 2 {index}"), 10)
    federation.advance_time(301)
    first.close_expired_round()
    assert first.committee(2) == ()
    assert refusal(lambda: first.draw_committee(2)) == "CoordinatorCommitteeNotDrawable"
