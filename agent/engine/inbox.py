"""The engine's inbox: authenticated, new announcements from peers, handed over from the bus thread.

The bus calls :meth:`Inbox.receive` on its network thread; it decodes and authenticates the payload
(signature, federation, topic, on-chain registration), drops duplicates and replays, and queues the rest
for the engine's own thread. Every rejection is logged with its reason and counted; nothing a peer sends
can raise out of here.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable

from agent.engine.statistics import EngineStatistics
from agent.errors import LayerfedError, MessageRejectedError
from agent.ports.identity import SignatureVerifier
from agent.ports.message_bus import MessageBus
from agent.protocol.messages import Message, ModelAttested, UpdateAnnounced, decode
from agent.protocol.replay_guard import Admission, ReplayGuard
from agent.protocol.topics import FederationTopics

logger = logging.getLogger(__name__)


class ParticipantRegistry:
    """Cached view of the on-chain participant set, refreshed on an unknown address (rate-limited)."""

    def __init__(self, load: Callable[[], tuple[str, ...]], minimum_refresh_seconds: float = 2.0) -> None:
        self._load = load
        self._minimum_refresh_seconds = minimum_refresh_seconds
        self._known: frozenset[str] = frozenset()
        self._refreshed_at = float("-inf")
        self._lock = threading.Lock()

    def is_registered(self, address: str) -> bool:
        key = address.lower()
        with self._lock:
            if key in self._known:
                return True
            if time.monotonic() - self._refreshed_at < self._minimum_refresh_seconds:
                return False
            self._refreshed_at = time.monotonic()
            self._known = frozenset(participant.lower() for participant in self._load())
            return key in self._known


class Inbox:
    """Subscribes to a federation's update announcements and attestations."""

    def __init__(
        self,
        bus: MessageBus,
        federation_id: str,
        registry: ParticipantRegistry,
        statistics: EngineStatistics,
        verifier: SignatureVerifier,
        guard: ReplayGuard | None = None,
    ) -> None:
        self._bus = bus
        self._verifier = verifier
        self._federation_id = federation_id
        self._topics = FederationTopics(federation_id)
        self._registry = registry
        self._statistics = statistics
        self.guard = guard or ReplayGuard()
        self.current_round = 0  # set by the engine; a message far ahead of it is implausible
        self._queue: queue.Queue[Message] = queue.Queue()

    def start(self) -> None:
        self._bus.subscribe(self._topics.all_update_announcements(), self.receive)
        self._bus.subscribe(self._topics.all_model_attestations(), self.receive)

    def receive(self, topic: str, payload: bytes) -> None:
        """Bus handler: authenticate, deduplicate, queue. Never raises."""
        try:
            message = decode(
                payload,
                verifier=self._verifier,
                is_registered=self._registry.is_registered,
                federation=self._federation_id,
                topic=topic,
            )
        except MessageRejectedError as rejection:
            self._statistics.add("rejected_messages", 1)
            logger.warning("rejected a message on %s: %s", topic, rejection)
            return
        except LayerfedError as failure:  # the registry could not be read: the message may be fine
            logger.warning("could not check a message on %s: %s", topic, failure)
            return
        if not isinstance(message, UpdateAnnounced | ModelAttested):
            return
        if message.round > self.current_round + 1:
            # Admitting it would move the replay guard's horizon and make genuine messages look stale.
            self._statistics.add("rejected_messages", 1)
            logger.warning(
                "rejected a message for round %d, far ahead of round %d", message.round, self.current_round
            )
            return
        admission = self.guard.admit(message)
        if admission is not Admission.NEW:
            logger.info("ignored a %s %s from %s", admission.value, message.KIND, message.participant)
            return
        self._queue.put(message)

    def next(self, timeout_seconds: float) -> Message | None:
        """The next queued message, waiting at most ``timeout_seconds``; None when none came."""
        try:
            return self._queue.get(timeout=timeout_seconds)
        except queue.Empty:
            return None

    def drain(self) -> list[Message]:
        """Every message queued now, without waiting (so that the engine checks them in one go)."""
        messages = []
        while True:
            try:
                messages.append(self._queue.get_nowait())
            except queue.Empty:
                return messages
