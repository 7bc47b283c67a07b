"""The ledger port: the federation's shared record of rounds, updates and the models peers agreed on.

There is no server. Each device trains, pins its update to the content store, and records the update's CID
on the ledger; when a round's submission phase closes, every submitter fetches the round's updates, merges
them itself (deterministically, so honest peers obtain byte-identical models) and attests the CID of the
model it merged. The ledger finalizes the round when a strict majority of the round's submitters attest the
same CID: that model is the round's canonical model, and the next round starts from it.

Deadlines: a phase that passes its deadline is ended by anyone calling :meth:`Ledger.close_expired_round`.
A submission phase with at least one update then closes with what arrived, and attestation gets a fresh
window; a round without updates, or without a majority when attestation expires, fails: the previous
canonical model carries over, and the next round retrains the same schedule step. Round numbers only grow;
the stage of a round is ``finalized rounds // rounds per stage + 1`` when it opens.

CIDs cross this port as strings, CIDv1 in base32 (``bafkrei...``); an adapter may store them in any compact
form, but returns them in that spelling. A CID the ledger cannot record (not sha2-256, or a codec other than
raw and dag-pb) is a programming error: ``ValueError``.

Trust rules fixed at deployment (:class:`FederationSettings`): who may register (:class:`Membership`), the
largest sample count an update may claim, one update per CID and round, and a per-participant
:class:`ParticipantRecord` whose strikes (attesting a model other than the canonical one, or withholding the
attestation of a round that then fails at its deadline) suspend a participant from submitting for a number of
rounds.

Merge committees (also fixed at deployment): in a round with more than ``committee_threshold``
submissions, only ``committee_size`` of its submitters, drawn from randomness fixed when submission closes
that every peer can check (:meth:`Ledger.committee`), merge and attest, and a strict majority of that
committee finalizes the round; everyone else only downloads the canonical model. The draw is stored by its
own call, :meth:`Ledger.draw_committee`, which anyone may send once (a member does before it attests: the
ledger refuses attestations until then), so that no attestation pays for it. ``committee_size = 0``: every
submitter merges, whatever the federation's size.

Errors: :class:`agent.errors.ContractRevertError` when the ledger refuses a call, its ``reason`` naming the
refusal and its values, as in ``"CoordinatorRoundClosed(3)"`` (the custom errors of
``coordinator_contract/Coordinator.sol``; permanent: not a LedgerError); :class:`agent.errors.LedgerError`
when the chain cannot be reached (transient).

Implementation: ``agent.adapters.ethereum_ledger.EthereumLedger`` (the Coordinator contract over an
in-process chain or any JSON-RPC node).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import Protocol, runtime_checkable

__all__ = [
    "Attestation",
    "FederationSettings",
    "FinalizedRound",
    "Ledger",
    "LedgerRecord",
    "Membership",
    "ParticipantRecord",
    "RoundPhase",
    "RoundState",
    "RoundSummary",
    "Submission",
    "TrainingMode",
]


class TrainingMode(IntEnum):
    """How the federation trains the encoder; the values are the contract's."""

    LAYER_WISE = 0
    PROGRESSIVE = 1
    END_TO_END = 2


class RoundPhase(IntEnum):
    """Where a round stands; the values are the contract's."""

    SUBMISSION = 0  # updates accepted until the quorum or the deadline
    ATTESTATION = 1  # the round's submitters attest the model they merged
    FINALIZED = 2  # a strict majority attested one model: the round's canonical model
    FAILED = 3  # no update, or no majority before the deadline: the previous model carries over


class Membership(IntEnum):
    """Who may register; the values are the contract's."""

    ALLOWLIST = 0  # accounts the deployer allows (the default: permissioned)
    OPEN = 1  # anyone: one person can register many accounts, so for demos only
    VOTE = 2  # founding members the deployer allows, then whoever a strict majority of the members admits


@dataclass(frozen=True)
class FederationSettings:
    """What the federation's creator fixes once, at deployment."""

    training_mode: TrainingMode
    stages: int
    rounds_per_stage: int
    quorum: int  # submissions that close a round's submission phase early
    round_duration_seconds: int  # length of each submission window and each attestation window
    model_spec_digest: bytes  # 32 bytes naming the architecture and training recipe every peer must run
    genesis_model_cid: str  # the initial model every peer starts from
    federation_seed: int  # unsigned 64-bit seed from which peers derive shared randomness
    membership: Membership
    maximum_samples: int  # the largest sample count an update may claim (the recipe's)
    strike_limit: int  # strikes in a row that suspend a participant (0: nobody is ever suspended)
    suspension_rounds: int  # length of a first suspension, in rounds; each further one doubles
    committee_threshold: int = 0  # rounds with more submissions than this are merged by a committee
    committee_size: int = 0  # members of such a committee (0: every submitter merges, always)

    def has_committee(self, submission_count: int) -> bool:
        """Whether a round with ``submission_count`` submissions is merged by a committee."""
        return self.committee_size > 0 and submission_count > self.committee_threshold

    @property
    def open_membership(self) -> bool:
        """Whether anyone may register."""
        return self.membership is Membership.OPEN

    @property
    def total_rounds(self) -> int:
        """Finalized rounds after which training is complete."""
        return self.stages * self.rounds_per_stage


@dataclass(frozen=True)
class RoundState:
    """The current round, and where the whole schedule stands."""

    number: int  # 1-based; the last round once training is complete
    stage: int  # 1-based
    phase: RoundPhase
    deadline: int  # chain time (unix seconds) at which the current phase expires
    submission_count: int
    attestation_count: int
    finalized_rounds: int
    training_complete: bool
    chain_time: int  # timestamp of the latest block when this state was read

    @property
    def expired(self) -> bool:
        """Whether the phase's deadline had passed at ``chain_time`` (``close_expired_round`` will succeed).

        The latest block can lag the wall clock on chains that mine only on demand; then this stays False
        until the next block, and calling ``close_expired_round`` on the wall clock's word is harmless.
        """
        open_phases = (RoundPhase.SUBMISSION, RoundPhase.ATTESTATION)
        return self.phase in open_phases and self.chain_time > self.deadline


@dataclass(frozen=True)
class Submission:
    """One update recorded for a round."""

    participant: str  # checksummed address
    update_cid: str
    samples: int  # training samples behind the update: its weight in the merge


@dataclass(frozen=True)
class FinalizedRound:
    """A round that reached a canonical model."""

    number: int
    stage: int
    model_cid: str


@dataclass(frozen=True)
class RoundSummary:
    """A round's outcome as the chain records it, for any round up to the current one."""

    number: int
    stage: int
    phase: RoundPhase
    submission_count: int
    attestation_count: int
    canonical_model_cid: str | None  # None unless finalized
    attestation_expired: bool  # failed at its attestation deadline: its silent submitters withheld


@dataclass(frozen=True)
class Attestation:
    """One submitter's attestation of the model it merged for a round."""

    round_number: int
    participant: str  # checksummed address
    model_cid: str


@dataclass(frozen=True)
class ParticipantRecord:
    """What a participant did in the rounds it submitted to that are over, and whether it is suspended.

    In a finalized round a submitter attested the canonical model, attested another model (a strike), or
    did not attest (no strike: the majority did not need it); ``withheld`` counts rounds that failed at
    their attestation deadline without its attestation (a strike). ``strike_limit`` strikes in a row
    suspend it until round ``suspended_until_round`` is over; attesting the canonical model clears them.
    """

    submitted: int
    attested_canonical: int
    attested_other: int
    not_attested: int
    withheld: int
    strikes: int
    suspensions: int
    suspended_until_round: int  # 0: never suspended
    last_submitted_round: int  # 0: never submitted

    def suspended_in(self, round_number: int) -> bool:
        """Whether the participant may not submit to ``round_number``."""
        return round_number <= self.suspended_until_round


@runtime_checkable
class Ledger(Protocol):
    """The federation's record, as one participant (``account``) sees and writes it.

    Writing methods send one transaction signed by ``account`` and return once it is mined.
    """

    @property
    def account(self) -> str:
        """This participant's checksummed address."""
        ...

    @property
    def last_gas_used(self) -> int | None:
        """Gas used by the last transaction this ledger sent; None before the first."""
        ...

    def settings(self) -> FederationSettings:
        """The federation's settings, as fixed at deployment."""
        ...

    def register(self) -> None:
        """Join the federation (ContractRevertError if registered already or not allowed)."""
        ...

    def leave(self) -> None:
        """Leave the federation; an update already submitted to the current round stays."""
        ...

    def is_participant(self, address: str) -> bool:
        """Whether ``address`` is a registered participant."""
        ...

    def participants(self) -> tuple[str, ...]:
        """The registered participants' addresses, in no particular order."""
        ...

    def current_round(self) -> RoundState:
        """The current round's state."""
        ...

    def submit_update(self, round_number: int, update_cid: str, samples: int) -> None:
        """Record this participant's update for the current round ``round_number``."""
        ...

    def submissions(self, round_number: int) -> tuple[Submission, ...]:
        """The updates recorded for a round, in arrival order."""
        ...

    def attest_model(self, round_number: int, model_cid: str) -> None:
        """Attest the model this participant merged from round ``round_number``'s updates."""
        ...

    def close_expired_round(self) -> None:
        """End the current phase after its deadline (see the module's deadline rule)."""
        ...

    def draw_committee(self, round_number: int) -> bool:
        """Store the draw of the merge committee of ``round_number`` (in attestation, with a committee), so
        that its members may attest; False, with nothing sent, when it is drawn already (members race to
        draw, harmlessly: the committee is the same whoever draws). ContractRevertError
        ``CoordinatorCommitteeNotDrawable`` for a round without a committee to draw, or (on a chain) one that
        closed in the latest block, whose hash the draw takes: try again once the next block exists."""
        ...

    def committee(self, round_number: int) -> tuple[str, ...]:
        """The round's merge committee (checksummed addresses, in draw order); empty while the round takes
        submissions and in a round every submitter merges. Before :meth:`draw_committee` stored it, the
        committee a draw now would pick."""
        ...

    def canonical_model(self, round_number: int) -> str | None:
        """A round's canonical model; None unless the round is finalized."""
        ...

    def latest_canonical_model(self) -> str:
        """The canonical model of the last finalized round; the genesis model before any."""
        ...

    def round_log(self) -> tuple[FinalizedRound, ...]:
        """Every finalized round with its canonical model, oldest first."""
        ...

    def round_summary(self, round_number: int) -> RoundSummary:
        """A round's stage, phase, counts and canonical model (ContractRevertError for a future round)."""
        ...

    def attestations(self, round_number: int) -> tuple[Attestation, ...]:
        """Who attested which model in a round, in the order the chain recorded them."""
        ...

    def participant_record(self, address: str) -> ParticipantRecord:
        """``address``'s record (all zeros for an account that never submitted)."""
        ...


class LedgerRecord(Protocol):
    """The reads of the record of rounds that retention and verification make: a :class:`Ledger` is one,
    and so is the round engine's cache in front of one (agent.engine.chain_cache)."""

    def submissions(self, round_number: int) -> tuple[Submission, ...]:
        """As :meth:`Ledger.submissions`."""
        ...

    def canonical_model(self, round_number: int) -> str | None:
        """As :meth:`Ledger.canonical_model`."""
        ...

    def latest_canonical_model(self) -> str:
        """As :meth:`Ledger.latest_canonical_model`."""
        ...

    def round_log(self) -> tuple[FinalizedRound, ...]:
        """As :meth:`Ledger.round_log`."""
        ...
