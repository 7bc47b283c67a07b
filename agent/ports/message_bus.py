"""The message-bus port: how the round engine announces updates and hears its peers.

The engine needs three things from a publish/subscribe network and nothing more, so the port is three
methods. Delivery is at least once (MQTT QoS 1): a handler may see the same payload twice, and messages
on different topics may arrive in any order. The engine makes duplicates harmless with
``agent.protocol.replay_guard``; it never relies on the bus for authenticity, because every payload is
signed (``agent.protocol.messages``).

Handlers run on the bus's own network thread. A handler that blocks delays every later message, so a
handler should decode, check and hand work to the engine's queue quickly. An exception raised by a handler
is logged by the bus and never stops later deliveries.

Implementations: ``agent.adapters.mqtt_bus.MqttMessageBus`` (any MQTT broker, e.g. mosquitto, or the
in-process ``agent.adapters.embedded_broker.EmbeddedBroker``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

MessageHandler = Callable[[str, bytes], None]
"""Called with ``(topic, payload)`` for each message whose topic matches a subscription."""


class MessageBus(Protocol):
    """A publish/subscribe network with at-least-once delivery.

    Every method raises :class:`agent.errors.MessageBusError` when the network fails in a way the caller
    must hear about; implementations say which failures they absorb (reconnects, queueing).
    """

    def publish(self, topic: str, payload: bytes, retain: bool = False) -> None:
        """Send ``payload`` to every subscriber of ``topic``, at least once (QoS 1).

        ``retain=True`` asks the broker to keep the payload as the topic's last value and hand it to
        subscribers that arrive later (used for presence).
        """
        ...

    def subscribe(self, topic_filter: str, handler: MessageHandler) -> None:
        """Call ``handler(topic, payload)`` on the bus's thread for each message matching ``topic_filter``.

        ``topic_filter`` may hold MQTT wildcards (``+`` one level, ``#`` the rest). The subscription lasts
        until :meth:`close`, across reconnects.
        """
        ...

    def close(self) -> None:
        """Deliver what is still queued (within a bounded time), disconnect and stop the network thread.

        Idempotent. After it returns no handler is called any more.
        """
        ...
