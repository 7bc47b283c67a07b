"""``layerfed contract admit``: let devices into a permissioned federation.

With an allowlist (the default) the deployer's key allows each address; with membership by vote, a
member's key casts its vote for each address, which is allowed once a strict majority of the members
voted for it. Either way the device then registers itself when its agent starts. An open federation
needs no admission.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from agent.adapters.account_identity import load_or_create_account
from agent.adapters.ethereum_ledger import EthereumLedger
from agent.commands.deploy import load_allowlist, require_addresses
from agent.errors import ConfigurationError
from agent.ports.ledger import Membership


def admit(ledger: EthereumLedger, addresses: Iterable[str]) -> list[str]:
    """Allow (allowlist) or vote for (by vote) each address as ``ledger``'s account; one line per address.

    An address allowed already is reported, not an error, so the same allowlist file can be applied twice.
    """
    candidates = tuple(addresses)
    require_addresses(candidates)
    membership = ledger.settings().membership
    if membership is Membership.OPEN:
        raise ConfigurationError("this federation's membership is open: anyone may register, nobody admits")
    if membership is Membership.ALLOWLIST and ledger.deployer() != ledger.account:
        raise ConfigurationError(
            f"only the deployer {ledger.deployer()} keeps the allowlist; this key is {ledger.account}"
        )
    if membership is Membership.VOTE and not ledger.is_participant(ledger.account):
        raise ConfigurationError(f"{ledger.account} is not a member: only members vote to admit")
    lines = []
    for address in candidates:
        if ledger.is_allowed(address):
            lines.append(f"{address}: may register already")
        elif membership is Membership.ALLOWLIST:
            ledger.allow(address)
            lines.append(f"{address}: allowed")
        else:
            ledger.vote_to_admit(address)
            votes = ledger.admission_votes(address)
            members = len(ledger.participants())
            outcome = "allowed" if ledger.is_allowed(address) else "not yet a majority"
            lines.append(f"{address}: voted ({votes} of {members} members, {outcome})")
    return lines


def admit_addresses(
    chain_url: str, contract: str, key_file: Path, addresses: Iterable[str], address_file: Path | None
) -> list[str]:
    """``layerfed contract admit``: the addresses given and those in ``address_file``, admitted with the
    key in ``key_file`` (the deployer's for an allowlist, a member's by vote)."""
    candidates = [*addresses, *(load_allowlist(address_file) if address_file else ())]
    ledger = EthereumLedger.connect(chain_url, contract, load_or_create_account(key_file))
    return admit(ledger, candidates)
