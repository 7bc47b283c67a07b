"""An in-memory twin of the Coordinator contract, for tests of code that talks to the ledger port.

Like httpx's mock transport, it ships in the package so that tests (ours and an integrator's) can run the
round engine end to end in milliseconds, through its public ``run``, without an Ethereum chain: no solc
artifact, no eth-tester, no transactions, no gas. One :class:`InMemoryCoordinator` holds the federation's
state; :meth:`InMemoryCoordinator.ledger` gives each participant its view, a
:class:`agent.ports.ledger.Ledger` signed as that address.

It follows ``coordinator_contract/Coordinator.sol`` rule for rule (membership modes, one update per CID and
round, the claim cap, quorum, strict-majority finalization, the deadline rule, records, strikes and
suspensions, merge committees) and refuses what the contract refuses with a :class:`ContractRevertError`
whose ``reason`` starts with the contract's custom error name. ``tests/test_ledger_conformance.py`` runs the
same scenarios against this twin and against the real contract on the in-process chain, so the two cannot
drift apart.

Time is the ``clock`` given (default: the wall clock, in whole seconds, as block timestamps are); a test can
pass a manual clock to expire phases without waiting. There are no blocks: a committee is fixed when
submission closes, with :mod:`agent.adapters.committee_draw`'s rule from a seed hashed from the round's
submissions (the contract's seed is a block hash), so a test splits members from others by asking
:meth:`InMemoryLedger.committee`; as on the contract, attestations wait until someone stored the draw
(:meth:`InMemoryLedger.draw_committee`, or the ``close_expired_round`` that fails the round).
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from agent import content_id
from agent.adapters.committee_draw import draw_committee
from agent.errors import ContractRevertError

# Deliberate repetition of the Ethereum adapter's imports: both build the port's records.
from agent.ports.ledger import (
    Attestation,
    FederationSettings,
    FinalizedRound,
    Membership,
    ParticipantRecord,
    RoundPhase,
    RoundState,
    RoundSummary,
    Submission,
)

__all__ = ["InMemoryCoordinator", "InMemoryLedger"]

_MAXIMUM_SUSPENSION_DOUBLINGS = 8  # as the contract's MAXIMUM_SUSPENSION_DOUBLINGS


@dataclass
class _Round:
    stage: int
    deadline: int
    phase: RoundPhase = RoundPhase.SUBMISSION
    submissions: list[Submission] = field(default_factory=list)
    attestations: list[Attestation] = field(default_factory=list)
    canonical_model: str | None = None
    attestation_expired: bool = False
    committee: tuple[str, ...] = ()  # empty: every submitter merges
    committee_drawn: bool = False  # the contract's seed is stored: members may attest


@dataclass
class _Member:
    allowed: bool = False
    registered: bool = False
    record: ParticipantRecord = field(default_factory=lambda: ParticipantRecord(0, 0, 0, 0, 0, 0, 0, 0, 0))
    folded_through: int = 0  # the last submitted round already counted in ``record``


def _refuse(reason: str) -> ContractRevertError:
    return ContractRevertError(f"the coordinator refused the call: {reason}", reason)


class InMemoryCoordinator:
    """The federation's state, shared by every participant's :class:`InMemoryLedger` (thread-safe)."""

    def __init__(
        self, settings: FederationSettings, deployer: str, clock: Callable[[], float] = time.time
    ) -> None:
        self.settings = settings
        self.deployer = deployer
        self._clock = clock
        self._lock = threading.RLock()
        self._members: dict[str, _Member] = {}
        self._participants: list[str] = []
        self._admission_votes: dict[str, set[str]] = {}
        self._founded = False
        self._rounds: dict[int, _Round] = {1: _Round(1, self.now() + settings.round_duration_seconds)}
        self._current = 1
        self._finalized = 0
        self._latest_model = settings.genesis_model_cid

    def now(self) -> int:
        """The coordinator's time, as a block timestamp."""
        return int(self._clock())

    def ledger(self, account: str) -> InMemoryLedger:
        """``account``'s view of the federation."""
        return InMemoryLedger(self, account)

    # ------------------------------------------------------------------------------------- membership

    def allow(self, account: str) -> None:
        """The deployer's allowlist entry for ``account`` (by vote: founding members only)."""
        with self._lock:
            if self.settings.membership is Membership.OPEN:
                raise _refuse("CoordinatorMembershipOpen()")
            if self.settings.membership is Membership.VOTE and self._founded:
                raise _refuse("CoordinatorAdmissionByVote()")
            self._member(account).allowed = True

    def disallow(self, account: str) -> None:
        """Take ``account`` off the allowlist, and out of the participants (allowlist only)."""
        with self._lock:
            if self.settings.membership is Membership.OPEN:
                raise _refuse("CoordinatorMembershipOpen()")
            if self.settings.membership is Membership.VOTE:
                raise _refuse("CoordinatorAdmissionByVote()")
            member = self._member(account)
            member.allowed = False
            if member.registered:
                self._remove(account)

    def vote_to_admit(self, voter: str, candidate: str) -> None:
        with self._lock:
            if self.settings.membership is not Membership.VOTE:
                raise _refuse("CoordinatorAdmissionNotByVote()")
            if not self._member(voter).registered:
                raise _refuse(f"CoordinatorNotParticipant({voter})")
            if self._member(candidate).allowed:
                raise _refuse(f"CoordinatorAlreadyAllowed({candidate})")
            voters = self._admission_votes.setdefault(candidate, set())
            if voter in voters:
                raise _refuse(f"CoordinatorDuplicateVote({candidate}, {voter})")
            voters.add(voter)
            if len(voters) * 2 > len(self._participants):
                self._member(candidate).allowed = True

    def register(self, account: str) -> None:
        with self._lock:
            member = self._member(account)
            if member.registered:
                raise _refuse(f"CoordinatorAlreadyRegistered({account})")
            if self.settings.membership is not Membership.OPEN and not member.allowed:
                raise _refuse(f"CoordinatorNotAllowed({account})")
            if self.settings.membership is Membership.VOTE:
                self._founded = True
            member.registered = True
            self._participants.append(account)

    def leave(self, account: str) -> None:
        with self._lock:
            if not self._member(account).registered:
                raise _refuse(f"CoordinatorNotParticipant({account})")
            self._remove(account)

    def participants(self) -> tuple[str, ...]:
        with self._lock:
            return tuple(self._participants)

    def is_participant(self, account: str) -> bool:
        with self._lock:
            return account in self._members and self._members[account].registered

    # ----------------------------------------------------------------------------------------- rounds

    def submit_update(self, account: str, round_number: int, update_cid: str, samples: int) -> None:
        with self._lock:
            current = self._require_current(round_number)
            if current.phase is not RoundPhase.SUBMISSION or self.now() > current.deadline:
                raise _refuse(f"CoordinatorRoundClosed({round_number})")
            member = self._member(account)
            if not member.registered:
                raise _refuse(f"CoordinatorNotParticipant({account})")
            if member.record.last_submitted_round == round_number:
                raise _refuse(f"CoordinatorDuplicateSubmission({round_number}, {account})")
            update_cid = _require_cid(update_cid)
            if samples <= 0:
                raise _refuse(f"CoordinatorInvalidSampleCount({samples})")
            if samples > self.settings.maximum_samples:
                raise _refuse(f"CoordinatorSampleCountTooLarge({samples}, {self.settings.maximum_samples})")
            for earlier in current.submissions:
                if earlier.update_cid == update_cid:
                    raise _refuse(
                        f"CoordinatorDuplicateUpdate({round_number}, {update_cid}, {earlier.participant})"
                    )
            self._fold(account, member)
            if round_number <= member.record.suspended_until_round:
                raise _refuse(f"CoordinatorSuspended({account}, {member.record.suspended_until_round})")
            member.record = replace(member.record, last_submitted_round=round_number)
            current.submissions.append(Submission(account, update_cid, samples))
            if len(current.submissions) >= self.settings.quorum:
                self._close_submission(current)

    def attest_model(self, account: str, round_number: int, model_cid: str) -> None:
        with self._lock:
            current = self._require_current(round_number)
            if current.phase is not RoundPhase.ATTESTATION or self.now() > current.deadline:
                raise _refuse(f"CoordinatorAttestationClosed({round_number})")
            if self._member(account).record.last_submitted_round != round_number:
                raise _refuse(f"CoordinatorNotSubmitter({round_number}, {account})")
            if current.committee and not current.committee_drawn:
                raise _refuse(f"CoordinatorCommitteeNotDrawn({round_number})")
            if current.committee and account not in current.committee:
                raise _refuse(f"CoordinatorNotCommitteeMember({round_number}, {account})")
            if any(attestation.participant == account for attestation in current.attestations):
                raise _refuse(f"CoordinatorDuplicateAttestation({round_number}, {account})")
            model_cid = _require_cid(model_cid)
            current.attestations.append(Attestation(round_number, account, model_cid))
            votes = sum(1 for attestation in current.attestations if attestation.model_cid == model_cid)
            leading = max(
                sum(1 for other in current.attestations if other.model_cid == attestation.model_cid)
                for attestation in current.attestations
            )
            electorate = len(current.committee) or len(current.submissions)
            silent = electorate - len(current.attestations)
            if votes * 2 > electorate:
                self._finalize(current, model_cid)
            elif (leading + silent) * 2 <= electorate:
                self._fail(current)

    def close_expired_round(self) -> None:
        with self._lock:
            current = self._rounds[self._current]
            if current.phase is RoundPhase.FINALIZED:
                raise _refuse(f"CoordinatorTrainingComplete({self._finalized})")
            if self.now() <= current.deadline:
                raise _refuse(f"CoordinatorRoundNotExpired({self._current}, {current.deadline})")
            if current.phase is RoundPhase.SUBMISSION and current.submissions:
                self._close_submission(current)
            elif current.phase is RoundPhase.SUBMISSION:
                self._fail(current)
            else:
                current.committee_drawn = True  # drawn now if nobody drew it, as the contract does
                current.attestation_expired = True
                self._fail(current)

    def draw_committee(self, round_number: int) -> None:
        with self._lock:
            if not 1 <= round_number <= self._current:
                raise _refuse(f"CoordinatorUnknownRound({round_number})")
            stored = self._rounds[round_number]
            if stored.committee_drawn:
                raise _refuse(f"CoordinatorCommitteeAlreadyDrawn({round_number})")
            if not stored.committee or stored.phase is not RoundPhase.ATTESTATION:
                raise _refuse(f"CoordinatorCommitteeNotDrawable({round_number}, 0)")
            stored.committee_drawn = True

    # ------------------------------------------------------------------------------------------ views

    def current_round(self) -> RoundState:
        with self._lock:
            current = self._rounds[self._current]
            return RoundState(
                number=self._current,
                stage=current.stage,
                phase=current.phase,
                deadline=current.deadline,
                submission_count=len(current.submissions),
                attestation_count=len(current.attestations),
                finalized_rounds=self._finalized,
                training_complete=self._finalized == self.settings.total_rounds,
                chain_time=self.now(),
            )

    def submissions(self, round_number: int) -> tuple[Submission, ...]:
        with self._lock:
            stored = self._rounds.get(round_number)
            return tuple(stored.submissions) if stored else ()

    def attestations(self, round_number: int) -> tuple[Attestation, ...]:
        with self._lock:
            stored = self._rounds.get(round_number)
            return tuple(stored.attestations) if stored else ()

    def committee(self, round_number: int) -> tuple[str, ...]:
        with self._lock:
            stored = self._rounds.get(round_number)
            return stored.committee if stored else ()

    def canonical_model(self, round_number: int) -> str | None:
        with self._lock:
            stored = self._rounds.get(round_number)
            return stored.canonical_model if stored else None

    def latest_canonical_model(self) -> str:
        with self._lock:
            return self._latest_model

    def round_log(self) -> tuple[FinalizedRound, ...]:
        with self._lock:
            return tuple(
                FinalizedRound(number, stored.stage, stored.canonical_model)
                for number, stored in sorted(self._rounds.items())
                if stored.canonical_model is not None
            )

    def round_summary(self, round_number: int) -> RoundSummary:
        with self._lock:
            if not 1 <= round_number <= self._current:
                raise _refuse(f"CoordinatorUnknownRound({round_number})")
            stored = self._rounds[round_number]
            return RoundSummary(
                number=round_number,
                stage=stored.stage,
                phase=stored.phase,
                submission_count=len(stored.submissions),
                attestation_count=len(stored.attestations),
                canonical_model_cid=stored.canonical_model,
                attestation_expired=stored.attestation_expired,
            )

    def participant_record(self, account: str) -> ParticipantRecord:
        with self._lock:
            member = self._members.get(account)
            if member is None:
                return ParticipantRecord(0, 0, 0, 0, 0, 0, 0, 0, 0)
            last = member.record.last_submitted_round
            over = last != 0 and (last < self._current or self._rounds[last].phase is RoundPhase.FINALIZED)
            if over and member.folded_through != last:
                view = _Member(record=member.record, folded_through=member.folded_through)
                self._fold(account, view)  # a view: the contract's record() folds a copy, not storage
                return view.record
            return member.record

    # -------------------------------------------------------------------------------------- internals

    def _member(self, account: str) -> _Member:
        return self._members.setdefault(account, _Member())

    def _remove(self, account: str) -> None:
        self._participants.remove(account)
        self._members[account].registered = False

    def _require_current(self, round_number: int) -> _Round:
        if self._rounds[self._current].phase is RoundPhase.FINALIZED:
            raise _refuse(f"CoordinatorTrainingComplete({self._finalized})")
        if round_number != self._current:
            raise _refuse(f"CoordinatorRoundNotCurrent({round_number}, {self._current})")
        return self._rounds[round_number]

    def _fold(self, account: str, member: _Member) -> None:
        """Count the member's last submitted round, which is over, into its record (the contract's _fold)."""
        record = member.record
        last = record.last_submitted_round
        if last == 0 or member.folded_through == last:
            return
        member.folded_through = last
        done = self._rounds[last]
        attested = next(
            (
                attestation.model_cid
                for attestation in done.attestations
                if attestation.participant == account
            ),
            None,
        )
        strike = False
        record = replace(record, submitted=record.submitted + 1)
        if done.phase is RoundPhase.FINALIZED:
            if attested is None:
                record = replace(record, not_attested=record.not_attested + 1)
            elif attested == done.canonical_model:
                record = replace(record, attested_canonical=record.attested_canonical + 1, strikes=0)
            else:
                record = replace(record, attested_other=record.attested_other + 1)
                strike = True
        elif done.attestation_expired and attested is None and account in (done.committee or (account,)):
            record = replace(record, withheld=record.withheld + 1)
            strike = True
        limit = self.settings.strike_limit
        if strike and limit:
            record = replace(record, strikes=record.strikes + 1)
            if record.strikes >= limit:
                doublings = min(record.suspensions, _MAXIMUM_SUSPENSION_DOUBLINGS)
                record = replace(
                    record,
                    suspended_until_round=last + (self.settings.suspension_rounds << doublings),
                    suspensions=min(record.suspensions + 1, 255),
                    strikes=0,
                )
        member.record = record

    def _close_submission(self, current: _Round) -> None:
        current.phase = RoundPhase.ATTESTATION
        current.deadline = self.now() + self.settings.round_duration_seconds
        if self.settings.has_committee(len(current.submissions)):
            material = f"{self._current} {self.settings.federation_seed} " + " ".join(
                submission.update_cid for submission in current.submissions
            )
            seed = hashlib.sha256(material.encode()).digest()
            submitters = [submission.participant for submission in current.submissions]
            current.committee = draw_committee(seed, submitters, self.settings.committee_size)

    def _finalize(self, current: _Round, model_cid: str) -> None:
        current.phase = RoundPhase.FINALIZED
        current.canonical_model = model_cid
        self._latest_model = model_cid
        self._finalized += 1
        if self._finalized < self.settings.total_rounds:
            self._open_next_round()

    def _fail(self, current: _Round) -> None:
        current.phase = RoundPhase.FAILED
        self._open_next_round()

    def _open_next_round(self) -> None:
        stage = self._finalized // self.settings.rounds_per_stage + 1
        self._current += 1
        self._rounds[self._current] = _Round(stage, self.now() + self.settings.round_duration_seconds)


class InMemoryLedger:
    """One participant's :class:`agent.ports.ledger.Ledger` on an :class:`InMemoryCoordinator`."""

    def __init__(self, coordinator: InMemoryCoordinator, account: str) -> None:
        self.coordinator = coordinator
        self._account = account
        self._transactions = 0

    @property
    def account(self) -> str:
        return self._account

    @property
    def last_gas_used(self) -> int | None:
        return 0 if self._transactions else None  # no gas in memory; 0 once a "transaction" was sent

    def settings(self) -> FederationSettings:
        return self.coordinator.settings

    def register(self) -> None:
        self._transact(lambda: self.coordinator.register(self._account))

    def leave(self) -> None:
        self._transact(lambda: self.coordinator.leave(self._account))

    def vote_to_admit(self, candidate: str) -> None:
        self._transact(lambda: self.coordinator.vote_to_admit(self._account, candidate))

    def is_participant(self, address: str) -> bool:
        return self.coordinator.is_participant(address)

    def participants(self) -> tuple[str, ...]:
        return self.coordinator.participants()

    def current_round(self) -> RoundState:
        return self.coordinator.current_round()

    def submit_update(self, round_number: int, update_cid: str, samples: int) -> None:
        update_cid = _require_cid(update_cid)  # before any "transaction", as the adapter encodes it
        self._transact(
            lambda: self.coordinator.submit_update(self._account, round_number, update_cid, samples)
        )

    def submissions(self, round_number: int) -> tuple[Submission, ...]:
        return self.coordinator.submissions(round_number)

    def attest_model(self, round_number: int, model_cid: str) -> None:
        model_cid = _require_cid(model_cid)
        self._transact(lambda: self.coordinator.attest_model(self._account, round_number, model_cid))

    def close_expired_round(self) -> None:
        self._transact(self.coordinator.close_expired_round)

    def draw_committee(self, round_number: int) -> bool:
        try:
            self._transact(lambda: self.coordinator.draw_committee(round_number))
        except ContractRevertError as revert:
            if (revert.reason or "").startswith("CoordinatorCommitteeAlreadyDrawn"):
                return False  # as the Ethereum adapter: another member drew first
            raise
        return True

    def committee(self, round_number: int) -> tuple[str, ...]:
        return self.coordinator.committee(round_number)

    def canonical_model(self, round_number: int) -> str | None:
        return self.coordinator.canonical_model(round_number)

    def latest_canonical_model(self) -> str:
        return self.coordinator.latest_canonical_model()

    def round_log(self) -> tuple[FinalizedRound, ...]:
        return self.coordinator.round_log()

    def round_summary(self, round_number: int) -> RoundSummary:
        return self.coordinator.round_summary(round_number)

    def attestations(self, round_number: int) -> tuple[Attestation, ...]:
        return self.coordinator.attestations(round_number)

    def participant_record(self, address: str) -> ParticipantRecord:
        return self.coordinator.participant_record(address)

    def _transact(self, call: Callable[[], None]) -> None:
        self._transactions += 1
        call()


def _require_cid(cid: str) -> str:
    """``cid`` in the port's spelling; ValueError (a programming error) for what is not a CID."""
    return content_id.canonical(cid)
