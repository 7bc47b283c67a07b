"""In-memory twins of the content store and the message bus, shipped for tests and experiments.

As httpx ships a mock transport, layerfed ships these so that code above the ports (the round engine, a
command, a user's own experiment) can be exercised without a directory, a broker or a thread of their
own: :class:`InMemoryContentStore` keeps bytes in a dict and checks them against their CID like every
store; :class:`InMemoryBroker` routes messages between :class:`InMemoryMessageBus` connections with
MQTT's topic wildcards and retained messages. Handlers run synchronously on the publisher's thread (the
port allows any bus thread), so a test sees a message's effects as soon as ``publish`` returns.
"""

from __future__ import annotations

import logging
import threading

from agent import content_id
from agent.errors import ContentNotFoundError, MessageBusError
from agent.ports.message_bus import MessageHandler

__all__ = ["InMemoryBroker", "InMemoryContentStore", "InMemoryMessageBus", "topic_matches"]


class InMemoryContentStore:
    """A :class:`agent.ports.content_store.ContentStore` in a dict; ``tamper`` simulates a lying source."""

    def __init__(self) -> None:
        self._contents: dict[str, bytes] = {}
        self._pinned: set[str] = set()
        self._lock = threading.Lock()

    def put(self, data: bytes) -> str:
        cid = content_id.compute(data)
        with self._lock:
            self._contents[cid] = bytes(data)
            self._pinned.add(cid)
        return cid

    def get(self, cid: str) -> bytes:
        name = self._canonical(cid)
        with self._lock:
            data = self._contents.get(name)
        if data is None:
            raise ContentNotFoundError(f"no content {cid} in memory")
        content_id.verify(name, data)
        return data

    def pin(self, cid: str) -> None:
        name = self._canonical(cid)
        with self._lock:
            if name not in self._contents:
                raise ContentNotFoundError(f"cannot pin {cid}: no such content in memory")
            self._pinned.add(name)

    def has(self, cid: str) -> bool:
        try:
            name = self._canonical(cid)
        except ContentNotFoundError:
            return False
        with self._lock:
            return name in self._contents

    def unpin(self, cid: str) -> None:
        with self._lock:
            self._pinned.discard(self._canonical(cid))

    def garbage_collect(self) -> list[str]:
        with self._lock:
            removed = sorted(set(self._contents) - self._pinned)
            for cid in removed:
                del self._contents[cid]
        return removed

    def stored_bytes(self) -> int:
        with self._lock:
            return sum(len(data) for data in self._contents.values())

    def tamper(self, cid: str, data: bytes) -> None:
        """Replace the bytes kept under ``cid`` (a test of what a reader does with a lying store)."""
        with self._lock:
            self._contents[self._canonical(cid)] = data

    @staticmethod
    def _canonical(cid: str) -> str:
        try:
            return content_id.canonical(cid)
        except ValueError as error:
            raise ContentNotFoundError(f"no content {cid!r}: not a CID") from error


def topic_matches(topic_filter: str, topic: str) -> bool:
    """MQTT's rule: ``+`` matches one level, a final ``#`` the parent level and everything below it."""
    filter_levels, topic_levels = topic_filter.split("/"), topic.split("/")
    for index, level in enumerate(filter_levels):
        if level == "#":
            return index == len(filter_levels) - 1
        if index >= len(topic_levels) or (level != "+" and level != topic_levels[index]):
            return False
    return len(filter_levels) == len(topic_levels)


class InMemoryBroker:
    """Routes publishes to every matching subscription of its connections; keeps retained messages."""

    def __init__(self) -> None:
        self._subscriptions: list[tuple[InMemoryMessageBus, str, MessageHandler]] = []
        self._retained: dict[str, bytes] = {}
        self._lock = threading.Lock()

    def connect(self) -> InMemoryMessageBus:
        """A new connection (a :class:`agent.ports.message_bus.MessageBus`) to this broker."""
        return InMemoryMessageBus(self)

    def _publish(self, topic: str, payload: bytes, retain: bool) -> None:
        with self._lock:
            if retain:
                self._retained[topic] = payload
            receivers = [
                (bus, handler)
                for bus, topic_filter, handler in self._subscriptions
                if topic_matches(topic_filter, topic)
            ]
        for bus, handler in receivers:
            bus._deliver(handler, topic, payload)

    def _subscribe(self, bus: InMemoryMessageBus, topic_filter: str, handler: MessageHandler) -> None:
        with self._lock:
            self._subscriptions.append((bus, topic_filter, handler))
            retained = [(topic, payload) for topic, payload in self._retained.items()]
        for topic, payload in retained:
            if topic_matches(topic_filter, topic):
                bus._deliver(handler, topic, payload)

    def _disconnect(self, bus: InMemoryMessageBus) -> None:
        with self._lock:
            self._subscriptions = [entry for entry in self._subscriptions if entry[0] is not bus]


class InMemoryMessageBus:
    """One connection to an :class:`InMemoryBroker`; the port's three methods."""

    def __init__(self, broker: InMemoryBroker) -> None:
        self._broker = broker
        self._closed = False

    def publish(self, topic: str, payload: bytes, retain: bool = False) -> None:
        if self._closed:
            raise MessageBusError("publish on a closed bus")
        if not topic or "+" in topic or "#" in topic:
            raise MessageBusError(f"cannot publish to {topic!r}: not a topic name")
        self._broker._publish(topic, payload, retain)

    def subscribe(self, topic_filter: str, handler: MessageHandler) -> None:
        if self._closed:
            raise MessageBusError("subscribe on a closed bus")
        self._broker._subscribe(self, topic_filter, handler)

    def close(self) -> None:
        self._closed = True
        self._broker._disconnect(self)

    def _deliver(self, handler: MessageHandler, topic: str, payload: bytes) -> None:
        """Call ``handler``; as on a real bus, its exception is logged and never reaches the publisher."""
        if self._closed:
            return
        try:
            handler(topic, payload)
        except Exception:  # deliberate: one handler's bug must not stop deliveries to the others
            logging.getLogger(__name__).exception("message handler %r failed on %s", handler, topic)
