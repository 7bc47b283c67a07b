"""The round engine's reads of the chain: what the chain can no longer change is read once.

An engine loops: read the current round's state, act, wait. Left alone, each pass would also read the
round's submissions, the latest canonical model or the committee, and every finalization would read the
submissions and canonical models of earlier rounds again (agent.engine.retention). On a chain every read
is a JSON-RPC call, and on the embedded chain a turn at the one lock all peers share. So the cache keeps
what the chain can no longer change, judged by the latest state the engine read through it (states only
move forward, so what one state shows closed stays closed):

- the settings (fixed at deployment);
- a round's submissions once its submission phase is over (the round is past, or attesting);
- a finalized round's canonical model; the summary and committee of a round that is over;
- the latest canonical model and the round log while the count of finalized rounds stays the same.

Everything else, writes included, goes to :attr:`ChainCache.ledger`. One engine thread uses a cache.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

from agent.ports.ledger import (
    FederationSettings,
    FinalizedRound,
    Ledger,
    RoundPhase,
    RoundState,
    RoundSummary,
    Submission,
)

__all__ = ["ChainCache"]

_Value = TypeVar("_Value")


class ChainCache:
    """Reads of ``ledger`` (a :class:`agent.ports.ledger.LedgerRecord` for retention and verification)."""

    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger
        self._state: RoundState | None = None
        self._settings: FederationSettings | None = None
        self._submissions: dict[int, tuple[Submission, ...]] = {}
        self._canonical_models: dict[int, str] = {}
        self._summaries: dict[int, RoundSummary] = {}
        self._committees: dict[int, tuple[str, ...]] = {}
        self._latest_canonical_model = _UntilFinalization(lambda: self.ledger.latest_canonical_model())
        self._round_log = _UntilFinalization(lambda: self.ledger.round_log())

    def current_round(self) -> RoundState:
        """The current round's state, always read (and remembered: it dates what the cache may keep)."""
        self._state = self.ledger.current_round()
        return self._state

    def settings(self) -> FederationSettings:
        if self._settings is None:
            self._settings = self.ledger.settings()
        return self._settings

    def submissions(self, round_number: int) -> tuple[Submission, ...]:
        closed = self._submission_closed(round_number)
        return _kept(self._submissions, round_number, self.ledger.submissions, keep=closed)

    def canonical_model(self, round_number: int) -> str | None:
        if round_number in self._canonical_models:
            return self._canonical_models[round_number]
        cid = self.ledger.canonical_model(round_number)
        if cid is not None:
            self._canonical_models[round_number] = cid
        return cid

    def latest_canonical_model(self) -> str:
        return self._latest_canonical_model.get(self._finalized_rounds())

    def round_log(self) -> tuple[FinalizedRound, ...]:
        return self._round_log.get(self._finalized_rounds())

    def round_summary(self, round_number: int) -> RoundSummary:
        return _kept(self._summaries, round_number, self.ledger.round_summary, keep=self._over(round_number))

    def committee(self, round_number: int) -> tuple[str, ...]:
        """The round's committee; kept once the round is over (before, a ledger may answer with the draw
        it expects, which a late draw can change)."""
        return _kept(self._committees, round_number, self.ledger.committee, keep=self._over(round_number))

    def _finalized_rounds(self) -> int | None:
        return None if self._state is None else self._state.finalized_rounds

    def _submission_closed(self, round_number: int) -> bool:
        state = self._state
        if state is None:
            return False
        return round_number < state.number or (
            round_number == state.number and state.phase is not RoundPhase.SUBMISSION
        )

    def _over(self, round_number: int) -> bool:
        state = self._state
        return state is not None and (round_number < state.number or state.training_complete)


def _kept(kept: dict[int, _Value], round_number: int, read: Callable[[int], _Value], *, keep: bool) -> _Value:
    """``kept[round_number]``, else what ``read`` gives, kept when ``keep``: whether the state read last
    shows the fact final, judged before this read (which, coming later, sees it final too)."""
    if round_number in kept:
        return kept[round_number]
    value = read(round_number)
    if keep:
        kept[round_number] = value
    return value


class _UntilFinalization(Generic[_Value]):
    """A read whose answer changes only when a round finalizes: kept while the count stays the same."""

    def __init__(self, read: Callable[[], _Value]) -> None:
        self._read = read
        self._kept: tuple[int, _Value] | None = None

    def get(self, finalized_rounds: int | None) -> _Value:
        """The answer for ``finalized_rounds`` finalized rounds (None: no state read yet, always read)."""
        if self._kept is not None and self._kept[0] == finalized_rounds:
            return self._kept[1]
        value = self._read()
        if finalized_rounds is not None:
            self._kept = (finalized_rounds, value)
        return value
