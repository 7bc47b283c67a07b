"""Re-merging a finalized round from the chain and the content store: is its canonical model the merge?

On chain, a round's canonical model is whatever a strict majority of its electors (the committee, in a large
federation) attested. Anyone can check that word by doing what an honest elector does: fetch every update
the round recorded (bytes checked against their CIDs), validate it against the round's base model, merge
with the federation's aggregation rule and compare the merged model's CID with the canonical one. The merge
is bit-identical at every peer, so a different CID means the electors who attested it did not merge these
updates. The round engine (``EngineOptions.verify``) and ``layerfed federation verify`` both use it.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from agent import content_id
from agent.engine.federation import Federation
from agent.errors import ContentMismatchError, NetworkError, UpdateRejectedError
from agent.learning.compression import decompress_update
from agent.learning.merging import MergeOutcome, merge_round
from agent.learning.model_file import encode_model
from agent.learning.model_state import ModelState
from agent.learning.update import ModelUpdate, validate_update
from agent.ports.content_store import ContentStore
from agent.ports.ledger import Ledger, LedgerRecord, Submission

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RoundVerification:
    """The outcome of re-merging one round."""

    round_number: int
    base_model_cid: str
    canonical_model_cid: str | None
    merged_model_cid: str
    updates_merged: int
    left_out: tuple[str, ...]  # "CID: why" for each update that could not be fetched or was invalid

    @property
    def holds(self) -> bool:
        """Whether the canonical model is the merge of the round's updates."""
        return self.canonical_model_cid == self.merged_model_cid


def base_model_of(ledger: LedgerRecord, round_number: int, genesis_cid: str) -> str:
    """The model a round trained from: the canonical model of the last finalized round before it."""
    earlier = [entry.model_cid for entry in ledger.round_log() if entry.number < round_number]
    return earlier[-1] if earlier else genesis_cid


def validated_update(
    payload: bytes, samples_on_chain: int, base: ModelState, federation: Federation, stage: int
) -> ModelUpdate:
    """The update in ``payload`` if it is one an honest elector merges; UpdateRejectedError if not.

    ``payload`` is compressed as the recipe says; decoding takes shapes from ``base`` and is the same bytes
    on every peer (agent.learning.compression).
    """
    config = federation.config
    update = decompress_update(payload, config.compression, base)
    validate_update(update, base, config.mode, stage, config.spec.stages, config.aggregation.maximum_samples)
    if update.samples != samples_on_chain:
        raise UpdateRejectedError(f"update claims {update.samples} samples, the chain {samples_on_chain}")
    return update


def merge_updates(
    federation: Federation, base: ModelState, updates: Sequence[tuple[str, ModelUpdate]]
) -> tuple[MergeOutcome, bytes]:
    """The round's merge with the federation's aggregation rule, and the merged model file's bytes."""
    outcome = (
        merge_round(base, list(updates), federation.config.aggregation) if updates else MergeOutcome(base, ())
    )
    return outcome, encode_model(outcome.state, federation.config)


def unique_updates(submissions: Sequence[Submission]) -> list[Submission]:
    """The first submission of each CID, in chain order.

    Counting one CID twice would double its weight in the merge; contracts since version 2 refuse a CID
    already submitted to the round, and this keeps the merge safe on any ledger.
    """
    seen: set[str] = set()
    unique = []
    for submission in submissions:
        if submission.update_cid not in seen:
            seen.add(submission.update_cid)
            unique.append(submission)
    return unique


def verify_round(
    ledger: Ledger, store: ContentStore, federation: Federation, round_number: int, fetch_workers: int = 4
) -> RoundVerification:
    """Re-merge ``round_number`` from the chain's record and the store's bytes (see the module docstring).

    Updates are fetched and validated ``fetch_workers`` at a time (the store's latency, not the CPU, is
    what a sequential fetch waits on) and merged in chain order, so the result does not depend on it.
    """
    summary = ledger.round_summary(round_number)
    base_cid = base_model_of(ledger, round_number, federation.settings.genesis_model_cid)
    base = federation.validated_model(store.get(base_cid))

    def fetched(submission: Submission) -> ModelUpdate | str:
        try:
            payload = store.get(submission.update_cid)
            return validated_update(payload, submission.samples, base, federation, summary.stage)
        except (UpdateRejectedError, ContentMismatchError, NetworkError) as rejection:
            return f"{submission.update_cid}: {rejection}"

    submissions = unique_updates(ledger.submissions(round_number))
    with ThreadPoolExecutor(max(1, fetch_workers), thread_name_prefix="verify-fetch") as pool:
        outcomes = list(pool.map(fetched, submissions))
    updates = [
        (submission.participant, outcome)
        for submission, outcome in zip(submissions, outcomes, strict=True)
        if isinstance(outcome, ModelUpdate)
    ]
    left_out = [outcome for outcome in outcomes if isinstance(outcome, str)]
    _outcome, payload = merge_updates(federation, base, updates)
    return RoundVerification(
        round_number=round_number,
        base_model_cid=base_cid,
        canonical_model_cid=summary.canonical_model_cid,
        merged_model_cid=content_id.compute(payload),
        updates_merged=len(updates),
        left_out=tuple(left_out),
    )
