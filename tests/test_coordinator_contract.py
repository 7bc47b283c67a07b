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
from web3.contract import Contract
from web3.logs import DISCARD

from agent.adapters.ethereum_ledger import (
    EthereumLedger,
    RevertDecoder,
    cid_from_chain,
    cid_to_chain,
    deploy_coordinator,
)
from agent.errors import ConfigurationError, ContractRevertError
from agent.ports.ledger import FederationSettings, RoundPhase, TrainingMode
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
        open_membership=True,
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
    arguments = (0, 2, 2, 2, DURATION, bytes(32), 0x71, digest, 1, True)
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
    federation = deploy(chain, peers=2, register=False, open_membership=False)
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
    federation = deploy(chain, peers=1, register=False, open_membership=False)
    federation.deployer.disallow(federation.peers[0].account)
    assert federation.events(federation.deployer, "ParticipantLeft") == []


def test_deploy_allows_the_allowlist(chain: TestChain) -> None:
    owner, member = chain.new_account(), chain.new_account()
    settings = make_settings(open_membership=False)
    address = deploy_coordinator(chain.web3, owner, settings, allowlist=[member.address])
    EthereumLedger(chain.web3, address, member).register()


def test_only_the_deployer_keeps_the_allowlist(chain: TestChain) -> None:
    federation = deploy(chain, peers=1, register=False, open_membership=False)
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
    """Print the gas of every call of a round's life and keep submitUpdate within its 100k budget."""
    owner = chain.new_account()
    receipt_gas: dict[str, int] = {}
    address = deploy_coordinator(chain.web3, owner, make_settings(quorum=3, open_membership=False))
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
        record("submitUpdate (closing the phase)" if index == 2 else "submitUpdate", peer)
    peers[0].attest_model(1, cid_of("merged"))
    record("attestModel", peers[0])
    peers[1].attest_model(1, cid_of("merged"))
    record("attestModel (finalizing, opening the next round)", peers[1])
    peers[0].submit_update(2, cid_of("update 2"), 100)
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

    print(f"\ngas per call ({chain.kind}):")
    for name, gas in receipt_gas.items():
        print(f"  {name:<52} {gas:>9,}")
    assert receipt_gas["submitUpdate"] <= 100_000
    assert receipt_gas["submitUpdate (closing the phase)"] <= 100_000
