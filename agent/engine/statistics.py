"""Where a peer's time and bytes go: local training versus the protocol around it.

Protocol time is every step outside training that the round engine performs itself: pinning, sending
transactions, announcing, fetching, verifying, merging and attesting. Waiting for slower peers is neither,
and is reported apart, so the protocol's own overhead can be compared with training time.
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

PROTOCOL_STEPS = ("pin", "transaction", "announce", "fetch", "verify", "merge", "attest")


@dataclass
class EngineStatistics:
    """Counters one engine updates as it works; read them at any time (thread-safe snapshots)."""

    training_seconds: float = 0.0
    step_seconds: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    bytes_uploaded: int = 0
    bytes_downloaded: int = 0
    rounds_completed: int = 0
    updates_trained: int = 0
    updates_merged: int = 0
    rejected_messages: int = 0
    rejected_updates: int = 0
    transactions: int = 0
    gas_used: int = 0
    rounds_suspended: int = 0  # rounds this peer sat out because the chain suspended it
    rounds_outside_committee: int = 0  # rounds it submitted to but was not drawn to merge
    rounds_verified: int = 0  # such rounds it re-merged anyway (EngineOptions.verify) and compared
    verification_mismatches: int = 0  # ... whose canonical model was not its merge
    # peer address -> action (discarded, clipped, weight_capped) -> how often the merge rule did it
    filtered_updates: dict[str, dict[str, int]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    clock: Callable[[], float] = field(default=time.perf_counter, repr=False)  # seconds, for the steps

    @contextmanager
    def measure(self, step: str) -> Iterator[None]:
        """Add the wall time of the ``with`` body to ``step`` (one of PROTOCOL_STEPS or ``training``)."""
        started = self.clock()
        try:
            yield
        finally:
            elapsed = self.clock() - started
            with self._lock:
                if step == "training":
                    self.training_seconds += elapsed
                else:
                    self.step_seconds[step] += elapsed

    @contextmanager
    def overlapping(self) -> Iterator[EngineStatistics]:
        """Measure steps that run in several threads at once (a merge's downloads) on the statistics this
        yields; at the end, each of those steps is added here scaled down so that together they take no
        more than the wall time of the ``with`` body. Protocol time stays the time the engine spent: four
        downloads overlapping in one second count one second, split between the steps as their threads
        spent it."""
        inner = EngineStatistics(clock=self.clock)
        started = self.clock()
        try:
            yield inner
        finally:
            elapsed = self.clock() - started
            with inner._lock:
                steps = dict(inner.step_seconds)
            busy = sum(steps.values())
            scale = min(1.0, elapsed / busy) if busy > 0 else 0.0
            with self._lock:
                for step, seconds in steps.items():
                    self.step_seconds[step] += seconds * scale

    def add(self, name: str, amount: int) -> None:
        with self._lock:
            setattr(self, name, getattr(self, name) + amount)

    def note_filtered(self, peer: str, action: str) -> None:
        """Count one decision of the aggregation rule about ``peer``'s update."""
        with self._lock:
            actions = self.filtered_updates.setdefault(peer, {})
            actions[action] = actions.get(action, 0) + 1

    @property
    def protocol_seconds(self) -> float:
        with self._lock:
            return sum(self.step_seconds.values())

    def snapshot(self) -> StatisticsSnapshot:
        with self._lock:
            return StatisticsSnapshot(
                training_seconds=self.training_seconds,
                protocol_seconds=sum(self.step_seconds.values()),
                protocol_step_seconds=dict(self.step_seconds),
                bytes_uploaded=self.bytes_uploaded,
                bytes_downloaded=self.bytes_downloaded,
                rounds_completed=self.rounds_completed,
                updates_trained=self.updates_trained,
                updates_merged=self.updates_merged,
                rejected_messages=self.rejected_messages,
                rejected_updates=self.rejected_updates,
                transactions=self.transactions,
                gas_used=self.gas_used,
                filtered_updates={peer: dict(actions) for peer, actions in self.filtered_updates.items()},
                rounds_suspended=self.rounds_suspended,
                rounds_outside_committee=self.rounds_outside_committee,
                rounds_verified=self.rounds_verified,
                verification_mismatches=self.verification_mismatches,
            )


@dataclass(frozen=True)
class StatisticsSnapshot:
    """The counters of :class:`EngineStatistics` at one moment."""

    training_seconds: float
    protocol_seconds: float
    protocol_step_seconds: dict[str, float]
    bytes_uploaded: int
    bytes_downloaded: int
    rounds_completed: int
    updates_trained: int
    updates_merged: int
    rejected_messages: int
    rejected_updates: int
    transactions: int
    gas_used: int
    filtered_updates: dict[str, dict[str, int]] = field(default_factory=dict)
    rounds_suspended: int = 0
    rounds_outside_committee: int = 0
    rounds_verified: int = 0
    verification_mismatches: int = 0
