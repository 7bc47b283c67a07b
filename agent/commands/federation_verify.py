"""``layerfed federation verify --round N``: is a finalized round's canonical model the merge of its updates?

Anyone who reaches the chain and the content store can run it, member of the federation or not: it reads
the round's submissions and canonical model from the Coordinator, re-merges the updates from the store
exactly as an honest elector does (:mod:`agent.engine.verification`), and compares. For a round merged by a
committee it also replays the committee's draw from chain data alone (the seed block's hash and the
submissions) and checks it against the committee the contract names, and it lists which members attested
what: after a forged finalization, those who attested the canonical model are the ones to remove (the
contract already struck the members who attested the true merge, as dissenters from the majority: the
record shows both sides).

Exit status: 0 when the canonical model is the merge (and the draw checks out), 65 (rejected data) when it
is not, 78 for a round that is not finalized.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from agent.adapters.account_identity import create_account
from agent.adapters.ethereum_ledger import EthereumLedger
from agent.adapters.ipfs_store import IpfsContentStore
from agent.adapters.local_store import LocalContentStore
from agent.commands.agent_config import load_agent_config
from agent.commands.run_agent import content_store
from agent.engine.federation import Federation
from agent.engine.verification import verify_round
from agent.errors import ConfigurationError, VerificationFailedError
from agent.ports.content_store import ContentStore
from agent.ports.ledger import RoundPhase


@dataclass(frozen=True)
class VerificationReport:
    round_number: int
    canonical_model_cid: str
    merged_model_cid: str
    base_model_cid: str
    updates_merged: int
    left_out: tuple[str, ...]
    committee: tuple[str, ...]  # empty: every submitter merged
    committee_replayed: bool  # the draw recomputed from chain data names the same committee
    attestations: dict[str, str]  # attester -> model CID

    @property
    def holds(self) -> bool:
        return self.canonical_model_cid == self.merged_model_cid and self.committee_replayed

    def to_json(self) -> str:
        return json.dumps({**asdict(self), "holds": self.holds}, indent=2, sort_keys=True)

    def render(self) -> str:
        verdict = "holds" if self.holds else "DOES NOT HOLD"
        lines = [
            f"round {self.round_number}: {verdict}",
            f"  canonical model  {self.canonical_model_cid}",
            f"  merge of updates {self.merged_model_cid}",
            f"  ({self.updates_merged} updates merged into {self.base_model_cid})",
        ]
        lines += [f"  left out {entry}" for entry in self.left_out]
        if self.committee:
            replay = (
                "matches the replayed draw" if self.committee_replayed else "DIFFERS from the replayed draw"
            )
            lines.append(f"  committee of {len(self.committee)} ({replay}):")
        else:
            lines.append("  every submitter merged:")
        for attester, model in sorted(self.attestations.items()):
            said = "the merge" if model == self.merged_model_cid else f"another model {model}"
            lines.append(f"    {attester} attested {said}")
        return "\n".join(lines)


def verify_federation_round(
    round_number: int,
    config: Path | None = None,
    chain_url: str | None = None,
    contract: str | None = None,
    ipfs_address: str | None = None,
    store_directory: Path | None = None,
) -> VerificationReport:
    """Check round ``round_number``; the chain, contract and store from the options or an agent config."""
    store: ContentStore | None = None
    if config is not None:
        agent = load_agent_config(config)
        chain_url, contract = chain_url or agent.federation.chain_url, contract or agent.federation.contract
        if not ipfs_address and store_directory is None:
            store = content_store(agent)
    if not chain_url or not contract:
        raise ConfigurationError("give --config, or both --chain-url and --contract")
    if store is None:
        if store_directory is not None:
            store = LocalContentStore(store_directory)
        else:
            store = IpfsContentStore(ipfs_address) if ipfs_address else IpfsContentStore()
    ledger = EthereumLedger.connect(chain_url, contract, create_account())
    return verify_ledger_round(ledger, store, round_number)


def verify_ledger_round(ledger: EthereumLedger, store: ContentStore, round_number: int) -> VerificationReport:
    """The check itself, on a ledger and a store already at hand."""
    summary = ledger.round_summary(round_number)
    if summary.phase is not RoundPhase.FINALIZED or summary.canonical_model_cid is None:
        raise ConfigurationError(f"round {round_number} is {summary.phase.name.lower()}, not finalized")
    federation = Federation.load(ledger, store)
    outcome = verify_round(ledger, store, federation, round_number)
    committee = ledger.committee(round_number)
    return VerificationReport(
        round_number=round_number,
        canonical_model_cid=summary.canonical_model_cid,
        merged_model_cid=outcome.merged_model_cid,
        base_model_cid=outcome.base_model_cid,
        updates_merged=outcome.updates_merged,
        left_out=outcome.left_out,
        committee=committee,
        committee_replayed=ledger.replay_committee_draw(round_number) == committee,
        attestations={entry.participant: entry.model_cid for entry in ledger.attestations(round_number)},
    )


def require_holds(report: VerificationReport) -> None:
    """VerificationFailedError (exit 65) unless the round checks out."""
    if not report.holds:
        raise VerificationFailedError(
            f"round {report.round_number}: the canonical model {report.canonical_model_cid} is not the merge "
            f"of the submitted updates ({report.merged_model_cid})"
            if report.canonical_model_cid != report.merged_model_cid
            else f"round {report.round_number}: the committee is not the one its draw gives"
        )
