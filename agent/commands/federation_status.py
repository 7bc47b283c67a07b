"""``layerfed federation status``: what every participant did, round by round, read from the chain alone.

An operator of 20 devices wants to see at a glance which rounds finalized and on which model, who
submitted, who attested what, who withholds or dissents, and who is suspended. Everything here comes from
the Coordinator contract (views and its ``ModelAttested`` events), nothing from a device's own files, so
it runs anywhere the chain can be reached and tells the same story on every machine.

The grid has one row per participant and one column per round; a cell says what the participant did:

====  ========================================================================================
C     submitted, attested the canonical model
O     submitted, attested another model (a strike)
s     submitted; the round finalized without its attestation (no strike)
W     submitted, withheld its attestation, and the round failed at its deadline (a strike)
a     submitted and attested; the round failed (split vote, or still open)
\\-    submitted; the round is still open or failed early
\\.    did not submit
====  ========================================================================================
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from agent.adapters.account_identity import create_account
from agent.adapters.ethereum_ledger import EthereumLedger
from agent.commands.agent_config import load_agent_config
from agent.errors import ConfigurationError
from agent.ports.ledger import Ledger, ParticipantRecord, RoundPhase

DEFAULT_ROUNDS_SHOWN = 20

LEGEND = (
    "C canonical, O another model (strike), s not needed, W withheld (strike), "
    "a attested without majority, - open or no vote, . absent"
)


@dataclass(frozen=True)
class RoundReport:
    """One round: its outcome, the updates submitted and who attested which model."""

    number: int
    stage: int
    phase: str
    canonical_model_cid: str | None
    submissions: dict[str, int]  # participant -> samples claimed
    update_cids: dict[str, str]  # participant -> update CID
    attestations: dict[str, str]  # participant -> model CID attested
    withheld: tuple[str, ...]  # submitters that did not attest a round that failed at its deadline


@dataclass(frozen=True)
class ParticipantReport:
    address: str
    registered: bool
    record: ParticipantRecord


@dataclass(frozen=True)
class FederationStatus:
    contract: str
    membership: str
    quorum: int
    maximum_samples: int
    strike_limit: int
    suspension_rounds: int
    current_round: int
    current_phase: str
    finalized_rounds: int
    total_rounds: int
    rounds: tuple[RoundReport, ...]
    participants: tuple[ParticipantReport, ...]

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True)

    def render(self) -> str:
        """The summary line, the rounds table, and the participants' grid and records."""
        lines = [
            f"federation {self.contract}: membership {self.membership}, quorum {self.quorum}, "
            f"claims up to {self.maximum_samples} samples, "
            + (
                f"{self.strike_limit} strikes in a row suspend for {self.suspension_rounds} rounds (doubling)"
                if self.strike_limit
                else "no suspensions"
            ),
            f"round {self.current_round} ({self.current_phase}), "
            f"{self.finalized_rounds} of {self.total_rounds} rounds finalized",
            "",
            f"{'round':>5}  {'stage':>5}  {'phase':<11} {'updates':>7}  {'attested':>8}  model",
        ]
        for entry in self.rounds:
            votes = sum(1 for model in entry.attestations.values() if model == entry.canonical_model_cid)
            model = f"{entry.canonical_model_cid} ({votes} votes)" if entry.canonical_model_cid else "-"
            lines.append(
                f"{entry.number:>5}  {entry.stage:>5}  {entry.phase:<11} {len(entry.submissions):>7}  "
                f"{len(entry.attestations):>8}  {model}"
            )
        header = " ".join(f"{entry.number % 100:>2}" for entry in self.rounds)
        lines += [
            "",
            f"{'participant':<42}  {header}  "
            "submitted canonical other not-needed withheld strikes suspended-until",
        ]
        for participant in self.participants:
            cells = " ".join(f"{cell(entry, participant.address):>2}" for entry in self.rounds)
            record = participant.record
            suspended = str(record.suspended_until_round) if record.suspended_until_round else "-"
            if record.suspended_in(self.current_round):
                suspended += " (now)"
            name = participant.address + ("" if participant.registered else " (left)")
            lines.append(
                f"{name:<42}  {cells}  {record.submitted:>9} {record.attested_canonical:>9} "
                f"{record.attested_other:>5} {record.not_attested:>10} {record.withheld:>8} "
                f"{record.strikes:>7} {suspended}"
            )
        lines += ["", LEGEND]
        return "\n".join(lines)


def cell(entry: RoundReport, address: str) -> str:
    """What ``address`` did in ``entry``'s round, as one grid letter (see the module docstring)."""
    if address not in entry.submissions:
        return "."
    attested = entry.attestations.get(address)
    if entry.phase == RoundPhase.FINALIZED.name.lower():
        if attested is None:
            return "s"
        return "C" if attested == entry.canonical_model_cid else "O"
    if address in entry.withheld:
        return "W"
    return "a" if attested is not None else "-"


def federation_status(
    ledger: Ledger, contract: str, rounds_shown: int = DEFAULT_ROUNDS_SHOWN
) -> FederationStatus:
    """Read the last ``rounds_shown`` rounds and every participant's record from ``ledger``."""
    settings = ledger.settings()
    state = ledger.current_round()
    first = max(1, state.number - rounds_shown + 1)
    rounds = tuple(_round_report(ledger, number) for number in range(first, state.number + 1))
    registered = set(ledger.participants())
    addresses = sorted(registered | {address for entry in rounds for address in entry.submissions})
    return FederationStatus(
        contract=contract,
        membership=settings.membership.name.lower(),
        quorum=settings.quorum,
        maximum_samples=settings.maximum_samples,
        strike_limit=settings.strike_limit,
        suspension_rounds=settings.suspension_rounds,
        current_round=state.number,
        current_phase=state.phase.name.lower(),
        finalized_rounds=state.finalized_rounds,
        total_rounds=settings.total_rounds,
        rounds=rounds,
        participants=tuple(
            ParticipantReport(address, address in registered, ledger.participant_record(address))
            for address in addresses
        ),
    )


def read_federation_status(
    config: Path | None, chain_url: str | None, contract: str | None, rounds_shown: int
) -> FederationStatus:
    """``layerfed federation status``: the chain and contract from the options, or else from an agent
    configuration; reading needs no key of the federation's, so a throwaway account reads."""
    if config is not None:
        federation = load_agent_config(config).federation
        chain_url, contract = chain_url or federation.chain_url, contract or federation.contract
    if not chain_url or not contract:
        raise ConfigurationError("give --config, or both --chain-url and --contract")
    ledger = EthereumLedger.connect(chain_url, contract, create_account())
    return federation_status(ledger, contract, rounds_shown=rounds_shown)


def _round_report(ledger: Ledger, number: int) -> RoundReport:
    summary = ledger.round_summary(number)
    submissions = ledger.submissions(number)
    attestations = {entry.participant: entry.model_cid for entry in ledger.attestations(number)}
    withheld: tuple[str, ...] = ()
    if summary.phase is RoundPhase.FAILED and summary.attestation_expired:
        electors = ledger.committee(number) or tuple(entry.participant for entry in submissions)
        withheld = tuple(elector for elector in electors if elector not in attestations)
    return RoundReport(
        number=number,
        stage=summary.stage,
        phase=summary.phase.name.lower(),
        canonical_model_cid=summary.canonical_model_cid,
        submissions={entry.participant: entry.samples for entry in submissions},
        update_cids={entry.participant: entry.update_cid for entry in submissions},
        attestations=attestations,
        withheld=withheld,
    )
