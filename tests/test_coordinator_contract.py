"""The Coordinator contract: every revert, every event, the deadline rule, and the gas of every call.

Each test runs against the embedded chain and against anvil (the ``chain`` fixture). Transactions go
through the Ethereum ledger adapter, which decodes reverts into ``ContractRevertError.reason``; events are
read from the adapter's last receipt.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import pytest
from eth_utils.crypto import keccak
from web3 import Web3
from web3.contract import Contract
from web3.logs import DISCARD

from agent.adapters.committee_draw import committee_seed, draw_positions, seed_block
from agent.adapters.ethereum_ledger import (
    EthereumLedger,
    RevertDecoder,
    cid_from_chain,
    cid_to_chain,
    deploy_coordinator,
)
from agent.errors import ConfigurationError, ContractRevertError
from agent.ports.ledger import FederationSettings, Membership, RoundPhase, TrainingMode
from coordinator_contract.artifact import load_artifact
from tests.services.anvil import TestChain

RAW = 0x55
DAG_PB = 0x70
DURATION = 600
NO_SUBMISSIONS = 0
NO_MAJORITY = 1


def cid_of(label: str, codec: int = RAW) -> str:
    return cid_from_chain(codec, hashlib.sha256(label.encode()).digest())


GENESIS = cid_of("genesis")


def make_settings(**changes: Any) -> FederationSettings:
    settings = FederationSettings(
        training_mode=TrainingMode.LAYER_WISE,
        stages=2,
        rounds_per_stage=2,
        quorum=2,
        round_duration_seconds=DURATION,
        model_spec_digest=hashlib.sha256(b"spec").digest(),
        genesis_model_cid=GENESIS,
        federation_seed=42,
        membership=Membership.OPEN,
        maximum_samples=10**6,
        strike_limit=0,
        suspension_rounds=0,
    )
    return dataclasses.replace(settings, **changes)


@dataclass
class Federation:
    chain: TestChain
    deployer: EthereumLedger
    peers: list[EthereumLedger]
    contract: Contract

    def events(self, ledger: EthereumLedger, name: str) -> list[dict[str, Any]]:
        """The arguments of every ``name`` event in ``ledger``'s last transaction."""
        assert ledger.last_receipt is not None
        logs = self.contract.events[name]().process_receipt(ledger.last_receipt, errors=DISCARD)
        return [dict(log["args"]) for log in logs]

    def deployment_events(self, name: str) -> list[dict[str, Any]]:
        return [dict(log["args"]) for log in self.contract.events[name]().get_logs(from_block=0)]

    def submit_all(self, round_number: int, count: int) -> None:
        for index, peer in enumerate(self.peers[:count]):
            peer.submit_update(round_number, cid_of(f"update {round_number} {index}"), 100 + index)


def deploy(chain: TestChain, peers: int = 3, register: bool = True, **changes: Any) -> Federation:
    owner = chain.new_account()
    address = deploy_coordinator(chain.web3, owner, make_settings(**changes))
    ledgers = [EthereumLedger(chain.web3, address, chain.new_account()) for _ in range(peers)]
    if register:
        for ledger in ledgers:
            ledger.register()
    contract = chain.web3.eth.contract(address=address, abi=load_artifact().abi)  # type: ignore[call-overload]
    return Federation(chain, EthereumLedger(chain.web3, address, owner), ledgers, contract)


@contextmanager
def reverts(reason: str) -> Iterator[None]:
    with pytest.raises(ContractRevertError) as caught:
        yield
    assert caught.value.reason == reason


def digest_of(cid: str) -> bytes:
    return cid_to_chain(cid)[1]


# ------------------------------------------------------------------------------------------- deployment


def test_deployment_fixes_settings_and_opens_round_one(chain: TestChain) -> None:
    federation = deploy(chain, peers=0, stages=3, rounds_per_stage=4, quorum=5, federation_seed=2**64 - 1)
    contract = federation.contract.functions
    assert federation.deployer.settings() == make_settings(
        stages=3, rounds_per_stage=4, quorum=5, federation_seed=2**64 - 1
    )
    assert contract.deployer().call() == federation.deployer.account
    assert (contract.currentRound().call(), contract.currentStage().call()) == (1, 1)
    assert (contract.finalizedRounds().call(), contract.trainingComplete().call()) == (0, False)
    opened = federation.deployment_events("RoundOpened")
    state = federation.deployer.current_round()
    assert opened == [{"round": 1, "stage": 1, "deadline": state.deadline}]
    assert state.deadline - state.chain_time <= DURATION
    assert federation.deployer.latest_canonical_model() == GENESIS


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"training_mode": 3}, "CoordinatorInvalidTrainingMode(3)"),
        ({"stages": 0}, "CoordinatorInvalidSchedule(0, 2)"),
        ({"rounds_per_stage": 0}, "CoordinatorInvalidSchedule(2, 0)"),
        ({"quorum": 0}, "CoordinatorInvalidQuorum(0)"),
        ({"round_duration_seconds": 0}, "CoordinatorInvalidRoundDuration(0)"),
        ({"membership": 3}, "CoordinatorInvalidMembership(3)"),
        ({"maximum_samples": 0}, "CoordinatorInvalidMaximumSamples(0)"),
        ({"strike_limit": 2, "suspension_rounds": 0}, "CoordinatorInvalidSuspension(2, 0)"),
        ({"strike_limit": 256, "suspension_rounds": 1}, "CoordinatorInvalidSuspension(256, 1)"),
        ({"committee_threshold": 2, "committee_size": 3}, "CoordinatorInvalidCommittee(2, 3)"),
        ({"committee_threshold": 300, "committee_size": 257}, "CoordinatorInvalidCommittee(300, 257)"),
        (
            {"genesis_model_cid": cid_from_chain(RAW, bytes(32))},
            f"CoordinatorUnsupportedCid(85, 0x{'00' * 32})",
        ),
    ],
)
def test_constructor_refuses_bad_settings(chain: TestChain, changes: dict[str, Any], reason: str) -> None:
    with pytest.raises(ConfigurationError) as caught:
        deploy_coordinator(chain.web3, chain.new_account(), make_settings(**changes))
    assert isinstance(caught.value.__cause__, ContractRevertError)
    assert caught.value.__cause__.reason == reason
    assert reason in str(caught.value)


def test_constructor_refuses_unsupported_genesis_codec(chain: TestChain) -> None:
    artifact = load_artifact()
    factory = chain.web3.eth.contract(abi=artifact.abi, bytecode=artifact.bytecode)
    digest = hashlib.sha256(b"genesis").digest()
    arguments = (0, 2, 2, 2, DURATION, bytes(32), 0x71, digest, 1, 1, 10**6, 0, 0, 0, 0)
    with pytest.raises(Exception) as caught:
        factory.constructor(arguments).estimate_gas({"from": chain.new_account().address})
    assert (
        RevertDecoder(artifact.abi).reason(caught.value)
        == f"CoordinatorUnsupportedCid(113, 0x{digest.hex()})"
    )


# ------------------------------------------------------------------------------------------- membership


def test_register_and_leave_emit_events_and_keep_the_list(chain: TestChain) -> None:
    federation = deploy(chain, peers=3, register=False)
    first, second, third = federation.peers
    for peer in federation.peers:
        peer.register()
        assert federation.events(peer, "ParticipantRegistered") == [{"participant": peer.account}]
    assert set(first.participants()) == {first.account, second.account, third.account}

    second.leave()  # from the middle: the last one moves into its place
    assert federation.events(second, "ParticipantLeft") == [{"participant": second.account}]
    assert sorted(first.participants()) == sorted([first.account, third.account])
    assert not first.is_participant(second.account)
    third.leave()
    first.leave()
    assert first.participants() == ()
    second.register()
    assert first.participants() == (second.account,)


def test_register_twice_reverts(chain: TestChain) -> None:
    federation = deploy(chain, peers=1)
    peer = federation.peers[0]
    with reverts(f"CoordinatorAlreadyRegistered({peer.account})"):
        peer.register()


def test_leave_when_not_registered_reverts(chain: TestChain) -> None:
    federation = deploy(chain, peers=1, register=False)
    peer = federation.peers[0]
    with reverts(f"CoordinatorNotParticipant({peer.account})"):
        peer.leave()


def test_closed_membership_needs_the_deployers_allowance(chain: TestChain) -> None:
    federation = deploy(chain, peers=2, register=False, membership=Membership.ALLOWLIST)
    peer, stranger = federation.peers
    isallowed = federation.contract.functions.isAllowed
    with reverts(f"CoordinatorNotAllowed({peer.account})"):
        peer.register()

    federation.deployer.allow(peer.account)
    assert federation.events(federation.deployer, "AccountAllowed") == [{"account": peer.account}]
    assert isallowed(peer.account).call() and not isallowed(stranger.account).call()
    peer.register()
    assert peer.is_participant(peer.account)

    federation.deployer.disallow(peer.account)
    assert federation.events(federation.deployer, "AccountDisallowed") == [{"account": peer.account}]
    assert federation.events(federation.deployer, "ParticipantLeft") == [{"participant": peer.account}]
    assert peer.participants() == ()
    with reverts(f"CoordinatorNotAllowed({peer.account})"):
        peer.register()


def test_disallowing_an_unregistered_account_removes_nobody(chain: TestChain) -> None:
    federation = deploy(chain, peers=1, register=False, membership=Membership.ALLOWLIST)
    federation.deployer.disallow(federation.peers[0].account)
    assert federation.events(federation.deployer, "ParticipantLeft") == []


def test_deploy_allows_the_allowlist(chain: TestChain) -> None:
    owner, member = chain.new_account(), chain.new_account()
    settings = make_settings(membership=Membership.ALLOWLIST)
    address = deploy_coordinator(chain.web3, owner, settings, allowlist=[member.address])
    EthereumLedger(chain.web3, address, member).register()


def test_only_the_deployer_keeps_the_allowlist(chain: TestChain) -> None:
    federation = deploy(chain, peers=1, register=False, membership=Membership.ALLOWLIST)
    peer = federation.peers[0]
    with reverts(f"CoordinatorNotDeployer({peer.account})"):
        peer.allow(peer.account)
    with reverts(f"CoordinatorNotDeployer({peer.account})"):
        peer.disallow(peer.account)


def test_open_membership_has_no_allowlist(chain: TestChain) -> None:
    federation = deploy(chain, peers=1, register=False)
    peer = federation.peers[0]
    assert federation.contract.functions.isAllowed(peer.account).call()
    with reverts("CoordinatorMembershipOpen()"):
        federation.deployer.allow(peer.account)
    with reverts("CoordinatorMembershipOpen()"):
        federation.deployer.disallow(peer.account)


def test_the_sybil_attempt_fails_in_the_default_mode(chain: TestChain) -> None:
    """The issue's attack: one party registers 3 of 5 accounts. With the allowlist none of them gets in."""
    owner = chain.new_account()
    honest = [chain.new_account() for _ in range(2)]
    address = deploy_coordinator(
        chain.web3,
        owner,
        make_settings(membership=Membership.ALLOWLIST),
        allowlist=[a.address for a in honest],
    )
    for account in honest:
        EthereumLedger(chain.web3, address, account).register()
    for sybil in (EthereumLedger(chain.web3, address, chain.new_account()) for _ in range(3)):
        with reverts(f"CoordinatorNotAllowed({sybil.account})"):
            sybil.register()
        with reverts(f"CoordinatorNotParticipant({sybil.account})"):
            sybil.submit_update(1, cid_of("genesis again"), 10)
    assert len(EthereumLedger(chain.web3, address, owner).participants()) == 2


def voting_federation(chain: TestChain, founders: int = 3) -> Federation:
    federation = deploy(chain, peers=founders, register=False, membership=Membership.VOTE)
    for peer in federation.peers:
        federation.deployer.allow(peer.account)
    for peer in federation.peers:
        peer.register()
    return federation


def test_membership_by_vote_admits_on_a_strict_majority_of_the_members(chain: TestChain) -> None:
    federation = voting_federation(chain)
    first, second, third = federation.peers
    candidate = EthereumLedger(chain.web3, first.contract_address, chain.new_account())
    with reverts(f"CoordinatorNotAllowed({candidate.account})"):
        candidate.register()
    first.vote_to_admit(candidate.account)
    assert federation.events(first, "AdmissionVoted") == [
        {"candidate": candidate.account, "voter": first.account, "votes": 1}
    ]
    assert federation.events(first, "AccountAllowed") == []
    with reverts(f"CoordinatorDuplicateVote({candidate.account}, {first.account})"):
        first.vote_to_admit(candidate.account)
    second.vote_to_admit(candidate.account)  # 2 of 3 members
    assert federation.events(second, "AccountAllowed") == [{"account": candidate.account}]
    assert first.admission_votes(candidate.account) == 2 and first.is_allowed(candidate.account)
    with reverts(f"CoordinatorAlreadyAllowed({candidate.account})"):
        third.vote_to_admit(candidate.account)
    candidate.register()
    assert candidate.is_participant(candidate.account)


def test_by_vote_a_minority_cannot_admit_its_sybils(chain: TestChain) -> None:
    federation = voting_federation(chain)
    attacker = federation.peers[0]
    for _ in range(3):
        sybil = EthereumLedger(chain.web3, attacker.contract_address, chain.new_account())
        attacker.vote_to_admit(sybil.account)  # 1 vote of 3 members: not a majority
        with reverts(f"CoordinatorNotAllowed({sybil.account})"):
            sybil.register()
    stranger = EthereumLedger(chain.web3, attacker.contract_address, chain.new_account())
    with reverts(f"CoordinatorNotParticipant({stranger.account})"):
        stranger.vote_to_admit(stranger.account)


def test_by_vote_the_deployer_only_founds(chain: TestChain) -> None:
    federation = voting_federation(chain)
    newcomer = chain.new_account().address
    with reverts("CoordinatorAdmissionByVote()"):
        federation.deployer.allow(newcomer)
    with reverts("CoordinatorAdmissionByVote()"):
        federation.deployer.disallow(federation.peers[0].account)


def test_voting_needs_membership_by_vote(chain: TestChain) -> None:
    federation = deploy(chain, peers=1, membership=Membership.OPEN)
    with reverts("CoordinatorAdmissionNotByVote()"):
        federation.peers[0].vote_to_admit(chain.new_account().address)


# ------------------------------------------------------------------------------------------- submission


def test_submit_update_records_and_emits(chain: TestChain) -> None:
    federation = deploy(chain, quorum=3)
    peer = federation.peers[0]
    update = cid_of("update", DAG_PB)
    peer.submit_update(1, update, 1234)
    assert federation.events(peer, "UpdateSubmitted") == [
        {
            "round": 1,
            "participant": peer.account,
            "codec": DAG_PB,
            "digest": digest_of(update),
            "samples": 1234,
        }
    ]
    assert federation.events(peer, "SubmissionClosed") == []
    submissions = peer.submissions(1)
    assert [(entry.participant, entry.update_cid, entry.samples) for entry in submissions] == [
        (peer.account, update, 1234)
    ]
    info = federation.contract.functions.roundInfo(1).call()
    assert (info[1], info[3]) == (RoundPhase.SUBMISSION, 1)


def test_submit_by_a_stranger_reverts(chain: TestChain) -> None:
    federation = deploy(chain, peers=1, register=False)
    peer = federation.peers[0]
    with reverts(f"CoordinatorNotParticipant({peer.account})"):
        peer.submit_update(1, cid_of("update"), 10)


def test_second_submission_in_a_round_reverts_even_after_rejoining(chain: TestChain) -> None:
    federation = deploy(chain, quorum=3)
    peer = federation.peers[0]
    peer.submit_update(1, cid_of("update"), 10)
    with reverts(f"CoordinatorDuplicateSubmission(1, {peer.account})"):
        peer.submit_update(1, cid_of("another update"), 10)
    peer.leave()
    peer.register()
    with reverts(f"CoordinatorDuplicateSubmission(1, {peer.account})"):
        peer.submit_update(1, cid_of("another update"), 10)


def test_submit_without_samples_reverts(chain: TestChain) -> None:
    federation = deploy(chain)
    with reverts("CoordinatorInvalidSampleCount(0)"):
        federation.peers[0].submit_update(1, cid_of("update"), 0)


def test_submit_with_an_unsupported_cid_reverts(chain: TestChain) -> None:
    federation = deploy(chain)
    with reverts(f"CoordinatorUnsupportedCid(85, 0x{'00' * 32})"):
        federation.peers[0].submit_update(1, cid_from_chain(RAW, bytes(32)), 10)
    digest = hashlib.sha256(b"cbor").digest()
    call = federation.contract.functions.submitUpdate(1, 0x71, digest, 10)
    with pytest.raises(Exception) as caught:
        call.estimate_gas({"from": federation.peers[0].account})
    assert (
        RevertDecoder(load_artifact().abi).reason(caught.value)
        == f"CoordinatorUnsupportedCid(113, 0x{digest.hex()})"
    )


def test_a_cid_already_submitted_to_the_round_reverts(chain: TestChain) -> None:
    """The issue's free-rider: submitting another participant's CID as one's own (it would count twice)."""
    federation = deploy(chain, quorum=2)
    honest, free_rider, _ = federation.peers
    update = cid_of("honest work")
    honest.submit_update(1, update, 100)
    digest = digest_of(update)
    with reverts(f"CoordinatorDuplicateUpdate(1, {RAW}, 0x{digest.hex()}, {honest.account})"):
        free_rider.submit_update(1, update, 100)
    same_digest_other_codec = cid_from_chain(DAG_PB, digest)
    with reverts(f"CoordinatorDuplicateUpdate(1, {DAG_PB}, 0x{digest.hex()}, {honest.account})"):
        free_rider.submit_update(1, same_digest_other_codec, 100)
    free_rider.submit_update(1, cid_of("its own work"), 100)
    assert [entry.update_cid for entry in honest.submissions(1)] == [update, cid_of("its own work")]


def test_the_same_cid_may_come_back_in_a_later_round(chain: TestChain) -> None:
    federation = deploy(chain, quorum=2)
    finalize_round(federation, 1)
    federation.peers[0].submit_update(2, cid_of("update 1 0"), 10)  # round 1's update, resubmitted
    assert federation.peers[0].submissions(2)[0].update_cid == cid_of("update 1 0")


def test_a_claim_above_the_maximum_reverts(chain: TestChain) -> None:
    federation = deploy(chain, quorum=3, maximum_samples=1000)
    first, second, _ = federation.peers
    with reverts("CoordinatorSampleCountTooLarge(1001, 1000)"):
        first.submit_update(1, cid_of("inflated"), 1001)
    with reverts(f"CoordinatorSampleCountTooLarge({2**64 - 1}, 1000)"):
        first.submit_update(1, cid_of("inflated"), 2**64 - 1)
    second.submit_update(1, cid_of("honest"), 1000)
    assert second.submissions(1)[0].samples == 1000


def test_submit_to_another_round_reverts(chain: TestChain) -> None:
    federation = deploy(chain)
    with reverts("CoordinatorRoundNotCurrent(2, 1)"):
        federation.peers[0].submit_update(2, cid_of("update"), 10)
    with reverts("CoordinatorRoundNotCurrent(0, 1)"):
        federation.peers[0].submit_update(0, cid_of("update"), 10)


def test_quorum_closes_submission(chain: TestChain) -> None:
    federation = deploy(chain, quorum=2)
    first, second, third = federation.peers
    first.submit_update(1, cid_of("a"), 10)
    second.submit_update(1, cid_of("b"), 10)
    state = second.current_round()
    assert federation.events(second, "SubmissionClosed") == [
        {"round": 1, "submissions": 2, "quorumReached": True, "attestationDeadline": state.deadline}
    ]
    assert (state.phase, state.submission_count) == (RoundPhase.ATTESTATION, 2)
    with reverts("CoordinatorRoundClosed(1)"):
        third.submit_update(1, cid_of("c"), 10)


def test_submit_after_the_deadline_reverts(chain: TestChain) -> None:
    federation = deploy(chain)
    chain.advance_time(DURATION + 1)
    with reverts("CoordinatorRoundClosed(1)"):
        federation.peers[0].submit_update(1, cid_of("late"), 10)


# ------------------------------------------------------------------------------------------- attestation


def test_majority_finalizes_the_round_and_opens_the_next(chain: TestChain) -> None:
    federation = deploy(chain, quorum=3)
    first, second, third = federation.peers
    federation.submit_all(1, 3)
    model = cid_of("merged 1")
    first.attest_model(1, model)
    assert federation.events(first, "ModelAttested") == [
        {"round": 1, "participant": first.account, "codec": RAW, "digest": digest_of(model), "votes": 1}
    ]
    assert federation.events(first, "RoundFinalized") == []
    second.attest_model(1, model)  # 2 of 3: a strict majority
    assert federation.events(second, "RoundFinalized") == [
        {"round": 1, "stage": 1, "codec": RAW, "digest": digest_of(model), "finalizedRounds": 1}
    ]
    state = second.current_round()
    assert federation.events(second, "RoundOpened") == [{"round": 2, "stage": 1, "deadline": state.deadline}]
    assert (state.number, state.stage, state.phase, state.finalized_rounds) == (
        2,
        1,
        RoundPhase.SUBMISSION,
        1,
    )
    assert second.canonical_model(1) == model
    assert second.latest_canonical_model() == model
    assert federation.contract.functions.attestations(1, RAW, digest_of(model)).call() == 2
    with reverts("CoordinatorRoundNotCurrent(1, 2)"):
        third.attest_model(1, model)


def test_attest_before_submission_closes_reverts(chain: TestChain) -> None:
    federation = deploy(chain, quorum=2)
    peer = federation.peers[0]
    peer.submit_update(1, cid_of("a"), 10)
    with reverts("CoordinatorAttestationClosed(1)"):
        peer.attest_model(1, cid_of("merged"))


def test_attest_by_a_non_submitter_reverts(chain: TestChain) -> None:
    federation = deploy(chain, quorum=2)
    federation.submit_all(1, 2)
    outsider = federation.peers[2]
    with reverts(f"CoordinatorNotSubmitter(1, {outsider.account})"):
        outsider.attest_model(1, cid_of("merged"))


def test_second_attestation_reverts(chain: TestChain) -> None:
    federation = deploy(chain, quorum=3)
    federation.submit_all(1, 3)
    peer = federation.peers[0]
    peer.attest_model(1, cid_of("merged"))
    with reverts(f"CoordinatorDuplicateAttestation(1, {peer.account})"):
        peer.attest_model(1, cid_of("merged"))


def test_attest_with_an_unsupported_cid_reverts(chain: TestChain) -> None:
    federation = deploy(chain, quorum=2)
    federation.submit_all(1, 2)
    with reverts(f"CoordinatorUnsupportedCid(112, 0x{'00' * 32})"):
        federation.peers[0].attest_model(1, cid_from_chain(DAG_PB, bytes(32)))


def test_a_submitter_who_left_may_still_attest(chain: TestChain) -> None:
    federation = deploy(chain, quorum=2)
    federation.submit_all(1, 2)
    first, second, _ = federation.peers
    first.leave()
    first.attest_model(1, cid_of("merged"))
    second.attest_model(1, cid_of("merged"))
    assert first.canonical_model(1) == cid_of("merged")


def test_a_split_vote_fails_the_round_as_soon_as_no_majority_is_possible(chain: TestChain) -> None:
    federation = deploy(chain, quorum=2)
    federation.submit_all(1, 2)
    first, second, _ = federation.peers
    first.attest_model(1, cid_of("merged by first"))
    second.attest_model(1, cid_of("merged by second"))
    assert federation.events(second, "RoundFailed") == [{"round": 1, "stage": 1, "reason": NO_MAJORITY}]
    state = second.current_round()
    assert (state.number, state.stage, state.phase, state.finalized_rounds) == (
        2,
        1,
        RoundPhase.SUBMISSION,
        0,
    )
    assert second.canonical_model(1) is None
    assert second.latest_canonical_model() == GENESIS
    assert federation.contract.functions.roundInfo(1).call()[1] == RoundPhase.FAILED


def test_a_late_majority_still_wins_a_three_way_round(chain: TestChain) -> None:
    federation = deploy(chain, quorum=3)
    federation.submit_all(1, 3)
    first, second, third = federation.peers
    first.attest_model(1, cid_of("good"))
    second.attest_model(1, cid_of("bad"))
    third.attest_model(1, cid_of("good"))
    assert third.canonical_model(1) == cid_of("good")


def test_attest_after_the_deadline_reverts(chain: TestChain) -> None:
    federation = deploy(chain, quorum=2)
    federation.submit_all(1, 2)
    chain.advance_time(DURATION + 1)
    with reverts("CoordinatorAttestationClosed(1)"):
        federation.peers[0].attest_model(1, cid_of("merged"))


# ------------------------------------------------------------------------------------------- deadlines


def test_closing_before_the_deadline_reverts(chain: TestChain) -> None:
    federation = deploy(chain)
    deadline = federation.deployer.current_round().deadline
    with reverts(f"CoordinatorRoundNotExpired(1, {deadline})"):
        federation.deployer.close_expired_round()


def test_an_expired_round_without_updates_fails_and_retrains_the_same_step(chain: TestChain) -> None:
    federation = deploy(chain)
    chain.advance_time(DURATION + 1)
    federation.deployer.close_expired_round()  # anyone may: here, an account that never registered
    assert federation.events(federation.deployer, "RoundFailed") == [
        {"round": 1, "stage": 1, "reason": NO_SUBMISSIONS}
    ]
    state = federation.deployer.current_round()
    assert federation.events(federation.deployer, "RoundOpened") == [
        {"round": 2, "stage": 1, "deadline": state.deadline}
    ]
    assert state.deadline > state.chain_time
    assert (state.number, state.stage, state.finalized_rounds) == (2, 1, 0)


def test_an_expired_round_with_some_updates_closes_with_what_arrived(chain: TestChain) -> None:
    federation = deploy(chain, quorum=3)
    federation.submit_all(1, 1)
    chain.advance_time(DURATION + 1)
    closer = federation.peers[2]
    closer.close_expired_round()
    state = closer.current_round()
    assert federation.events(closer, "SubmissionClosed") == [
        {"round": 1, "submissions": 1, "quorumReached": False, "attestationDeadline": state.deadline}
    ]
    assert (state.phase, state.deadline - state.chain_time <= DURATION) == (RoundPhase.ATTESTATION, True)
    federation.peers[0].attest_model(1, cid_of("merged"))  # 1 of 1 submitters: a majority
    assert closer.canonical_model(1) == cid_of("merged")


def test_an_expired_attestation_without_majority_fails_the_round(chain: TestChain) -> None:
    federation = deploy(chain, quorum=3)
    federation.submit_all(1, 3)
    federation.peers[0].attest_model(1, cid_of("merged"))
    chain.advance_time(DURATION + 1)
    federation.deployer.close_expired_round()
    assert federation.events(federation.deployer, "RoundFailed") == [
        {"round": 1, "stage": 1, "reason": NO_MAJORITY}
    ]
    assert federation.deployer.current_round().number == 2


# ------------------------------------------------------------------------------------------- schedule


def finalize_round(federation: Federation, round_number: int, submitters: int = 2) -> str:
    federation.submit_all(round_number, submitters)
    model = cid_of(f"merged {round_number}")
    for peer in federation.peers[: submitters // 2 + 1]:
        peer.attest_model(round_number, model)
    return model


def test_stages_advance_on_finalized_rounds_only(chain: TestChain) -> None:
    federation = deploy(chain, stages=2, rounds_per_stage=2, quorum=2)
    peer = federation.peers[0]
    finalize_round(federation, 1)
    assert (peer.current_round().number, peer.current_round().stage) == (2, 1)
    chain.advance_time(DURATION + 1)
    peer.close_expired_round()  # round 2 fails: stage 1 needs another round
    assert (peer.current_round().number, peer.current_round().stage) == (3, 1)
    finalize_round(federation, 3)
    assert (peer.current_round().number, peer.current_round().stage) == (4, 2)
    assert federation.contract.functions.currentStage().call() == 2
    assert [(entry.number, entry.stage) for entry in peer.round_log()] == [(1, 1), (3, 1)]


def test_training_completes_after_the_last_round(chain: TestChain) -> None:
    federation = deploy(chain, stages=2, rounds_per_stage=1, quorum=2)
    first_model = finalize_round(federation, 1)
    last_peer = federation.peers[1]
    last_model = finalize_round(federation, 2)
    assert federation.events(last_peer, "TrainingCompleted") == [
        {"round": 2, "codec": RAW, "digest": digest_of(last_model)}
    ]
    assert federation.events(last_peer, "RoundOpened") == []
    state = last_peer.current_round()
    assert (state.number, state.stage, state.phase, state.finalized_rounds) == (2, 2, RoundPhase.FINALIZED, 2)
    assert state.training_complete and not state.expired
    assert federation.contract.functions.trainingComplete().call()
    assert [(entry.number, entry.stage, entry.model_cid) for entry in last_peer.round_log()] == [
        (1, 1, first_model),
        (2, 2, last_model),
    ]
    with reverts("CoordinatorTrainingComplete(2)"):
        last_peer.submit_update(2, cid_of("extra"), 10)
    with reverts("CoordinatorTrainingComplete(2)"):
        last_peer.attest_model(2, last_model)
    chain.advance_time(DURATION + 1)
    with reverts("CoordinatorTrainingComplete(2)"):
        last_peer.close_expired_round()


# ------------------------------------------------------------------------------------------- records


def test_records_count_what_each_submitter_did_once_the_round_is_over(chain: TestChain) -> None:
    federation = deploy(chain, peers=5, quorum=5, strike_limit=3, suspension_rounds=2)
    peers = federation.peers
    federation.submit_all(1, 5)
    peers[3].attest_model(1, cid_of("something else"))
    peers[0].attest_model(1, cid_of("merged"))
    peers[1].attest_model(1, cid_of("merged"))
    assert peers[0].participant_record(peers[0].account).submitted == 0  # the round is not over
    peers[2].attest_model(1, cid_of("merged"))  # 3 of 5: finalized; peers[4] never attests
    records = [peer.participant_record(peer.account) for peer in peers]  # folded on the fly
    assert [record.submitted for record in records] == [1] * 5
    assert [record.attested_canonical for record in records] == [1, 1, 1, 0, 0]
    assert [record.attested_other for record in records] == [0, 0, 0, 1, 0]
    assert [record.not_attested for record in records] == [0, 0, 0, 0, 1]
    assert [record.strikes for record in records] == [0, 0, 0, 1, 0]
    assert all(record.last_submitted_round == 1 for record in records)
    stranger = peers[0].participant_record(chain.new_account().address)
    assert (stranger.submitted, stranger.last_submitted_round, stranger.suspended_until_round) == (0, 0, 0)


def test_a_participant_that_withholds_is_suspended_and_its_record_says_why(chain: TestChain) -> None:
    federation = deploy(chain, peers=6, quorum=6, strike_limit=1, suspension_rounds=3)
    honest, withholders = federation.peers[:3], federation.peers[3:]
    federation.submit_all(1, 6)
    for peer in honest:
        peer.attest_model(1, cid_of("honest merge"))
    chain.advance_time(DURATION + 1)
    honest[0].close_expired_round()  # 3 of 6 is no majority: the round fails at its deadline
    assert federation.events(honest[0], "RoundFailed") == [{"round": 1, "stage": 1, "reason": NO_MAJORITY}]
    for peer in withholders:
        withheld = peer.participant_record(peer.account)
        assert (withheld.submitted, withheld.withheld, withheld.suspensions) == (1, 1, 1)
        assert withheld.suspended_until_round == 1 + 3 and withheld.suspended_in(2)
        with reverts(f"CoordinatorSuspended({peer.account}, 4)"):
            peer.submit_update(2, cid_of(f"withholder {peer.account}"), 10)
    attested = honest[0].participant_record(honest[0].account)
    assert (attested.submitted, attested.withheld, attested.suspended_until_round) == (1, 0, 0)
    for index, peer in enumerate(honest):
        peer.submit_update(2, cid_of(f"honest 2 {index}"), 10)
    chain.advance_time(DURATION + 1)
    honest[0].close_expired_round()  # the quorum of 6 is out of reach: close with the 3 honest updates
    for peer in honest[:2]:
        peer.attest_model(2, cid_of("honest merge 2"))
    assert honest[0].canonical_model(2) == cid_of("honest merge 2")  # progress again, in round 2


def test_a_round_that_fails_on_a_split_vote_strikes_nobody(chain: TestChain) -> None:
    federation = deploy(chain, peers=2, quorum=2, strike_limit=1, suspension_rounds=3)
    federation.submit_all(1, 2)
    first, second = federation.peers
    first.attest_model(1, cid_of("one"))
    second.attest_model(1, cid_of("two"))  # fails at once: nobody withheld, nobody is provably wrong
    for peer in federation.peers:
        record = peer.participant_record(peer.account)
        assert (record.submitted, record.withheld, record.attested_other, record.strikes) == (1, 0, 0, 0)
        peer.submit_update(2, cid_of(f"again {peer.account}"), 10)


def test_attesting_another_model_strikes_and_the_canonical_one_clears(chain: TestChain) -> None:
    federation = deploy(
        chain, peers=3, quorum=3, stages=1, rounds_per_stage=10, strike_limit=2, suspension_rounds=2
    )
    first, second, dissenter = federation.peers

    def play(round_number: int, dissent: bool, attest: bool = True) -> None:
        federation.submit_all(round_number, 3)
        first.attest_model(round_number, cid_of(f"merged {round_number}"))
        if attest:
            choice = f"other {round_number}" if dissent else f"merged {round_number}"
            dissenter.attest_model(round_number, cid_of(choice))
        if dissenter.current_round().number == round_number:
            second.attest_model(round_number, cid_of(f"merged {round_number}"))

    play(1, dissent=True)
    record = dissenter.participant_record(dissenter.account)
    assert (record.attested_other, record.strikes, record.suspended_until_round) == (1, 1, 0)
    play(2, dissent=False)  # clears the strike
    record = dissenter.participant_record(dissenter.account)
    assert (record.attested_canonical, record.strikes) == (1, 0)
    play(3, dissent=False, attest=False)  # not needed by the majority: recorded, no strike
    record = dissenter.participant_record(dissenter.account)
    assert (record.not_attested, record.strikes) == (1, 0)
    play(4, dissent=True)
    federation.submit_all(5, 3)
    dissenter.attest_model(5, cid_of("other 5"))
    first.attest_model(5, cid_of("merged 5"))
    second.attest_model(5, cid_of("merged 5"))
    record = dissenter.participant_record(dissenter.account)
    assert (record.submitted, record.attested_other, record.strikes) == (5, 3, 0)
    assert (record.suspensions, record.suspended_until_round) == (1, 5 + 2)
    for round_number in (6, 7):
        with reverts(f"CoordinatorSuspended({dissenter.account}, 7)"):
            dissenter.submit_update(round_number, cid_of(f"update {round_number} 2"), 10)
        first.submit_update(round_number, cid_of(f"update {round_number} 0"), 10)
        second.submit_update(round_number, cid_of(f"update {round_number} 1"), 10)
        chain.advance_time(DURATION + 1)
        first.close_expired_round()
        first.attest_model(round_number, cid_of(f"merged {round_number}"))
        second.attest_model(round_number, cid_of(f"merged {round_number}"))
    dissenter.submit_update(8, cid_of("back after the suspension"), 10)
    record = dissenter.participant_record(dissenter.account)
    assert (record.submitted, record.suspensions, record.last_submitted_round) == (5, 1, 8)


def test_a_second_suspension_lasts_twice_as_long(chain: TestChain) -> None:
    federation = deploy(chain, peers=2, quorum=2, strike_limit=1, suspension_rounds=1)
    honest, withholder = federation.peers

    def withheld_round(round_number: int) -> None:
        honest.submit_update(round_number, cid_of(f"h {round_number}"), 10)
        withholder.submit_update(round_number, cid_of(f"w {round_number}"), 10)
        honest.attest_model(round_number, cid_of(f"m {round_number}"))
        chain.advance_time(DURATION + 1)
        honest.close_expired_round()

    def honest_round(round_number: int, suspended_until: int) -> None:
        with reverts(f"CoordinatorSuspended({withholder.account}, {suspended_until})"):
            withholder.submit_update(round_number, cid_of(f"w {round_number}"), 10)
        honest.submit_update(round_number, cid_of(f"h {round_number}"), 10)
        chain.advance_time(DURATION + 1)
        honest.close_expired_round()
        honest.attest_model(round_number, cid_of(f"m {round_number}"))

    withheld_round(1)
    assert withholder.participant_record(withholder.account).suspended_until_round == 2
    honest_round(2, suspended_until=2)
    withheld_round(3)
    record = withholder.participant_record(withholder.account)
    assert (record.suspensions, record.suspended_until_round) == (2, 3 + 2)


def test_without_a_strike_limit_nobody_is_suspended(chain: TestChain) -> None:
    federation = deploy(chain, peers=2, quorum=2, strike_limit=0)
    honest, withholder = federation.peers
    federation.submit_all(1, 2)
    honest.attest_model(1, cid_of("merged"))
    chain.advance_time(DURATION + 1)
    honest.close_expired_round()
    record = withholder.participant_record(withholder.account)
    assert (record.withheld, record.suspended_until_round) == (1, 0)
    withholder.submit_update(2, cid_of("again"), 10)


# ------------------------------------------------------------------------------------------- committees


def committee_federation(
    chain: TestChain, *, drawn: bool = True, **changes: Any
) -> tuple[Federation, list[EthereumLedger]]:
    """5 peers, rounds above 4 submissions merged by a committee of 3; round 1 closed on its quorum and,
    when ``drawn``, its committee drawn (by the deployer: anyone may draw)."""
    settings: dict[str, Any] = {"quorum": 5, "committee_threshold": 4, "committee_size": 3, **changes}
    federation = deploy(chain, peers=5, **settings)
    federation.submit_all(1, 5)
    if drawn:
        assert federation.deployer.draw_committee(1)
    return federation, federation.peers


def split_by_committee(
    federation: Federation, round_number: int
) -> tuple[list[EthereumLedger], list[EthereumLedger]]:
    drawn = federation.peers[0].committee(round_number)
    members = sorted(
        (peer for peer in federation.peers if peer.account in drawn),
        key=lambda peer: drawn.index(peer.account),
    )
    return members, [peer for peer in federation.peers if peer.account not in drawn]


def draw_refusal(federation: Federation, round_number: int) -> str:
    """Why the contract refuses ``drawCommittee(round_number)`` in the latest block, called without the
    adapter (which takes "already drawn" for success)."""
    call = federation.contract.functions.drawCommittee(round_number)
    with pytest.raises(Exception) as caught:
        call.call({"from": federation.deployer.account}, block_identifier="latest")
    return RevertDecoder(load_artifact().abi).reason(caught.value)


def test_anyone_draws_the_committee_once_and_anyone_can_replay_it(chain: TestChain) -> None:
    federation, peers = committee_federation(chain, drawn=False)
    anchor = peers[4].last_receipt["blockNumber"]  # type: ignore[index]  # the fifth submission closed it
    predicted = peers[0].committee(1)  # computed off chain from the anchor's hash: nothing drawn yet
    assert peers[0].committee_seed(1) == bytes(32)
    submitters = [submission.participant for submission in peers[0].submissions(1)]
    assert len(predicted) == 3 and len(set(predicted)) == 3 and set(predicted) <= set(submitters)
    assert draw_refusal(federation, 1) == f"CoordinatorCommitteeNotDrawable(1, {anchor})"  # in the anchor
    assert federation.deployer.draw_committee(1)  # not a participant: anyone may draw
    drawn = peers[0].committee(1)
    assert drawn == predicted
    seed = committee_seed(bytes(chain.web3.eth.get_block(anchor)["hash"]), 1, 42)
    assert peers[0].committee_seed(1) == seed
    events = federation.events(federation.deployer, "CommitteeDrawn")
    assert events == [{"round": 1, "seedBlock": anchor, "seed": seed, "members": list(drawn)}]
    assert peers[0].replay_committee_draw(1) == drawn  # from the event's block and the submissions only
    assert draw_refusal(federation, 1) == "CoordinatorCommitteeAlreadyDrawn(1)"
    sender = Web3.to_checksum_address(peers[0].account)
    transactions = chain.web3.eth.get_transaction_count(sender)
    assert not peers[0].draw_committee(1)  # a member that lost the race: success, and nothing sent
    assert chain.web3.eth.get_transaction_count(sender) == transactions


def test_attestations_wait_for_the_draw(chain: TestChain) -> None:
    federation, peers = committee_federation(chain, drawn=False)
    members, outsiders = split_by_committee(federation, 1)
    for peer in (members[0], outsiders[0]):
        with reverts("CoordinatorCommitteeNotDrawn(1)"):
            peer.attest_model(1, cid_of("merged"))
    assert peers[0].committee_seed(1) == bytes(32)  # a refused attestation draws nothing
    federation.deployer.draw_committee(1)
    members[0].attest_model(1, cid_of("merged"))
    assert federation.events(members[0], "CommitteeDrawn") == []
    assert federation.events(members[0], "ModelAttested")[0]["votes"] == 1


@pytest.mark.parametrize("phase", ["submission", "everyone merges", "finalized"])
def test_a_round_without_a_committee_to_draw_refuses_the_draw(chain: TestChain, phase: str) -> None:
    federation = deploy(chain, peers=5, quorum=5, committee_threshold=4, committee_size=3)
    if phase == "submission":
        federation.submit_all(1, 4)
        assert draw_refusal(federation, 1) == "CoordinatorCommitteeNotDrawable(1, 0)"
    elif phase == "everyone merges":
        federation.submit_all(1, 4)
        chain.advance_time(DURATION + 1)
        federation.deployer.close_expired_round()  # 4 submissions, not above the threshold
        assert draw_refusal(federation, 1) == "CoordinatorCommitteeNotDrawable(1, 0)"
    else:
        federation.submit_all(1, 5)
        federation.deployer.draw_committee(1)
        members, _ = split_by_committee(federation, 1)
        for peer in members[:2]:
            peer.attest_model(1, cid_of("merged"))
        assert draw_refusal(federation, 1) == "CoordinatorCommitteeAlreadyDrawn(1)"
    with reverts("CoordinatorUnknownRound(9)"):
        federation.deployer.draw_committee(9)


def test_a_draw_after_256_blocks_takes_a_later_seed_block() -> None:
    assert seed_block(100, 101) == seed_block(100, 356) == 100
    assert seed_block(100, 357) == seed_block(100, 612) == 356
    with pytest.raises(ValueError):
        seed_block(100, 100)


def test_the_draw_is_the_contracts_over_many_seeds() -> None:
    """The Python draw against a straight transcription of the Solidity loop (keccak of seed and counter)."""
    for trial in range(200):
        seed = hashlib.sha256(f"seed {trial}".encode()).digest()
        count, size = 4 + trial % 60, 1 + trial % 4
        positions = draw_positions(seed, count, size)
        assert len(set(positions)) == size and all(0 <= position < count for position in positions)
        expected: list[int] = []
        counter = 0
        while len(expected) < size:
            candidate = int.from_bytes(keccak(seed + counter.to_bytes(32, "big")), "big") % count
            expected += [] if candidate in expected else [candidate]
            counter += 1
        assert list(positions) == expected


def test_a_small_round_keeps_everyone_merging(chain: TestChain) -> None:
    federation = deploy(chain, peers=4, quorum=4, committee_threshold=4, committee_size=3)
    federation.submit_all(1, 4)  # 4 submissions are not above the threshold
    assert federation.peers[0].committee(1) == ()
    assert federation.events(federation.peers[3], "CommitteeDrawn") == []
    for peer in federation.peers[:2]:
        peer.attest_model(1, cid_of("merged"))
    assert federation.peers[0].canonical_model(1) is None  # 2 of 4 is no majority of the submitters
    federation.peers[2].attest_model(1, cid_of("merged"))
    assert federation.peers[0].canonical_model(1) == cid_of("merged")


def test_a_submitter_outside_the_committee_may_not_attest(chain: TestChain) -> None:
    federation, _ = committee_federation(chain)
    _, outsiders = split_by_committee(federation, 1)
    with reverts(f"CoordinatorNotCommitteeMember(1, {outsiders[0].account})"):
        outsiders[0].attest_model(1, cid_of("merged"))


def test_a_committee_majority_finalizes_and_a_dissenter_is_struck(chain: TestChain) -> None:
    federation, _ = committee_federation(chain, strike_limit=1, suspension_rounds=2)
    (first, second, third), outsiders = split_by_committee(federation, 1)
    third.attest_model(1, cid_of("forged"))  # a dishonest minority of the committee
    first.attest_model(1, cid_of("merged"))
    assert first.canonical_model(1) is None
    second.attest_model(1, cid_of("merged"))  # 2 of 3 members: finalized, although 2 of 5 submitters
    assert federation.events(second, "RoundFinalized")[0]["digest"] == digest_of(cid_of("merged"))
    records = {peer.account: peer.participant_record(peer.account) for peer in federation.peers}
    assert records[third.account].attested_other == 1 and records[third.account].suspended_in(2)
    for peer in (first, second, *outsiders):  # outsiders were not asked to attest: no fault
        assert records[peer.account].strikes == 0 and not records[peer.account].suspended_in(2)
    assert [records[peer.account].not_attested for peer in outsiders] == [1, 1]


def test_a_committee_round_fails_early_and_strikes_only_silent_members(chain: TestChain) -> None:
    federation, _ = committee_federation(chain, strike_limit=1, suspension_rounds=2)
    (first, second, third), outsiders = split_by_committee(federation, 1)
    first.attest_model(1, cid_of("one"))
    second.attest_model(1, cid_of("two"))
    assert first.round_summary(1).phase is RoundPhase.ATTESTATION  # the third member can still decide
    chain.advance_time(DURATION + 1)
    first.close_expired_round()
    assert federation.events(first, "CommitteeDrawn") == []  # drawn already: the close draws nothing
    assert first.round_summary(1).attestation_expired
    records = {peer.account: peer.participant_record(peer.account) for peer in federation.peers}
    assert records[third.account].withheld == 1
    assert [records[peer.account].withheld for peer in (first, second, *outsiders)] == [0, 0, 0, 0]


def test_a_committee_nobody_drew_is_drawn_when_the_round_fails(chain: TestChain) -> None:
    federation, peers = committee_federation(chain, drawn=False, strike_limit=1, suspension_rounds=2)
    drawn = peers[0].committee(1)
    chain.advance_time(DURATION + 1)
    peers[0].close_expired_round()  # draws the committee, so that the record knows who withheld
    assert federation.events(peers[0], "CommitteeDrawn")[0]["members"] == list(drawn)
    for peer in peers:
        record = peer.participant_record(peer.account)
        assert record.withheld == (1 if peer.account in drawn else 0)


def test_committee_gas(chain: TestChain) -> None:
    """The draw is its own call; every submitUpdate and attestModel of committee rounds stays within 120k:
    closing a round that gets a committee, attesting as a member, finalizing, failing early, folding."""
    assert_committee_gas(chain, submitters=9, size=5)


@pytest.mark.slow
@pytest.mark.integration
def test_committee_gas_at_the_default_size(anvil_web3: Web3, anvil_url: str) -> None:
    """The same at the default committee size, 31 (on anvil only: 100 transactions, 3x faster there)."""
    assert_committee_gas(TestChain("anvil", anvil_web3, anvil_url), submitters=32, size=31)


def assert_committee_gas(chain: TestChain, submitters: int, size: int) -> None:
    # The threshold is the size, its least: every round of ``submitters`` (more) gets a committee.
    committee: dict[str, Any] = {"committee_threshold": size, "committee_size": size}
    federation = deploy(chain, peers=submitters, quorum=submitters, **committee)
    gas: dict[str, int] = {}

    def record(name: str, ledger: EthereumLedger) -> None:
        gas[name] = max(gas.get(name, 0), ledger.last_gas_used or 0)

    majority = size // 2 + 1
    for round_number in (1, 2):
        *others, closer = federation.peers
        for index, peer in enumerate(others):
            peer.submit_update(round_number, cid_of(f"update {round_number} {index}"), 100)
            record("submitUpdate" if round_number == 1 else "submitUpdate (folding a committee round)", peer)
        closer.submit_update(round_number, cid_of(f"closing {round_number}"), 100)
        record("submitUpdate (closing a round that gets a committee)", closer)
        members, _ = split_by_committee(federation, round_number)
        assert members[0].draw_committee(round_number)
        record(f"drawCommittee ({size} seats)", members[0])
        if round_number == 1:  # a majority of one model finalizes
            for peer in members[:majority]:
                peer.attest_model(1, cid_of("merged"))
            record("attestModel (member)", members[0])
            record("attestModel (member, a model attested already)", members[1])
            record("attestModel (finalizing a committee round)", members[majority - 1])
        else:  # every member a model of its own: fails once no model can reach a majority
            for index, peer in enumerate(members):
                peer.attest_model(2, cid_of(f"model {index}"))
                if peer.round_summary(2).phase is RoundPhase.FAILED:
                    record("attestModel (failing a committee round early)", peer)
                    break
                record("attestModel (member)", peer)
    assert "attestModel (failing a committee round early)" in gas
    report_gas(f"committee of {size} of {submitters} ({chain.kind})", gas)


def report_gas(title: str, gas: dict[str, int]) -> None:
    """Print the gas of each call; every submitUpdate and attestModel must stay within 120k."""
    print(f"\n{title}:")
    for name, value in gas.items():
        print(f"  {name:<56} {value:>9,}")
    for name, value in gas.items():
        if name.startswith(("submitUpdate", "attestModel")):
            assert value <= 120_000, name


# ------------------------------------------------------------------------------------------- views


@pytest.mark.parametrize("round_number", [0, 2])
def test_views_of_rounds_that_do_not_exist_revert(chain: TestChain, round_number: int) -> None:
    federation = deploy(chain, peers=1)
    peer = federation.peers[0]
    with reverts(f"CoordinatorUnknownRound({round_number})"):
        peer.canonical_model(round_number)
    with reverts(f"CoordinatorUnknownRound({round_number})"):
        peer.submissions(round_number)
    with pytest.raises(Exception) as caught:
        federation.contract.functions.roundInfo(round_number).call()
    decoded = RevertDecoder(load_artifact().abi).reason(caught.value)
    assert decoded == f"CoordinatorUnknownRound({round_number})"


# ------------------------------------------------------------------------------------------- gas


def test_gas_per_call(chain: TestChain) -> None:
    """Print the gas of every call of two rounds' life; submitUpdate and attestModel stay within 120k."""
    owner = chain.new_account()
    receipt_gas: dict[str, int] = {}
    settings = make_settings(quorum=3, membership=Membership.ALLOWLIST, strike_limit=2, suspension_rounds=2)
    address = deploy_coordinator(chain.web3, owner, settings)
    deployer = EthereumLedger(chain.web3, address, owner)
    peers = [EthereumLedger(chain.web3, address, chain.new_account()) for _ in range(4)]

    def record(name: str, ledger: EthereumLedger) -> None:
        assert ledger.last_gas_used is not None
        receipt_gas[name] = max(receipt_gas.get(name, 0), ledger.last_gas_used)

    contract = chain.web3.eth.contract(address=address, abi=load_artifact().abi)  # type: ignore[call-overload]
    deployment = contract.events.RoundOpened().get_logs(from_block=0)[0]["transactionHash"]
    receipt_gas["constructor"] = int(chain.web3.eth.get_transaction_receipt(deployment)["gasUsed"])
    for peer in peers:
        deployer.allow(peer.account)
        record("allow", deployer)
        peer.register()
        record("register", peer)
    for index, peer in enumerate(peers[:3]):
        peer.submit_update(1, cid_of(f"update {index}"), 100)
        record("submitUpdate (first round)" if index < 2 else "submitUpdate (closing the phase)", peer)
    peers[0].attest_model(1, cid_of("merged"))
    record("attestModel (first ever)", peers[0])
    peers[2].attest_model(1, cid_of("other"))
    peers[1].attest_model(1, cid_of("merged"))
    record("attestModel (finalizing, opening the next round)", peers[1])
    # round 2: every submission folds the submitter's round 1 into its record
    for index, peer in enumerate(peers[:2]):
        peer.submit_update(2, cid_of(f"update 2 {index}"), 100)
        record("submitUpdate (folding the last round)", peer)
    peers[2].submit_update(2, cid_of("update 2 2"), 100)
    record("submitUpdate (folding, a strike, closing the phase)", peers[2])
    peers[0].attest_model(2, cid_of("merged 2"))
    record("attestModel", peers[0])
    peers[1].attest_model(2, cid_of("merged 2"))
    record("attestModel (finalizing, opening the next round; steady)", peers[1])
    peers[0].submit_update(3, cid_of("update 3"), 100)
    chain.advance_time(DURATION + 1)
    peers[3].close_expired_round()
    record("closeExpiredRound (closing submission)", peers[3])
    chain.advance_time(DURATION + 1)
    peers[3].close_expired_round()
    record("closeExpiredRound (failing the round)", peers[3])
    peers[3].leave()
    record("leave", peers[3])
    deployer.disallow(peers[2].account)
    record("disallow (of a participant)", deployer)

    voting = deploy(chain, peers=3, register=False, membership=Membership.VOTE)
    for peer in voting.peers:
        voting.deployer.allow(peer.account)
    for peer in voting.peers:
        peer.register()
    candidate = chain.new_account().address
    voting.peers[0].vote_to_admit(candidate)
    record("voteToAdmit", voting.peers[0])
    voting.peers[1].vote_to_admit(candidate)
    record("voteToAdmit (admitting)", voting.peers[1])

    report_gas(f"gas per call ({chain.kind})", receipt_gas)
