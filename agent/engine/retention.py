"""What a device keeps in its content store, and what it lets go, as rounds finalize.

A long federation pins two or more updates and a merged model per round; on a Raspberry Pi's SD card that
fills the disk. After each finalized round the engine keeps what it (or a peer catching up) still needs
and unpins the rest, then lets the store collect it:

- the genesis model (an agent that starts reads the recipe from it) and the latest canonical model;
- the canonical models of the last ``keep_canonical_models`` rounds (the operator's history, a peer one
  round behind);
- every update of the current and the previous round (a peer still merging the previous one fetches
  them), and this device's own update and merged model from its checkpoint (its unsubmitted or
  unfinalized work).

Everything is read from the chain, so a restarted agent collects what an earlier run left behind: it
walks the rounds from the first again (unpinning is idempotent). Pins on IPFS follow the same rule, since
the store's own ``unpin`` does the work; with ``collect_garbage`` off (the agent's setting for an IPFS
node) the node removes unpinned blocks on its own schedule (kubo's ``--enable-gc``) instead of the agent
asking for a collection after every round.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from agent.ports.content_store import ContentStore
from agent.ports.ledger import LedgerRecord

logger = logging.getLogger(__name__)


class ContentRetention:
    """Unpins and collects what no longer needs keeping, round by round (see the module docstring)."""

    def __init__(
        self,
        ledger: LedgerRecord,
        store: ContentStore,
        genesis_cid: str,
        keep_canonical_models: int,
        *,
        collect_garbage: bool = True,
    ) -> None:
        if keep_canonical_models < 1:
            raise ValueError(f"keep_canonical_models must be at least 1, not {keep_canonical_models}")
        self.ledger = ledger
        self.store = store
        self.genesis_cid = genesis_cid
        self.keep_canonical_models = keep_canonical_models
        self.collect_garbage = collect_garbage
        self._updates_collected_through = 0  # rounds whose updates were let go
        self._models_collected_through = 0  # rounds whose canonical models were let go
        self._deferred: set[str] = set()  # old enough to go, but still needed last time (the latest model)

    def collect(self, current_round: int, own_work: Iterable[str]) -> list[str]:
        """Let go of what rounds before ``current_round`` left that nothing needs; return the CIDs removed.

        Without ``collect_garbage`` this only unpins, and returns nothing: the store removes the content
        when it collects.
        """
        keep = {self.genesis_cid, self.ledger.latest_canonical_model(), *(cid for cid in own_work if cid)}
        recent = range(max(1, current_round - self.keep_canonical_models), current_round)
        keep.update(cid for number in recent if (cid := self.ledger.canonical_model(number)))
        for number in (current_round - 1, current_round):
            if number >= 1:
                keep.update(submission.update_cid for submission in self.ledger.submissions(number))
        released = set(self._deferred)
        for number in range(self._updates_collected_through + 1, current_round - 1):
            released.update(submission.update_cid for submission in self.ledger.submissions(number))
        self._updates_collected_through = max(self._updates_collected_through, current_round - 2)
        last_model_round = current_round - 1 - self.keep_canonical_models
        for number in range(self._models_collected_through + 1, last_model_round + 1):
            if (cid := self.ledger.canonical_model(number)) is not None:
                released.add(cid)
        self._models_collected_through = max(self._models_collected_through, last_model_round)
        for cid in sorted(released - keep):
            self.store.unpin(cid)
        self._deferred = released & keep
        if not self.collect_garbage:
            return []
        removed = self.store.garbage_collect()
        if removed:
            logger.info(
                "round %d: removed %d items no longer needed from the store", current_round, len(removed)
            )
        return removed
