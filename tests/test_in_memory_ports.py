"""The in-memory twins of the content store and the message bus keep the ports' promises."""

from __future__ import annotations

import pytest

from agent.adapters.in_memory import InMemoryBroker, InMemoryContentStore, topic_matches
from agent.errors import ContentMismatchError, ContentNotFoundError, MessageBusError
from agent.ports.content_store import ContentStore


def test_the_store_returns_only_bytes_that_match_their_cid() -> None:
    store = InMemoryContentStore()
    assert isinstance(store, ContentStore)
    cid = store.put(b"update")
    assert store.get(cid) == b"update" and store.has(cid) and not store.has("bafy-not-a-cid")
    store.tamper(cid, b"poisoned")
    with pytest.raises(ContentMismatchError):
        store.get(cid)
    absent = InMemoryContentStore().put(b"elsewhere")
    with pytest.raises(ContentNotFoundError):
        store.get(absent)
    with pytest.raises(ContentNotFoundError):
        store.pin(absent)


@pytest.mark.parametrize(
    ("topic_filter", "topic", "matches"),
    [
        ("layerfed/f/updates/+", "layerfed/f/updates/0xab", True),
        ("layerfed/f/updates/+", "layerfed/f/updates/0xab/extra", False),
        ("layerfed/f/#", "layerfed/f/updates/0xab", True),
        ("layerfed/f/#", "layerfed/f", True),
        ("layerfed/f/presence/+", "layerfed/f/updates/0xab", False),
        ("a/b", "a/b", True),
    ],
)
def test_topic_filters_follow_mqtt(topic_filter: str, topic: str, matches: bool) -> None:
    assert topic_matches(topic_filter, topic) is matches


def test_the_bus_routes_by_filter_keeps_retained_messages_and_stops_after_close() -> None:
    broker = InMemoryBroker()
    sender, receiver = broker.connect(), broker.connect()
    heard: list[tuple[str, bytes]] = []
    sender.publish("layerfed/f/presence/0xab", b"online", retain=True)
    receiver.subscribe("layerfed/f/presence/+", lambda topic, payload: heard.append((topic, payload)))
    assert heard == [("layerfed/f/presence/0xab", b"online")]  # retained, delivered on subscribe
    sender.publish("layerfed/f/updates/0xab", b"ignored")
    sender.publish("layerfed/f/presence/0xcd", b"offline")
    assert heard[-1] == ("layerfed/f/presence/0xcd", b"offline") and len(heard) == 2
    receiver.close()
    sender.publish("layerfed/f/presence/0xab", b"after close")
    assert len(heard) == 2
    with pytest.raises(MessageBusError):
        receiver.publish("layerfed/f/presence/0xab", b"closed")
    with pytest.raises(MessageBusError):
        sender.publish("layerfed/f/presence/+", b"a filter is no topic")


def test_a_failing_handler_does_not_stop_the_others() -> None:
    broker = InMemoryBroker()
    heard: list[bytes] = []

    def broken(_topic: str, _payload: bytes) -> None:
        raise RuntimeError("handler bug")

    first, second = broker.connect(), broker.connect()
    first.subscribe("t", broken)
    second.subscribe("t", lambda _topic, payload: heard.append(payload))
    broker.connect().publish("t", b"message")
    assert heard == [b"message"]
