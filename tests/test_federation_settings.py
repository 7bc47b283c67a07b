"""The trust settings a federation is deployed with: where they come from and how they are checked."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from eth_account import Account
from web3 import Web3

from agent import cli
from agent.adapters.account_identity import load_or_create_account
from agent.adapters.ethereum_ledger import EthereumLedger
from agent.adapters.local_store import LocalContentStore
from agent.commands.deploy import deploy_federation, load_allowlist, parse_membership
from agent.engine.federation import (
    DEFAULT_STRIKE_LIMIT,
    DEFAULT_SUSPENSION_ROUNDS,
    check_recipe,
    federation_settings,
)
from agent.errors import ConfigurationError, ContractRevertError
from agent.learning.aggregation.config import AggregationConfig
from agent.ports.ledger import Membership
from tests.services.anvil import rpc
from tests.test_round_engine import TINY

GENESIS = "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku"


def test_settings_take_the_claim_cap_from_the_recipe_and_default_to_an_allowlist() -> None:
    recipe = dataclasses.replace(TINY, aggregation=AggregationConfig(maximum_samples=5000))
    settings = federation_settings(recipe, GENESIS, rounds_per_stage=2, quorum=3, round_duration_seconds=60)
    assert settings.maximum_samples == 5000
    assert settings.membership is Membership.ALLOWLIST and not settings.open_membership
    assert (settings.strike_limit, settings.suspension_rounds) == (
        DEFAULT_STRIKE_LIMIT,
        DEFAULT_SUSPENSION_ROUNDS,
    )
    check_recipe(settings, recipe)


def test_a_recipe_whose_claim_cap_differs_from_the_chains_is_refused() -> None:
    settings = federation_settings(TINY, GENESIS, rounds_per_stage=1, quorum=1, round_duration_seconds=60)
    looser = dataclasses.replace(TINY, aggregation=AggregationConfig(maximum_samples=10**9))
    with pytest.raises(ConfigurationError, match="caps claims"):
        check_recipe(dataclasses.replace(settings, model_spec_digest=looser.digest()), looser)


def test_allowlist_files_skip_blanks_and_comments(tmp_path: Path) -> None:
    members = [Account.create().address for _ in range(2)]
    path = tmp_path / "allowlist"
    path.write_text(f"# lab devices\n{members[0]}\n\n  {members[1]}  # the spare\n")
    assert load_allowlist(path) == tuple(members)
    with pytest.raises(ConfigurationError, match="cannot read"):
        load_allowlist(tmp_path / "missing")


def test_membership_names() -> None:
    assert parse_membership("vote") is Membership.VOTE
    with pytest.raises(ConfigurationError, match="allowlist, open, vote"):
        parse_membership("anyone")


def test_an_open_federation_takes_no_allowlist(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="open federation has no allowlist"):
        deploy_federation(
            "http://127.0.0.1:1",
            tmp_path / "key",
            LocalContentStore(tmp_path / "content"),
            TINY,
            rounds_per_stage=1,
            quorum=1,
            round_duration_seconds=60,
            allowlist=(Account.create().address,),
            membership=Membership.OPEN,
        )


@pytest.mark.integration
def test_contract_deploy_is_permissioned_by_default(
    tmp_path: Path, anvil_web3: Web3, anvil_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """The issue's Sybil attempt against ``layerfed contract deploy``'s defaults: strangers cannot join."""
    key = tmp_path / "deployer.key"
    rpc(anvil_url, "anvil_setBalance", [load_or_create_account(key).address, hex(10**21)])
    member = Account.create()
    allowlist = tmp_path / "devices"
    allowlist.write_text(member.address + "\n")
    command = ["contract", "deploy", "--chain-url", anvil_url, "--key-file", str(key), "--quorum", "2"]
    command += ["--store-directory", str(tmp_path / "content"), "--allowlist", str(allowlist)]
    assert cli.main(command) == 0
    address = capsys.readouterr().out.split()[1]
    sybil = Account.create()
    rpc(anvil_url, "anvil_setBalance", [sybil.address, hex(10**21)])
    ledger = EthereumLedger(anvil_web3, address, sybil)
    settings = ledger.settings()
    assert settings.membership is Membership.ALLOWLIST
    assert settings.maximum_samples == AggregationConfig().maximum_samples
    assert ledger.is_allowed(member.address) and not ledger.is_allowed(sybil.address)
    with pytest.raises(ContractRevertError, match="CoordinatorNotAllowed"):
        ledger.register()
