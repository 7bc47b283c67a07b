"""The round engine: one device's part in a leaderless federation, round after round.

Each round: read the canonical model from the chain -> train this device's stage with the learning core
-> clip and noise the update if the recipe asks for differential privacy -> pin the update -> record its
CID on the chain -> announce it -> wait until the round's submissions are closed (quorum or deadline;
the chain is the source of truth, the bus only wakes us early and lets us prefetch) -> fetch, verify and
validate every submitted update -> merge deterministically -> attest the merged model's CID (computed here,
as every store computes it) -> pin the model -> wait for the majority to finalize the round -> next round.
Attesting before pinning takes the pin off the critical path: the attestations are what finalize the round,
and a peer that downloads the canonical model retries until some member's pin makes it available.

In a federation with merge committees (``FederationSettings.committee_size``), a round with more submissions
than the threshold is merged only by the committee the chain draws when submission closes: a peer outside it
neither fetches the updates nor attests, and starts the next round from the canonical model, which is all it
downloads (one model). With ``EngineOptions.verify`` it re-merges such rounds anyway and compares its merge
with the canonical model once the round is final, a check anyone can make (``layerfed federation verify``).

Every step is idempotent and driven by what the chain says, with :mod:`agent.engine.checkpoint` for what
only this device knows, so a restart at any point resumes without redoing or losing work, and a device
that joins late starts from the latest canonical model. A device the chain suspended (its record crossed
the federation's strike limit) skips training and waits until its suspension is over, helping meanwhile
to close expired rounds.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import torch

from agent import content_id
from agent.engine.chain_cache import ChainCache
from agent.engine.checkpoint import CheckpointFile
from agent.engine.error_feedback_file import ErrorFeedbackFile
from agent.engine.federation import Federation
from agent.engine.inbox import Inbox, ParticipantRegistry
from agent.engine.privacy_noise import noise_seed
from agent.engine.retention import ContentRetention
from agent.engine.statistics import EngineStatistics
from agent.engine.training_step import ResumableTraining
from agent.engine.verification import base_model_of, merge_updates, unique_updates, validated_update
from agent.errors import (
    ConfigurationError,
    ContentMismatchError,
    ContractRevertError,
    LayerfedError,
    NetworkError,
    UpdateRejectedError,
)
from agent.learning.backends import TrainingBackend
from agent.learning.merging import MergeOutcome
from agent.learning.model_state import ModelState
from agent.learning.privacy.mechanism import privatize
from agent.learning.update import ModelUpdate, capped_claim
from agent.ports.content_store import ContentStore
from agent.ports.identity import Identity
from agent.ports.ledger import Ledger, RoundPhase, RoundState, Submission
from agent.ports.message_bus import MessageBus
from agent.protocol.messages import ModelAttested, UpdateAnnounced, encode, topic_of
from agent.retry_policy import RetryPolicy
from models.seeding import derive_seed

logger = logging.getLogger(__name__)

# A canonical model not in the store yet (its mergers attest before they pin) is asked for again after the
# engine's poll interval, then twice as long each time.
MODEL_FETCH_BACKOFF = 2.0

ALREADY_DONE_REASONS = (
    "CoordinatorDuplicateSubmission",
    "CoordinatorDuplicateAttestation",
    "CoordinatorAlreadyRegistered",
)

ROUND_OVER_REASONS = (
    "CoordinatorRoundNotCurrent",
    "CoordinatorAttestationClosed",
    "CoordinatorTrainingComplete",
)

# Reverts that mean the chain moved on between reading its state and acting on it (another peer closed the
# round, or the chain's clock is behind ours): read the state again. Every other revert ends the engine.
SIT_OUT_REASONS = ("CoordinatorSuspended", "CoordinatorDuplicateUpdate")

NOT_DRAWN_REASONS = ("CoordinatorNotCommitteeMember",)

# Or has not moved on yet: a committee is drawn in a block after the one that closed its round.
STATE_MOVED_ON_REASONS = (
    *ROUND_OVER_REASONS,
    "CoordinatorRoundClosed",
    "CoordinatorRoundNotExpired",
    "CoordinatorCommitteeNotDrawable",
)


@dataclass(frozen=True)
class EngineOptions:
    """Timing and safety limits of one engine."""

    poll_seconds: float = 1.0
    maximum_update_bytes: int = 256 * 1024 * 1024
    fetch_attempts: int = 5
    retry_seconds: float = 2.0
    training_checkpoint_seconds: float = 0.0  # also save training progress this often (0: only on stop)
    keep_canonical_models: int = (
        2  # canonical models of past rounds kept in the store (agent.engine.retention)
    )
    # Run the store's collection after unpinning. Off for an IPFS node: it collects on its own schedule
    # (kubo's --enable-gc), its collection stalls every add while it runs, and on js-ipfs two collections at
    # once (devices sharing a node) lose its MFS root, after which every later collection hangs.
    collect_garbage: bool = True
    # Re-merge the rounds this peer was not drawn to merge, and compare with the canonical model (costs the
    # downloads the committee saves this peer; a mismatch is logged and counted, the canonical model is kept).
    verify: bool = False
    # Updates fetched and verified at once when merging (threads): a round's downloads overlap instead of
    # queueing one behind the other. 1: one at a time.
    fetch_workers: int = 4

    def __post_init__(self) -> None:
        if self.fetch_workers < 1:
            raise ConfigurationError(f"fetch_workers must be at least 1, not {self.fetch_workers}")


@dataclass(frozen=True)
class MergedModel:
    """A round's merge: the model, its file's bytes and their CID (computed, not yet stored)."""

    cid: str
    payload: bytes
    state: ModelState


class RoundEngine:
    """Runs rounds until the federation's schedule is complete or ``stop`` is set."""

    def __init__(
        self,
        *,
        identity: Identity,
        ledger: Ledger,
        store: ContentStore,
        bus: MessageBus,
        images: torch.Tensor,
        state_directory: Path,
        federation_id: str,
        options: EngineOptions | None = None,
        statistics: EngineStatistics | None = None,
        on_round_finished: Callable[[int, str], None] | None = None,
        backend: TrainingBackend | None = None,
    ) -> None:
        self.identity = identity
        self.chain = ChainCache(ledger)  # reads; self.ledger is its ledger, for writes
        self.store = store
        self.bus = bus
        self.images = images
        self.federation_id = federation_id
        self.options = options or EngineOptions()
        self.statistics = statistics or EngineStatistics()
        self.checkpoints = CheckpointFile(state_directory)
        self.error_feedback = ErrorFeedbackFile(state_directory)
        self.training = ResumableTraining(state_directory, self.options.training_checkpoint_seconds, backend)
        self.round_state: RoundState | None = None  # the latest state read from the chain (for status)
        self.activity = "starting"  # starting, training, merging or waiting (for status)
        self._stop = threading.Event()
        self.on_round_finished = on_round_finished
        self.federation = Federation.load(ledger, store)
        self.inbox = Inbox(
            bus, federation_id, ParticipantRegistry(ledger.participants), self.statistics, identity
        )
        self._models: dict[str, ModelState] = {
            self.federation.settings.genesis_model_cid: self.federation.genesis
        }
        self._prefetched: dict[str, bytes] = {}  # filled by the fetch threads of a merge too
        self._prefetched_lock = threading.Lock()
        self._last_finalized = -1
        self.retention = ContentRetention(
            self.chain,
            store,
            self.federation.settings.genesis_model_cid,
            self.options.keep_canonical_models,
            collect_garbage=self.options.collect_garbage,
        )
        self._suspension_checked_round = 0
        self._suspended_until = 0
        self._committees: dict[int, tuple[str, ...]] = {}
        self._expectation = (0, False)  # (round, whether a committee is expected to merge it)
        self._reviewed_through = -1  # rounds reviewed after they ended (_review_finished_rounds)
        self._unpinned: MergedModel | None = None  # merged, maybe attested, not pinned yet
        self._pins_checked = False  # whether the checkpoint was checked for a pin a previous run left
        self._submitted_to: set[int] = set()  # rounds the chain records this device's update for
        # (round, {(participant, CID)}): the submissions read last to check announcements against
        self._recorded: tuple[int, frozenset[tuple[str, str]]] = (0, frozenset())

    @property
    def ledger(self) -> Ledger:
        """The chain this device writes to; its reads go through :attr:`chain` (agent.engine.chain_cache)."""
        return self.chain.ledger

    @ledger.setter
    def ledger(self, ledger: Ledger) -> None:
        self.chain.ledger = ledger  # what the cache already holds is the same chain's record

    # ----------------------------------------------------------------------------------------- running

    def run(self, stop: threading.Event | None = None) -> str:
        """Take part until training is complete; return the final canonical model's CID."""
        stop = stop or threading.Event()
        self._stop = stop
        self._join()
        self.inbox.start()
        while not stop.is_set():
            try:
                state = self.chain.current_round()
                self.round_state = state
                self._note_progress(state)
                if state.training_complete:
                    self._pin_pending_model()  # the last round's merged model, attested before its pin
                    return self.chain.latest_canonical_model()
                if not self._act(state):
                    self._wait(stop)
            except (NetworkError, ContractRevertError) as failure:
                if isinstance(failure, ContractRevertError) and not (failure.reason or "").startswith(
                    STATE_MOVED_ON_REASONS
                ):
                    raise
                logger.warning(
                    "%s: %s; retrying in %.1f s", self.identity.address, failure, self.options.retry_seconds
                )
                stop.wait(self.options.retry_seconds)
        return self.chain.latest_canonical_model()

    def _join(self) -> None:
        if self.ledger.is_participant(self.identity.address):
            return
        with self.statistics.measure("transaction"):
            try:
                self._transact(self.ledger.register)
            except ContractRevertError as revert:
                if not (revert.reason or "").startswith("CoordinatorNotAllowed"):
                    raise
                raise ConfigurationError(
                    f"{self.identity.address} may not join this federation yet: its membership is "
                    "permissioned; ask the deployer (or, by vote, the members) to run "
                    f"`layerfed contract admit {self.identity.address}`"
                ) from revert

    def _act(self, state: RoundState) -> bool:
        """Do the next step this device owes the current round; False when there is nothing to do."""
        if self._pin_pending_model():
            return True
        expired = state.expired or time.time() > state.deadline
        submitting = state.phase is RoundPhase.SUBMISSION and not expired  # else the submission is refused
        if submitting and not self._suspended(state.number) and not self._has_submitted(state.number):
            self._train_and_submit(state)
            return True
        if state.phase is RoundPhase.ATTESTATION and self._owes_attestation(state.number):
            if self._merges(state):
                self._merge_and_attest(state)
            else:
                self._stand_aside(state)
            return True
        open_phase = state.phase in (RoundPhase.SUBMISSION, RoundPhase.ATTESTATION)
        if open_phase and expired:
            with self.statistics.measure("transaction"):
                self._transact(self.ledger.close_expired_round)
            return True
        return False

    def _suspended(self, round_number: int) -> bool:
        """Whether the chain refuses this device's update to ``round_number`` (read once per round)."""
        if self._suspension_checked_round != round_number:
            self._suspension_checked_round = round_number
            record = self.ledger.participant_record(self.identity.address)
            self._suspended_until = record.suspended_until_round
            if record.suspended_in(round_number):
                self.statistics.add("rounds_suspended", 1)
                logger.warning(
                    "round %d: suspended until round %d is over (record: %d withheld, %d other models "
                    "attested); waiting",
                    round_number,
                    record.suspended_until_round,
                    record.withheld,
                    record.attested_other,
                )
        return round_number <= self._suspended_until

    def _wait(self, stop: threading.Event) -> None:
        """Wait for the next message or the poll interval; prefetch what it and those queued behind it
        announce (attestations are informational)."""
        self.activity = "waiting"
        message = self.inbox.next(self.options.poll_seconds)
        if message is not None and not stop.is_set():
            messages = (message, *self.inbox.drain())
            self._prefetch([message for message in messages if isinstance(message, UpdateAnnounced)])

    # ---------------------------------------------------------------------------------------- training

    def _has_submitted(self, round_number: int) -> bool:
        """Whether the chain records an update of this device for the round (a yes is remembered)."""
        if round_number in self._submitted_to:
            return True
        me = self.identity.address.lower()
        if any(submission.participant.lower() == me for submission in self.chain.submissions(round_number)):
            self._submitted_to.add(round_number)
            return True
        return False

    def _train_and_submit(self, state: RoundState) -> None:
        base_cid = self.chain.latest_canonical_model()
        checkpoint = self.checkpoints.load().for_round(state.number, base_cid)
        if not checkpoint.update_cid:
            base = self._model(base_cid)
            seed = derive_seed(
                self.federation.config.federation_seed, "train", state.number, self.identity.address.lower()
            )
            self.activity = "training"
            with self.statistics.measure("training"):
                result = self.training.train(
                    state.number,
                    base_cid,
                    base,
                    state.stage,
                    self.images,
                    self.federation.config,
                    seed,
                    self._stop.is_set,
                )
            if result is None:  # stopped mid-training: the step is saved, the next start continues it
                return
            self.statistics.add("updates_trained", 1)
            update = capped_claim(result.update, self.federation.config.aggregation.maximum_samples)
            update = self._private(update, state.number, state.stage, base_cid)
            payload = self.error_feedback.compress(state.number, update, self.federation.config.compression)
            with self.statistics.measure("pin"):
                cid = self.store.put(payload)
            self.statistics.add("bytes_uploaded", len(payload))
            checkpoint = checkpoint.with_update(cid, update.samples)
            self.checkpoints.save(checkpoint)
            self.training.discard()
            logger.info(
                "round %d stage %d: trained, loss %.4f, update %s",
                state.number,
                state.stage,
                result.metrics.loss,
                cid,
            )
        with self.statistics.measure("transaction"):
            try:
                self._transact(
                    lambda: self.ledger.submit_update(
                        state.number, checkpoint.update_cid, checkpoint.update_samples
                    )
                )
            except ContractRevertError as revert:
                # Suspended since the record was read, or another peer submitted byte-identical bytes (a
                # destroyed model can make honest peers' deltas equal): either way this round goes on
                # without this device's submission, and retrying would only be refused again.
                if not (revert.reason or "").startswith(SIT_OUT_REASONS):
                    raise
                logger.warning("round %d: the chain refused the update: %s", state.number, revert.reason)
                self._suspended_until = max(self._suspended_until, state.number)
                return
        self._submitted_to.add(state.number)
        announcement = UpdateAnnounced(
            federation=self.federation_id,
            round=state.number,
            stage=state.stage,
            participant=self.identity.address,
            cid=checkpoint.update_cid,
            samples=checkpoint.update_samples,
            sent_at=_now_milliseconds(),
        )
        self._publish(announcement)

    def _private(self, update: ModelUpdate, round_number: int, stage: int, base_cid: str) -> ModelUpdate:
        """``update`` as the recipe lets it leave the device: clipped and noised under its privacy."""
        privacy = self.federation.config.privacy
        if not privacy.enabled:
            return update
        seed = noise_seed(self.identity, self.federation_id, round_number, stage, base_cid)
        private = privatize(update, privacy, seed)
        logger.info(
            "round %d: update norm %.4g %s to %g, noise multiplier %g",
            round_number,
            private.norm_before,
            "clipped" if private.clipped else "within the bound",
            privacy.clip_norm,
            privacy.noise_multiplier,
        )
        return private.update

    # ----------------------------------------------------------------------------------------- merging

    def _owes_attestation(self, round_number: int) -> bool:
        checkpoint = self.checkpoints.load()
        if checkpoint.round_number == round_number and checkpoint.attested:
            return False
        return self._has_submitted(round_number)

    def _merges(self, state: RoundState) -> bool:
        """Whether this peer merges and attests the round ``state`` describes (its submissions are closed):
        always, unless the round has a committee and this peer is not on it."""
        if not self.federation.settings.has_committee(state.submission_count):
            return True  # too few submissions for a committee (or none ever): no need to ask the chain
        round_number = state.number
        if round_number not in self._committees:
            self._committees = {round_number: self.chain.committee(round_number)}
        committee = self._committees[round_number]
        return not committee or self._is_member(committee)

    def _is_member(self, committee: tuple[str, ...]) -> bool:
        me = self.identity.address.lower()
        return any(member.lower() == me for member in committee)

    def _stand_aside(self, state: RoundState) -> None:
        """A round this peer was not drawn to merge: it owes no attestation (counted, and with ``verify``
        re-merged, once the round is over: :meth:`_review_finished_rounds`)."""
        base_cid = self.chain.latest_canonical_model()
        checkpoint = self.checkpoints.load().for_round(state.number, base_cid)
        logger.info("round %d: not drawn to merge; waiting for the committee", state.number)
        self.checkpoints.save(checkpoint.with_attestation())

    def _review_finished_rounds(self, current_round: int) -> None:
        """For each round over since the last review that this peer submitted to but was not drawn to merge:
        count it, and with ``verify`` re-merge it and compare with its canonical model. Done after the round
        rather than during it, so that no round escapes because the committee was quicker than our poll; the
        updates of the previous round are still kept (agent.engine.retention)."""
        first, self._reviewed_through = self._reviewed_through + 1, current_round - 1
        if self.federation.settings.committee_size == 0:
            return
        for number in range(first, current_round):
            committee = self.chain.committee(number)
            if not committee or not self._has_submitted(number) or self._is_member(committee):
                continue
            self.statistics.add("rounds_outside_committee", 1)
            canonical = self.chain.canonical_model(number)
            if self.options.verify and canonical is not None:
                self._verify(number, canonical)

    def _verify(self, round_number: int, canonical: str) -> None:
        """Re-merge a finalized round from its base model and compare with the canonical model."""
        base_cid = base_model_of(self.chain, round_number, self.federation.settings.genesis_model_cid)
        stage = self.chain.round_summary(round_number).stage
        merge = self._merge(round_number, stage, base_cid)
        if merge is None:
            return
        merged = merge.cid
        self.statistics.add("rounds_verified", 1)
        if merged == canonical:
            logger.info("round %d: verified, the canonical model is the merge of the updates", round_number)
            return
        self.statistics.add("verification_mismatches", 1)
        logger.error(
            "round %d: the committee finalized %s, but the merge of the submitted updates is %s; run "
            "`layerfed federation verify --round %d` and report the committee",
            round_number,
            canonical,
            merged,
            round_number,
        )

    def _merge(self, round_number: int, stage: int, base_cid: str) -> MergedModel | None:
        """Fetch, validate and merge the round's updates (nothing is stored); None when stopped meanwhile."""
        base = self._model(base_cid)
        submissions = unique_updates(self.chain.submissions(round_number))

        def verified(submission: Submission) -> ModelUpdate | None:
            return self._verified_update(submission, base, round_number, stage, timer)

        # Fetched and verified in parallel; the merge takes them in chain order, as if one at a time.
        with (
            self.statistics.overlapping() as timer,
            ThreadPoolExecutor(self.options.fetch_workers, thread_name_prefix="fetch") as pool,
        ):
            results = list(pool.map(verified, submissions))
        updates = [
            (submission.participant, update)
            for submission, update in zip(submissions, results, strict=True)
            if update is not None
        ]
        if self._stop.is_set():  # a fetch may have given up on the stop: never merge without its update
            return None
        with self.statistics.measure("merge"):
            outcome, payload = merge_updates(self.federation, base, updates)
            merged = outcome.state
        self._report_decisions(round_number, outcome)
        self.statistics.add("updates_merged", len(updates))
        return MergedModel(content_id.compute(payload), payload, merged)

    def _merge_and_attest(self, state: RoundState) -> None:
        base_cid = self.chain.latest_canonical_model()
        checkpoint = self.checkpoints.load().for_round(state.number, base_cid)
        self.activity = "merging"
        if not checkpoint.merged_model_cid:
            merge = self._merge(state.number, state.stage, base_cid)
            if merge is None:
                return
            self._unpinned = merge  # pinned once attested (_pin_pending_model): attesting needs the CID only
            # Only the base (the next base if this round fails) and the merge (the next base if it
            # finalizes): a model per round kept here would grow by the model's size every round.
            self._models = {base_cid: self._model(base_cid), merge.cid: merge.state}
            checkpoint = checkpoint.with_merged_model(merge.cid)
            self.checkpoints.save(checkpoint)
        if self._committees.get(state.number):
            self._draw_committee(state.number)
        try:
            with self.statistics.measure("attest"):
                self._transact(lambda: self.ledger.attest_model(state.number, checkpoint.merged_model_cid))
        except ContractRevertError as revert:
            if (revert.reason or "").startswith(NOT_DRAWN_REASONS):
                # The chain drew another committee than this peer computed (a draw more than 256 blocks
                # after the close takes a later seed block): it merged in vain, and owes nothing.
                logger.warning("round %d: %s", state.number, revert.reason)
                self.checkpoints.save(checkpoint.with_attestation())
                return
            if not (revert.reason or "").startswith(ROUND_OVER_REASONS):
                raise
            self._compare_with_canonical(state.number, checkpoint.merged_model_cid)
            self.checkpoints.save(checkpoint.with_attestation())
            return
        self.checkpoints.save(checkpoint.with_attestation())
        self._publish(
            ModelAttested(
                federation=self.federation_id,
                round=state.number,
                participant=self.identity.address,
                model_cid=checkpoint.merged_model_cid,
                sent_at=_now_milliseconds(),
            )
        )

    def _draw_committee(self, round_number: int) -> None:
        """Store the committee's draw unless another member did: the chain accepts no attestation before
        it. Sent after merging, so that members rarely race (a lost race costs nothing but a gas estimate,
        or a refused transaction when two draws share a block)."""
        with self.statistics.measure("transaction"):
            if not self.ledger.draw_committee(round_number):
                return
        logger.info("round %d: drew the committee", round_number)
        self._count_transaction()

    def _pin_pending_model(self) -> bool:
        """Pin the merged model this device attested (or tried to) but has not pinned; False if none waits.

        Called before any other step, so that a restart between attesting and pinning pins first. The bytes
        are in memory unless the process restarted; then the store may hold them already (another member
        pinned the same model), else the round is merged again (the merge is deterministic) and its CID
        checked against the attested one.
        """
        if self._pins_checked and self._unpinned is None:
            return False
        self._pins_checked = True
        checkpoint = self.checkpoints.load()
        if self._unpinned is not None and self._unpinned.cid != checkpoint.merged_model_cid:
            self._unpinned = None  # merged for a round that moved on before this device attested
        if not checkpoint.pin_pending:
            return False
        cid = checkpoint.merged_model_cid
        if self._unpinned is None and not self.store.has(cid):
            stage = self.chain.round_summary(checkpoint.round_number).stage
            merge = self._merge(checkpoint.round_number, stage, checkpoint.base_model_cid)
            if merge is None:  # stopped meanwhile: the next start tries again
                return True
            if merge.cid != cid:
                logger.warning(
                    "round %d: cannot pin the attested model %s: its bytes are gone, and merging the round "
                    "again gave %s (an update is missing); keeping nothing of it",
                    checkpoint.round_number,
                    cid,
                    merge.cid,
                )
                self.checkpoints.save(checkpoint.without_merged_model())
                return True
            self._unpinned = merge
        with self.statistics.measure("pin"):
            if self._unpinned is not None:
                self.store.put(self._unpinned.payload)
            else:
                self.store.pin(cid)
        self._unpinned = None
        self.checkpoints.save(checkpoint.with_pinned_model())
        return True

    def _report_decisions(self, round_number: int, outcome: MergeOutcome) -> None:
        """Log and count which peers' updates the aggregation rule discarded, clipped or down-weighted."""
        for decision in outcome.decisions:
            self.statistics.note_filtered(decision.label, decision.action)
            log = logger.warning if decision.action == "discarded" else logger.info
            log(
                "round %d: %s %s the update of %s: %s",
                round_number,
                decision.rule,
                decision.action,
                decision.label,
                decision.detail,
            )

    def _compare_with_canonical(self, round_number: int, merged_cid: str) -> None:
        """The majority finalized the round before our attestation: check that we agree with it."""
        canonical = self.chain.canonical_model(round_number)
        if canonical == merged_cid:
            logger.info("round %d was finalized before our attestation, with our model", round_number)
        else:
            logger.warning(
                "round %d was finalized as %s, but this peer merged %s; continuing from the canonical model",
                round_number,
                canonical,
                merged_cid,
            )

    def _verified_update(
        self,
        submission: Submission,
        base: ModelState,
        round_number: int,
        stage: int,
        timer: EngineStatistics,
    ) -> ModelUpdate | None:
        """The update ``submission`` names if it can be fetched and is valid; None (logged, counted) if not.

        Runs in a merge's fetch threads: ``timer`` measures its steps (EngineStatistics.overlapping).
        """
        cid = submission.update_cid
        try:
            payload = self._fetch(cid, timer)
            with timer.measure("verify"):
                return validated_update(payload, submission.samples, base, self.federation, stage)
        except (UpdateRejectedError, ContentMismatchError, NetworkError) as rejection:
            self.statistics.add("rejected_updates", 1)
            logger.warning("round %d: left out update %s: %s", round_number, cid, rejection)
            return None

    def _fetch(self, cid: str, timer: EngineStatistics | None = None) -> bytes:
        """Bytes of ``cid`` (prefetched, or from the store with retries), checked against the size limit;
        ``timer`` measures the download (default: this engine's statistics). Safe from several threads."""
        with self._prefetched_lock:
            prefetched = self._prefetched.get(cid)
        if prefetched is not None:
            return prefetched
        measured = timer or self.statistics

        def fetch() -> bytes:
            with measured.measure("fetch"):
                return self.store.get(cid)

        policy = RetryPolicy(self.options.fetch_attempts, self.options.retry_seconds, backoff_factor=1.0)
        payload = policy.call(fetch, retry_on=NetworkError, stop=self._stop, description=f"fetching {cid}")
        if len(payload) > self.options.maximum_update_bytes:
            raise UpdateRejectedError(
                f"{cid} is {len(payload)} bytes, above the limit {self.options.maximum_update_bytes}"
            )
        self.statistics.add("bytes_downloaded", len(payload))
        with self._prefetched_lock:
            self._prefetched[cid] = payload
        return payload

    # ------------------------------------------------------------------------------------------ models

    def _model(self, cid: str) -> ModelState:
        """A canonical model by CID, from memory or the store, validated against the recipe's shapes."""
        if cid not in self._models:

            def fetch() -> bytes:
                with self.statistics.measure("fetch"):
                    return self.store.get(cid)

            # Its mergers attest before they pin: right after finalization it may not be stored yet.
            policy = RetryPolicy(
                self.options.fetch_attempts,
                min(self.options.poll_seconds, self.options.retry_seconds),
                backoff_factor=MODEL_FETCH_BACKOFF,
            )
            payload = policy.call(
                fetch, retry_on=NetworkError, stop=self._stop, description=f"fetching model {cid}"
            )
            self.statistics.add("bytes_downloaded", len(payload))
            self._models = {cid: self.federation.validated_model(payload)}
        return self._models[cid]

    # ---------------------------------------------------------------------------------------- messages

    def _prefetch(self, announcements: list[UpdateAnnounced]) -> None:
        """Fetch, several at once, the updates announced for the current round that the chain records
        under their announcer. Announcements of other rounds (merged already, or not open here yet) and of
        rounds a committee will merge are left for the merge."""
        wanted: dict[str, UpdateAnnounced] = {}
        for message in announcements:
            with self._prefetched_lock:
                known = message.cid in self._prefetched
            if known or message.cid in wanted or message.round != self.inbox.current_round:
                continue
            if self._committee_expected(message.round) and not self.options.verify:
                continue  # most peers will not merge this round: fetch only once drawn (in _merge)
            if not self._is_recorded(message):
                self.statistics.add("rejected_messages", 1)
                logger.warning(
                    "announcement of %s by %s is not recorded on chain for round %d",
                    message.cid,
                    message.participant,
                    message.round,
                )
                continue
            wanted[message.cid] = message
        if not wanted:
            return

        def prefetch(cid: str) -> None:
            try:
                self._fetch(cid, timer)
            except LayerfedError as failure:
                logger.info("prefetch of %s failed: %s (will retry when merging)", cid, failure)

        workers = min(self.options.fetch_workers, len(wanted))
        with (
            self.statistics.overlapping() as timer,
            ThreadPoolExecutor(workers, thread_name_prefix="prefetch") as pool,
        ):
            list(pool.map(prefetch, wanted))

    def _is_recorded(self, message: UpdateAnnounced) -> bool:
        """Whether the chain records ``message``'s update under its sender. A peer announces after its
        transaction, so the submissions read for the previous announcement of the round usually have it;
        they are read again only when they do not."""
        claim = (message.participant.lower(), message.cid)
        round_number, recorded = self._recorded
        if round_number != message.round or claim not in recorded:
            submissions = self.chain.submissions(message.round)
            recorded = frozenset(
                (submission.participant.lower(), submission.update_cid) for submission in submissions
            )
            self._recorded = (message.round, recorded)
        return claim in recorded

    def _publish(self, message: UpdateAnnounced | ModelAttested) -> None:
        with self.statistics.measure("announce"):
            try:
                self.bus.publish(topic_of(message), encode(message, self.identity))
            except NetworkError as failure:  # the chain already has it: peers will find it by polling
                logger.warning("announcement not published: %s", failure)

    def _transact(self, operation: Callable[[], None]) -> None:
        """Send one transaction; a revert saying this was already done counts as done."""
        try:
            operation()
        except ContractRevertError as revert:
            if revert.reason and revert.reason.startswith(ALREADY_DONE_REASONS):
                logger.info("already done: %s", revert.reason)
                return
            raise
        self._count_transaction()

    def _count_transaction(self) -> None:
        """Count a transaction this device sent, and its gas."""
        self.statistics.add("transactions", 1)
        self.statistics.add("gas_used", self.ledger.last_gas_used or 0)

    def _collect_content(self, current_round: int) -> None:
        """Let the store drop what finished rounds left (agent.engine.retention); never fatal."""
        checkpoint = self.checkpoints.load()
        try:
            self.retention.collect(current_round, (checkpoint.update_cid, checkpoint.merged_model_cid))
        except LayerfedError as failure:
            logger.warning("round %d: could not collect old content: %s", current_round, failure)

    def _committee_expected(self, round_number: int) -> bool:
        """Whether the federation is large enough for committees to merge its rounds (read once a round)."""
        settings = self.federation.settings
        if settings.committee_size == 0:
            return False
        if self._expectation[0] != round_number:
            self._expectation = (round_number, settings.has_committee(len(self.ledger.participants())))
        return self._expectation[1]

    def _note_progress(self, state: RoundState) -> None:
        if self._reviewed_through < 0:  # rounds over before this run started are not reviewed
            self._reviewed_through = state.number - 1
        if state.finalized_rounds > self._last_finalized:
            self._review_finished_rounds(state.number if not state.training_complete else state.number + 1)
            if self._last_finalized >= 0:
                self.statistics.add("rounds_completed", state.finalized_rounds - self._last_finalized)
                if self.on_round_finished is not None:
                    self.on_round_finished(state.finalized_rounds, self.chain.latest_canonical_model())
            self._last_finalized = state.finalized_rounds
            with self._prefetched_lock:
                self._prefetched.clear()
            self.inbox.guard.advance(state.number)
            self._collect_content(state.number)
        self.inbox.current_round = state.number


def _now_milliseconds() -> int:
    return int(time.time() * 1000)
