"""``layerfed federation status`` and ``layerfed contract admit``, against the Coordinator on a test chain."""

from __future__ import annotations

import json

import pytest
from web3 import Web3

from agent import cli
from agent.commands.federation_status import cell, federation_status
from agent.commands.membership import admit
from agent.errors import ConfigurationError
from agent.ports.ledger import Membership
from tests.services.anvil import TestChain
from tests.test_coordinator_contract import DURATION, cid_of, deploy, voting_federation


def test_the_status_shows_who_did_what_in_each_round(chain: TestChain) -> None:
    federation = deploy(chain, peers=3, quorum=3, strike_limit=2, suspension_rounds=3)
    first, second, third = federation.peers
    federation.submit_all(1, 3)
    third.attest_model(1, cid_of("forged"))
    first.attest_model(1, cid_of("merged 1"))
    second.attest_model(1, cid_of("merged 1"))
    federation.submit_all(2, 3)
    first.attest_model(2, cid_of("merged 2"))
    chain.advance_time(DURATION + 1)
    first.close_expired_round()  # round 2 fails at its deadline: second and third withheld

    status = federation_status(federation.deployer, federation.deployer.contract_address)
    assert (status.current_round, status.finalized_rounds, status.membership) == (3, 1, "open")
    first_round, second_round, third_round = status.rounds
    assert first_round.canonical_model_cid == cid_of("merged 1")
    assert first_round.attestations[third.account] == cid_of("forged")
    assert [cell(first_round, peer.account) for peer in federation.peers] == ["C", "C", "O"]
    assert [cell(second_round, peer.account) for peer in federation.peers] == ["a", "W", "W"]
    assert [cell(third_round, peer.account) for peer in federation.peers] == [".", ".", "."]
    records = {participant.address: participant.record for participant in status.participants}
    assert (records[third.account].attested_other, records[third.account].withheld) == (1, 1)
    assert records[third.account].suspended_until_round == 2 + 3  # two strikes in a row
    assert records[second.account].strikes == 1

    table = status.render()
    assert f"{third.account}   O  W  .  " in table and "5 (now)" in table
    assert cid_of("merged 1") + " (2 votes)" in table
    decoded = json.loads(status.to_json())
    assert set(decoded["rounds"][1]["withheld"]) == {second.account, third.account}
    assert decoded["participants"][0]["record"]["submitted"] >= 1


def test_the_status_shows_only_the_recent_rounds(chain: TestChain) -> None:
    federation = deploy(chain, peers=1, quorum=1)
    for _ in range(3):
        chain.advance_time(DURATION + 1)
        federation.deployer.close_expired_round()
    status = federation_status(federation.deployer, "0x0", rounds_shown=2)
    assert [entry.number for entry in status.rounds] == [3, 4]


def test_admit_allows_with_the_deployers_key_only(chain: TestChain) -> None:
    federation = deploy(chain, peers=1, register=False, membership=Membership.ALLOWLIST)
    newcomer = chain.new_account().address
    assert admit(federation.deployer, [newcomer]) == [f"{newcomer}: allowed"]
    assert admit(federation.deployer, [newcomer]) == [f"{newcomer}: may register already"]
    with pytest.raises(ConfigurationError, match="only the deployer"):
        admit(federation.peers[0], [chain.new_account().address])
    with pytest.raises(ConfigurationError, match="not an Ethereum address"):
        admit(federation.deployer, ["0x123"])


def test_admit_votes_as_a_member_by_vote(chain: TestChain) -> None:
    federation = voting_federation(chain)
    newcomer = chain.new_account().address
    first, second, _ = federation.peers
    assert admit(first, [newcomer]) == [f"{newcomer}: voted (1 of 3 members, not yet a majority)"]
    assert admit(second, [newcomer]) == [f"{newcomer}: voted (2 of 3 members, allowed)"]
    with pytest.raises(ConfigurationError, match="not a member"):
        admit(federation.deployer, [chain.new_account().address])


def test_admit_refuses_an_open_federation(chain: TestChain) -> None:
    federation = deploy(chain, peers=0, membership=Membership.OPEN)
    with pytest.raises(ConfigurationError, match="open"):
        admit(federation.deployer, [chain.new_account().address])


def test_federation_status_needs_a_chain_and_a_contract(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["federation", "status", "--chain-url", "http://127.0.0.1:1"]) == 78
    assert "--chain-url and --contract" in capsys.readouterr().err


@pytest.mark.integration
def test_the_status_command_reads_an_rpc_chain(
    anvil_web3: Web3, anvil_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    federation = deploy(TestChain("anvil", anvil_web3, anvil_url), peers=2, quorum=2)
    federation.submit_all(1, 2)
    address = federation.deployer.contract_address
    assert cli.main(["federation", "status", "--chain-url", anvil_url, "--contract", address, "--json"]) == 0
    decoded = json.loads(capsys.readouterr().out)
    assert decoded["rounds"][0]["phase"] == "attestation" and len(decoded["rounds"][0]["submissions"]) == 2
    assert cli.main(["federation", "status", "--chain-url", anvil_url, "--contract", address]) == 0
    assert "participant" in capsys.readouterr().out
