"""The Ethereum ledger adapter (over both chains), the device's key file, and the contract's artifact."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import stat
from pathlib import Path
from typing import Any

import pytest
from eth_account import Account
from multiformats import CID, multihash
from web3 import EthereumTesterProvider, Web3
from web3.contract.contract import ContractFunction
from web3.types import RPCEndpoint, RPCResponse

from agent import content_id
from agent.adapters.account_identity import load_or_create_account
from agent.adapters.ethereum_ledger import (
    EthereumLedger,
    RetryPolicy,
    cid_from_chain,
    cid_to_chain,
    deploy_coordinator,
    fund_embedded_accounts,
)
from agent.errors import ConfigurationError, ContractRevertError, LedgerError
from agent.ports.ledger import FederationSettings, Ledger, Membership, RoundPhase, TrainingMode
from coordinator_contract import build
from coordinator_contract.artifact import load_artifact
from tests.services.anvil import TestChain

GENESIS = content_id.compute(b"genesis model")
FAST_RETRIES = RetryPolicy(attempts=3, first_delay_seconds=0.001)


def make_settings(**changes: Any) -> FederationSettings:
    settings = FederationSettings(
        training_mode=TrainingMode.PROGRESSIVE,
        stages=3,
        rounds_per_stage=1,
        quorum=2,
        round_duration_seconds=300,
        model_spec_digest=hashlib.sha256(b"resnet-4 simclr").digest(),
        genesis_model_cid=GENESIS,
        federation_seed=2**63 + 5,
        membership=Membership.OPEN,
        maximum_samples=10**6,
        strike_limit=0,
        suspension_rounds=0,
    )
    return dataclasses.replace(settings, **changes)


def deploy_federation(chain: TestChain, peers: int, **changes: Any) -> list[EthereumLedger]:
    address = deploy_coordinator(chain.web3, chain.new_account(), make_settings(**changes))
    return [EthereumLedger(chain.web3, address, chain.new_account()) for _ in range(peers)]


# ------------------------------------------------------------------------------------------- CIDs


@pytest.mark.parametrize("data", [b"", b"small", bytes(700_000)])  # raw leaf, and a dag-pb tree
def test_cids_survive_the_trip_through_the_chain_form(data: bytes) -> None:
    cid = content_id.compute(data)
    codec, digest = cid_to_chain(cid)
    assert (codec, len(digest)) == ((0x55 if len(data) < content_id.CHUNK_SIZE else 0x70), 32)
    assert cid_from_chain(codec, digest) == cid


def test_a_cidv0_comes_back_as_cidv1() -> None:
    digest = hashlib.sha256(b"node").digest()
    version_zero = str(CID("base58btc", 0, "dag-pb", multihash.wrap(digest, "sha2-256")))
    assert version_zero.startswith("Qm")
    assert cid_from_chain(*cid_to_chain(version_zero)) == str(
        CID("base32", 1, "dag-pb", ("sha2-256", digest))
    )


@pytest.mark.parametrize(
    "cid",
    [
        "not a cid",
        str(CID("base32", 1, "dag-cbor", multihash.wrap(hashlib.sha256(b"x").digest(), "sha2-256"))),
        str(CID("base32", 1, "raw", multihash.wrap(hashlib.sha512(b"x").digest(), "sha2-512"))),
    ],
)
def test_cids_the_contract_cannot_store_are_refused(cid: str) -> None:
    with pytest.raises(ValueError):
        cid_to_chain(cid)


# ------------------------------------------------------------------------------------------- the adapter


def test_a_round_through_the_port(chain: TestChain) -> None:
    first, second = deploy_federation(chain, peers=2)
    ledger: Ledger = first
    assert isinstance(first, Ledger)
    assert ledger.last_gas_used is None
    assert ledger.settings() == make_settings()
    assert ledger.latest_canonical_model() == GENESIS
    assert ledger.round_log() == ()

    first.register()
    second.register()
    assert ledger.last_gas_used is not None and ledger.last_gas_used > 21_000
    assert ledger.is_participant(second.account) and not ledger.is_participant(chain.new_account().address)
    assert sorted(ledger.participants()) == sorted([first.account, second.account])

    state = ledger.current_round()
    assert (state.number, state.stage, state.phase, state.submission_count) == (
        1,
        1,
        RoundPhase.SUBMISSION,
        0,
    )
    assert (state.finalized_rounds, state.training_complete, state.expired) == (0, False, False)
    updates = [content_id.compute(b"update a"), content_id.compute(bytes(300_000))]
    first.submit_update(1, updates[0], 64)
    second.submit_update(1, updates[1], 128)
    assert [(entry.participant, entry.update_cid, entry.samples) for entry in ledger.submissions(1)] == [
        (first.account, updates[0], 64),
        (second.account, updates[1], 128),
    ]
    assert ledger.current_round().phase == RoundPhase.ATTESTATION

    merged = content_id.compute(b"merged model")
    first.attest_model(1, merged)
    assert ledger.canonical_model(1) is None
    second.attest_model(1, merged)
    assert ledger.canonical_model(1) == merged
    assert ledger.latest_canonical_model() == merged
    assert [(entry.number, entry.stage, entry.model_cid) for entry in ledger.round_log()] == [(1, 1, merged)]
    state = ledger.current_round()
    assert (state.number, state.stage, state.finalized_rounds) == (2, 2, 1)


def test_expired_is_read_on_the_chains_clock(chain: TestChain) -> None:
    (ledger,) = deploy_federation(chain, peers=1)
    chain.advance_time(301)
    assert ledger.current_round().expired
    ledger.close_expired_round()
    assert ledger.current_round().number == 2


def test_a_refused_transaction_names_the_custom_error(chain: TestChain) -> None:
    (ledger,) = deploy_federation(chain, peers=1)
    with pytest.raises(ContractRevertError) as caught:
        ledger.submit_update(1, GENESIS, 10)
    assert caught.value.reason == f"CoordinatorNotParticipant({ledger.account})"
    assert caught.value.reason in str(caught.value)
    assert not isinstance(caught.value, LedgerError)  # permanent (65), so nothing retries it


def test_a_refused_read_names_the_custom_error(chain: TestChain) -> None:
    (ledger,) = deploy_federation(chain, peers=1)
    with pytest.raises(ContractRevertError) as caught:
        ledger.canonical_model(7)
    assert caught.value.reason == "CoordinatorUnknownRound(7)"


def test_arguments_the_abi_cannot_carry_are_programming_errors(chain: TestChain) -> None:
    (ledger,) = deploy_federation(chain, peers=1)
    with pytest.raises(ValueError):
        ledger.submit_update(1, GENESIS, -1)
    with pytest.raises(ValueError):
        ledger.submit_update(1, "bafy-not-a-cid", 1)
    with pytest.raises(ValueError):
        ledger.canonical_model(-1)


def test_an_address_without_the_contract_is_a_ledger_error(chain: TestChain) -> None:
    ledger = EthereumLedger(chain.web3, chain.new_account().address, chain.new_account())
    with pytest.raises(LedgerError) as caught:
        ledger.settings()
    assert not isinstance(caught.value, ContractRevertError)


def test_an_account_without_ether_gets_a_ledger_error(chain: TestChain) -> None:
    (funded,) = deploy_federation(chain, peers=1)
    penniless = EthereumLedger(chain.web3, funded.contract_address, Account.create())
    with pytest.raises(LedgerError) as caught:
        penniless.register()
    assert not isinstance(caught.value, ContractRevertError)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"genesis_model_cid": "Qm-garbage"}, "genesis_model_cid"),
        ({"model_spec_digest": b"short"}, "model_spec_digest must be 32 bytes"),
        ({"federation_seed": 2**64}, "federation_seed"),
        ({"quorum": -1}, "quorum"),
        ({"stages": 0}, "CoordinatorInvalidSchedule(0, 1)"),
    ],
)
def test_deploy_refuses_bad_settings_as_configuration_errors(
    embedded_web3: Web3, changes: dict[str, Any], message: str
) -> None:
    deployer = Account.create()
    fund_embedded_accounts(embedded_web3, [deployer.address])
    with pytest.raises(ConfigurationError, match=message.replace("(", r"\(").replace(")", r"\)")):
        deploy_coordinator(embedded_web3, deployer, make_settings(**changes))


# ------------------------------------------------------------------------------------------- the network


def test_an_unreachable_node_is_a_ledger_error_after_retries() -> None:
    ledger = EthereumLedger.connect(
        "http://127.0.0.1:9", Account.create().address, Account.create(), retry_policy=FAST_RETRIES
    )
    with pytest.raises(LedgerError, match="unreachable") as caught:
        ledger.current_round()
    assert not isinstance(caught.value, ContractRevertError)
    with pytest.raises(LedgerError, match="unreachable"):
        ledger.register()


class FlakyProvider(EthereumTesterProvider):
    """An embedded chain whose transport fails the next ``failures`` requests, as a dropped link would."""

    def __init__(self) -> None:
        super().__init__()
        self.failures = 0

    def make_request(self, method: RPCEndpoint, params: Any) -> RPCResponse:
        if self.failures > 0:
            self.failures -= 1
            raise ConnectionError("link down")
        return super().make_request(method, params)


def test_transient_transport_failures_are_retried() -> None:
    provider = FlakyProvider()
    web3 = Web3(provider)
    owner, member = Account.create(), Account.create()
    fund_embedded_accounts(web3, [owner.address, member.address])
    address = deploy_coordinator(web3, owner, make_settings())
    ledger = EthereumLedger(web3, address, member, retry_policy=FAST_RETRIES)

    provider.failures = 2  # within the three attempts of each call
    assert ledger.current_round().number == 1
    provider.failures = 2
    ledger.register()
    assert ledger.is_participant(member.address)
    provider.failures = 3  # one more than the attempts
    with pytest.raises(LedgerError, match="unreachable"):
        ledger.current_round()


# ------------------------------------------------------------------------------------------- identity


def test_a_key_is_created_once_with_mode_0600(tmp_path: Path) -> None:
    key_file = tmp_path / "keys" / "device.key"
    account = load_or_create_account(key_file)
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(key_file.parent.stat().st_mode) == 0o700
    assert load_or_create_account(key_file).address == account.address
    assert os.listdir(key_file.parent) == ["device.key"]  # no temporary file left behind


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o660])
def test_a_key_file_others_can_read_is_refused(tmp_path: Path, mode: int) -> None:
    key_file = tmp_path / "device.key"
    load_or_create_account(key_file)
    key_file.chmod(mode)
    with pytest.raises(ConfigurationError, match=str(key_file)) as caught:
        load_or_create_account(key_file)
    assert "chmod 600" in str(caught.value)


@pytest.mark.parametrize("content", ["", "hello\n", "0x" + "zz" * 32, "ab" * 31, "00" * 32])
def test_a_malformed_key_file_is_refused_without_echoing_it(tmp_path: Path, content: str) -> None:
    key_file = tmp_path / "device.key"
    key_file.write_text(content)
    key_file.chmod(0o600)
    with pytest.raises(ConfigurationError, match=str(key_file)) as caught:
        load_or_create_account(key_file)
    assert content.strip() == "" or content.strip() not in str(caught.value)


def test_a_hex_key_with_prefix_and_newline_loads(tmp_path: Path) -> None:
    account = Account.create()
    key_file = tmp_path / "device.key"
    key_file.write_text("0x" + account.key.hex().removeprefix("0x") + "\n")
    key_file.chmod(0o600)
    assert load_or_create_account(key_file).address == account.address


# ------------------------------------------------------------------------------------------- artifact


def test_the_artifact_matches_the_source() -> None:
    """Recompile Coordinator.sol with the pinned solc; the committed artifact must be what it produces."""
    try:
        fresh = build.compile_contract()
    except build.CompilationError as error:
        pytest.fail(f"{error}\n`.ci/run` (npm ci at the repository root) installs node's solc 0.8.28")
    committed = load_artifact()
    stale = "the artifact is stale: run `python -m coordinator_contract.build` and commit it"
    assert fresh["abi"] == committed.abi, stale
    assert fresh["bytecode"] == committed.bytecode, stale
    assert fresh["source_sha256"] == committed.source_sha256, stale
    assert committed.solc_version.startswith("0.8.28+")
    assert build.ARTIFACT_FILE.read_text() == build.render_artifact(fresh), stale
    assert json.loads(build.ARTIFACT_FILE.read_text())["solc_version"] == fresh["solc_version"]


def test_a_transaction_that_reverts_once_mined_is_replayed_for_its_reason(
    chain: TestChain, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The state can change between the estimate and the block (another peer closed the round): the
    receipt then says only "failed", and the adapter replays the call to name the reason."""
    (ledger,) = deploy_federation(chain, peers=1)
    monkeypatch.setattr(
        ContractFunction, "estimate_gas", lambda self, transaction=None, block_identifier=None: 60_000
    )
    with pytest.raises(ContractRevertError) as caught:
        ledger.submit_update(1, GENESIS, 10)
    assert caught.value.reason == f"CoordinatorNotParticipant({ledger.account})"
    assert ledger.last_receipt is not None and ledger.last_receipt["status"] == 0
