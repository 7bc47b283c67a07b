"""Tell a message seen for the first time from a duplicate or a replay, in bounded memory.

MQTT QoS 1 delivers at least once, peers re-announce after reconnecting, and anyone on the broker can
publish a recorded payload again: its signature stays valid. A message's identity is what it asserts
(kind, federation, round, participant, CID), not its bytes, so a re-signed copy with a new ``sent_at`` is
still recognised. The engine acts only on :attr:`Admission.NEW`; everything else is harmless.

Memory stays bounded: the guard keeps the identities of the newest round it knows (the highest it has
admitted, or what :meth:`ReplayGuard.advance` told it) and of ``horizon_rounds`` rounds before it. Older
rounds are forgotten *and* refused as :attr:`Admission.STALE`, so forgetting never lets a replay pass as
new. Because an admitted round moves the horizon, feed the guard only messages that passed
``agent.protocol.messages.decode`` and whose round the engine finds plausible.

Presence messages carry no round and are not guarded; the newest ``sent_at`` wins there.
"""

from __future__ import annotations

import enum
import threading
from dataclasses import dataclass

from agent.protocol.messages import ModelAttested, UpdateAnnounced


class Admission(enum.Enum):
    """What the guard makes of a message."""

    NEW = "new"
    """First time this identity is seen: act on it."""
    DUPLICATE = "duplicate"
    """Seen before within the horizon (a QoS 1 redelivery or a replay): ignore it."""
    STALE = "stale"
    """Its round is older than the horizon: it cannot matter any more, and may be a replay: ignore it."""


@dataclass(frozen=True)
class MessageIdentity:
    """What a round-bound message asserts; two messages with the same identity are the same claim."""

    kind: str
    federation: str
    round: int
    participant: str
    cid: str

    @classmethod
    def of(cls, message: UpdateAnnounced | ModelAttested) -> MessageIdentity:
        cid = message.cid if isinstance(message, UpdateAnnounced) else message.model_cid
        return cls(message.KIND, message.federation, message.round, message.participant.lower(), cid)


class ReplayGuard:
    """Remembers message identities of recent rounds. Thread-safe (bus handlers and the engine share it)."""

    def __init__(self, horizon_rounds: int = 2) -> None:
        if horizon_rounds < 0:
            raise ValueError(f"horizon_rounds must be 0 or more, got {horizon_rounds}")
        self.horizon_rounds = horizon_rounds
        self._newest_round: int | None = None
        self._identities_by_round: dict[int, set[MessageIdentity]] = {}
        self._lock = threading.Lock()

    def admit(self, message: UpdateAnnounced | ModelAttested) -> Admission:
        """Record ``message`` and say whether it is new, a duplicate, or too old to matter."""
        identity = MessageIdentity.of(message)
        with self._lock:
            if self._is_older_than_horizon(identity.round):
                return Admission.STALE
            seen = self._identities_by_round.setdefault(identity.round, set())
            if identity in seen:
                return Admission.DUPLICATE
            seen.add(identity)
            self._move_horizon_to(identity.round)
            return Admission.NEW

    def advance(self, current_round: int) -> None:
        """The engine has reached ``current_round``: forget rounds more than the horizon before it."""
        with self._lock:
            self._move_horizon_to(current_round)

    def remembered_rounds(self) -> list[int]:
        """The rounds whose identities are kept, oldest first (for tests and diagnostics)."""
        with self._lock:
            return sorted(self._identities_by_round)

    def _is_older_than_horizon(self, round_number: int) -> bool:
        return self._newest_round is not None and round_number < self._newest_round - self.horizon_rounds

    def _move_horizon_to(self, round_number: int) -> None:
        if self._newest_round is not None and round_number <= self._newest_round:
            return
        self._newest_round = round_number
        for old_round in [kept for kept in self._identities_by_round if self._is_older_than_horizon(kept)]:
            del self._identities_by_round[old_round]
