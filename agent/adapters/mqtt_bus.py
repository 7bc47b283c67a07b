"""The MQTT adapter of the message-bus port, on paho-mqtt 2.x.

Policy, in one place:

- QoS 1 for every publish and subscription: at least once, duplicates are the receiver's business.
- Connecting is synchronous: the constructor returns once the broker accepted the connection, or raises
  (MessageBusError naming ``host:port`` when the broker is unreachable or silent; ConfigurationError when
  it refuses the credentials, since retrying will not help).
- After that, a lost connection is repaired in the background: paho reconnects with exponential backoff
  (``reconnect_min_delay_seconds`` doubling up to ``reconnect_max_delay_seconds``), and ``on_connect``
  subscribes every filter again and republishes the ``connect_message`` (e.g. a retained "online"
  presence, undoing the last will the broker published when the connection dropped).
- Publishing while disconnected *queues* (in memory, at most ``max_queued_messages``) and the queue is
  sent on reconnect; a publish beyond that limit raises MessageBusError. Queueing rather than failing
  keeps a short broker restart invisible to the round engine. :meth:`MqttMessageBus.close` waits up to
  ``close_timeout_seconds`` for the queue to be acknowledged before disconnecting.
- Handlers run on paho's network thread; an exception in one is logged and the next message is
  delivered as usual. A handler may publish and subscribe, but not close the bus (that would make the
  network thread wait for itself; :meth:`MqttMessageBus.close` refuses).
- TLS (``tls_ca_file``) trusts only that CA and checks the broker's host name or IP address.
"""

from __future__ import annotations

import logging
import secrets
import socket
import ssl
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode, MQTTProtocolVersion
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from agent.errors import ConfigurationError, MessageBusError
from agent.ports.message_bus import MessageHandler

logger = logging.getLogger(__name__)


class _DemoteExpectedPahoErrors(logging.Filter):
    """paho logs "Client is not connected" at ERROR whenever its loop runs between reconnect attempts.

    Here that is the expected state while the broker is away (the warning about losing it was already
    logged), so the record is demoted to DEBUG instead of alarming whoever reads the log. The logger
    already let it through as an ERROR, so the filter also drops it unless DEBUG is enabled: a demoted
    record that is still passed on prints "DEBUG ..." at the default WARNING level.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno == logging.ERROR and str(record.msg).startswith("Client is not connected"):
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
            return logging.getLogger(record.name).isEnabledFor(logging.DEBUG)
        return True


_paho_logger = logging.getLogger(f"{__name__}.paho")
_paho_logger.addFilter(_DemoteExpectedPahoErrors())

MqttProtocol = Literal["5", "3.1.1"]
"""MQTT 5 for mosquitto and most brokers; 3.1.1 for the embedded amqtt broker, which speaks nothing newer."""

_PROTOCOLS: dict[str, MQTTProtocolVersion] = {"5": mqtt.MQTTv5, "3.1.1": mqtt.MQTTv311}
_QOS = 1
_REFUSED_CREDENTIALS = {134, 135}  # "Bad user name or password", "Not authorized" (3.1.1 codes 4, 5 map here)
_UNSUPPORTED_PROTOCOL_VERSION = 132


@dataclass(frozen=True)
class MqttSettings:
    """Where the broker is and how to talk to it. Validated on construction (ConfigurationError)."""

    host: str = "127.0.0.1"
    port: int = 1883
    protocol: MqttProtocol = "5"
    client_id: str = ""
    """Empty: a random ``layerfed-<hex>`` id, unique per process."""
    username: str | None = None
    password: str | None = None
    tls_ca_file: Path | None = None
    """A CA certificate file in PEM format: when set, the connection uses TLS and verifies the broker."""
    keepalive_seconds: int = 30
    connect_timeout_seconds: float = 10.0
    reconnect_min_delay_seconds: int = 1
    reconnect_max_delay_seconds: int = 30
    max_queued_messages: int = 1000
    subscribe_timeout_seconds: float = 10.0
    close_timeout_seconds: float = 5.0

    def __post_init__(self) -> None:
        if self.protocol not in _PROTOCOLS:
            raise ConfigurationError(f"MQTT protocol {self.protocol!r} is not one of {', '.join(_PROTOCOLS)}")
        if not 0 < self.port < 65536:
            raise ConfigurationError(f"MQTT port {self.port} is not between 1 and 65535")
        if self.password is not None and self.username is None:
            raise ConfigurationError("an MQTT password needs a username")
        if not 0 < self.reconnect_min_delay_seconds <= self.reconnect_max_delay_seconds:
            raise ConfigurationError("MQTT reconnect delays need 0 < minimum <= maximum")
        if self.max_queued_messages < 1:
            raise ConfigurationError("max_queued_messages must be at least 1")

    @property
    def address(self) -> str:
        """``host:port``, as error messages name the broker."""
        return f"{self.host}:{self.port}"


@dataclass(frozen=True)
class OutgoingMessage:
    """A message the adapter publishes on the caller's behalf: the last will, or the connect message."""

    topic: str
    payload: bytes
    retain: bool = True


class MqttMessageBus:
    """A :class:`agent.ports.message_bus.MessageBus` over MQTT. Connects in the constructor.

    ``last_will`` is handed to the broker at every connect; the broker publishes it when this client
    vanishes without disconnecting (crash, power loss, network cut). ``connect_message`` is published
    after every successful connect, so peers see the client come back.
    """

    def __init__(
        self,
        settings: MqttSettings,
        *,
        last_will: OutgoingMessage | None = None,
        connect_message: OutgoingMessage | None = None,
    ) -> None:
        self.settings = settings
        self._connect_message = connect_message
        self._handlers: dict[str, list[MessageHandler]] = {}
        self._state_changed = threading.Condition()
        self._unacknowledged_publishes: set[int] = set()
        self._early_acknowledgements: set[int] = set()
        self._subscription_results: dict[int, list[ReasonCode]] = {}
        self._unawaited_subscriptions: set[int] = set()
        self._connected = threading.Event()
        self._first_answer = threading.Event()
        self._refusal: ReasonCode | None = None
        self._closed = False
        self._client = self._create_client(last_will)
        self._connect()

    # -- the port ---------------------------------------------------------------------------------------

    def publish(self, topic: str, payload: bytes, retain: bool = False) -> None:
        """Queue ``payload`` for ``topic`` at QoS 1 and return without waiting for the broker's ack.

        Raises MessageBusError when the bus is closed, the topic is invalid, or the queue is full.
        """
        self._raise_if_closed()
        self._publish(topic, payload, retain)

    def subscribe(self, topic_filter: str, handler: MessageHandler) -> None:
        """Deliver messages matching ``topic_filter`` to ``handler`` (on the network thread).

        When connected, returns once the broker confirmed the subscription (MessageBusError if it refuses
        or does not answer within ``subscribe_timeout_seconds``); when disconnected, or when called from a
        handler, returns at once and the subscription is made on (re)connect.
        """
        self._raise_if_closed()
        problem = _topic_filter_problem(topic_filter)
        if problem is not None:
            raise MessageBusError(f"cannot subscribe to {topic_filter!r}: {problem}")
        with self._state_changed:  # the same lock on_connect takes its snapshot of the filters under
            already_subscribed = topic_filter in self._handlers
            self._handlers.setdefault(topic_filter, []).append(handler)
            connected = self._connected.is_set()
        if already_subscribed or not connected:
            return
        result, message_id = self._client.subscribe(topic_filter, qos=_QOS)
        if result != MQTTErrorCode.MQTT_ERR_SUCCESS or message_id is None:
            return  # the connection dropped meanwhile: on_connect subscribes again
        if self._on_network_thread():
            self._note_unawaited_subscription(message_id)
            return
        reason_codes = self._await_subscription(message_id)
        if reason_codes is None:
            raise MessageBusError(
                f"the MQTT broker at {self.settings.address} did not confirm the subscription to "
                f"{topic_filter!r} within {self.settings.subscribe_timeout_seconds} s"
            )
        refused = [code for code in reason_codes if code.is_failure]
        if refused:
            self._forget_handler(topic_filter, handler)
            raise MessageBusError(
                f"the MQTT broker at {self.settings.address} refused the subscription to {topic_filter!r}: "
                f"{refused[0]}"
            )

    def close(self) -> None:
        """Wait (bounded) for queued publishes to be acknowledged, then disconnect. Idempotent."""
        if self._on_network_thread():
            raise MessageBusError("a message handler cannot close the bus it is running on")
        with self._state_changed:
            if self._closed:
                return
            self._closed = True
        unacknowledged = self._wait_for_acknowledgements(self.settings.close_timeout_seconds)
        if unacknowledged:
            logger.warning(
                "closing with %d messages not acknowledged by the MQTT broker at %s",
                unacknowledged,
                self.settings.address,
            )
        self._stop_network()

    # -- beyond the port ----------------------------------------------------------------------------------

    @property
    def is_connected(self) -> bool:
        """Whether the broker connection is up right now."""
        return self._connected.is_set()

    def wait_until_connected(self, timeout_seconds: float) -> bool:
        """Block until connected (e.g. after a broker restart) or the timeout passes; True if connected."""
        return self._connected.wait(timeout_seconds)

    def flush(self, timeout_seconds: float) -> bool:
        """Block until the broker acknowledged every publish so far; False if some are still pending."""
        return self._wait_for_acknowledgements(timeout_seconds) == 0

    def __enter__(self) -> MqttMessageBus:
        return self

    # Deliberate repetition: the context-manager protocol's __exit__ signature.
    def __exit__(
        self,
        exception_type: type[BaseException] | None,
        exception: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    # -- connecting -----------------------------------------------------------------------------------------

    def _create_client(self, last_will: OutgoingMessage | None) -> mqtt.Client:
        settings = self.settings
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=settings.client_id or f"layerfed-{secrets.token_hex(6)}",
            protocol=_PROTOCOLS[settings.protocol],
        )
        client.enable_logger(_paho_logger)
        client.connect_timeout = settings.connect_timeout_seconds
        client.reconnect_delay_set(settings.reconnect_min_delay_seconds, settings.reconnect_max_delay_seconds)
        client.max_queued_messages_set(settings.max_queued_messages)
        if settings.username is not None:
            client.username_pw_set(settings.username, settings.password)
        if settings.tls_ca_file is not None:
            client.tls_set_context(_tls_context(settings.tls_ca_file))
        if last_will is not None:
            try:
                client.will_set(last_will.topic, last_will.payload, qos=_QOS, retain=last_will.retain)
            except ValueError as exc:
                raise ConfigurationError(f"unusable last will on {last_will.topic!r}: {exc}") from exc
        client.on_connect = self._on_connect
        client.on_connect_fail = self._on_connect_fail
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        client.on_publish = self._on_publish
        client.on_subscribe = self._on_subscribe
        return client

    def _connect(self) -> None:
        settings = self.settings
        started = time.monotonic()
        try:
            self._client.connect(settings.host, settings.port, keepalive=settings.keepalive_seconds)
        except (OSError, ValueError) as exc:  # refused, unreachable, timed out, TLS failure, bad host name
            self._client._reset_sockets()  # paho has no public way to close them
            raise MessageBusError(f"cannot connect to the MQTT broker at {settings.address}: {exc}") from exc
        self._client.loop_start()
        remaining = settings.connect_timeout_seconds - (time.monotonic() - started)
        if not self._first_answer.wait(max(remaining, 0.0)):
            self._stop_network()
            raise MessageBusError(
                f"the MQTT broker at {settings.address} did not answer within "
                f"{settings.connect_timeout_seconds} s"
            )
        refusal = self._refusal
        if refusal is not None:
            self._stop_network()
            message = f"the MQTT broker at {settings.address} refused the connection: {refusal}"
            if refusal.value == _UNSUPPORTED_PROTOCOL_VERSION:
                message += f" (this client spoke MQTT {settings.protocol}; amqtt, for one, needs 3.1.1)"
            if refusal.value in _REFUSED_CREDENTIALS:
                raise ConfigurationError(message)
            raise MessageBusError(message)

    def _stop_network(self) -> None:
        self._closed = True
        self._client.disconnect()
        self._client.loop_stop()
        self._client._reset_sockets()  # loop_stop leaves its wake-up socket pair open
        self._connected.clear()

    # -- paho callbacks (network thread) ------------------------------------------------------------------

    def _on_connect(
        self,
        client: mqtt.Client,
        userdata: Any,
        flags: mqtt.ConnectFlags,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        if reason_code.is_failure:
            logger.warning(
                "the MQTT broker at %s refused the connection: %s", self.settings.address, reason_code
            )
            self._refusal = reason_code
            self._first_answer.set()
            return
        if self._first_answer.is_set():
            logger.info("reconnected to the MQTT broker at %s", self.settings.address)
        try:
            self._restore_session(client)
        except Exception:  # an exception here would end paho's network thread, and with it the bus
            logger.exception("restoring subscriptions on %s failed", self.settings.address)
        self._first_answer.set()

    def _restore_session(self, client: mqtt.Client) -> None:
        """Subscribe every filter again and publish the connect message (a clean session starts empty)."""
        with self._state_changed:
            # Taking the snapshot and marking the bus connected under one lock means a concurrent
            # subscribe() either lands in this snapshot or sees "connected" and subscribes itself.
            topic_filters = list(self._handlers)
            self._connected.set()
        _disable_nagle(client)
        if topic_filters:
            result, message_id = client.subscribe([(topic_filter, _QOS) for topic_filter in topic_filters])
            if result == MQTTErrorCode.MQTT_ERR_SUCCESS and message_id is not None:
                self._note_unawaited_subscription(message_id)
        if self._connect_message is not None:
            message = self._connect_message
            self._publish(message.topic, message.payload, message.retain)

    def _on_connect_fail(self, client: mqtt.Client, userdata: Any) -> None:
        logger.warning(
            "reconnecting to the MQTT broker at %s failed; retrying with backoff", self.settings.address
        )

    def _on_disconnect(
        self,
        client: mqtt.Client,
        userdata: Any,
        flags: mqtt.DisconnectFlags,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        self._connected.clear()
        if not self._closed:
            logger.warning(
                "lost the MQTT broker at %s (%s); reconnecting in the background",
                self.settings.address,
                reason_code,
            )

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        try:
            topic = message.topic
        except UnicodeDecodeError:
            logger.warning("dropped a message whose topic is not UTF-8")
            return
        with self._state_changed:
            if self._closed:
                return
            handlers = [
                handler
                for topic_filter, filter_handlers in self._handlers.items()
                if mqtt.topic_matches_sub(topic_filter, topic)
                for handler in filter_handlers
            ]
        for handler in handlers:
            try:
                handler(topic, bytes(message.payload))
            except Exception:  # a bad message or a buggy handler must not stop the network thread
                logger.exception("message handler %r failed on a message on %s", handler, topic)

    def _on_publish(
        self,
        client: mqtt.Client,
        userdata: Any,
        message_id: int,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        if reason_code.is_failure:
            logger.error("the MQTT broker at %s refused a message: %s", self.settings.address, reason_code)
        with self._state_changed:
            if message_id in self._unacknowledged_publishes:
                self._unacknowledged_publishes.discard(message_id)
            else:  # acknowledged before publish() got round to recording it
                self._early_acknowledgements.add(message_id)
            self._state_changed.notify_all()

    def _on_subscribe(
        self,
        client: mqtt.Client,
        userdata: Any,
        message_id: int,
        reason_codes: list[ReasonCode],
        properties: Properties | None,
    ) -> None:
        with self._state_changed:
            if message_id in self._unawaited_subscriptions:
                self._unawaited_subscriptions.discard(message_id)
                for code in reason_codes:
                    if code.is_failure:
                        logger.error(
                            "the MQTT broker at %s refused a re-subscription: %s", self.settings.address, code
                        )
                return
            self._subscription_results[message_id] = reason_codes
            self._state_changed.notify_all()

    # -- helpers ------------------------------------------------------------------------------------------

    def _publish(self, topic: str, payload: bytes, retain: bool) -> None:
        try:
            info = self._client.publish(topic, payload, qos=_QOS, retain=retain)
        except ValueError as exc:
            raise MessageBusError(f"cannot publish on {topic!r}: {exc}") from exc
        if info.rc == MQTTErrorCode.MQTT_ERR_QUEUE_SIZE:
            raise MessageBusError(
                f"{self.settings.max_queued_messages} messages already wait for the MQTT broker at "
                f"{self.settings.address}; not queueing more"
            )
        if info.rc not in (MQTTErrorCode.MQTT_ERR_SUCCESS, MQTTErrorCode.MQTT_ERR_NO_CONN):
            raise MessageBusError(f"publishing on {topic!r} failed: {mqtt.error_string(info.rc)}")
        with self._state_changed:
            if info.mid in self._early_acknowledgements:
                self._early_acknowledgements.discard(info.mid)
            else:
                self._unacknowledged_publishes.add(info.mid)

    def _wait_for_acknowledgements(self, timeout_seconds: float) -> int:
        with self._state_changed:
            self._state_changed.wait_for(lambda: not self._unacknowledged_publishes, timeout_seconds)
            return len(self._unacknowledged_publishes)

    def _await_subscription(self, message_id: int) -> list[ReasonCode] | None:
        with self._state_changed:
            answered = self._state_changed.wait_for(
                lambda: message_id in self._subscription_results, self.settings.subscribe_timeout_seconds
            )
            if not answered:
                self._unawaited_subscriptions.add(message_id)
                return None
            return self._subscription_results.pop(message_id)

    def _note_unawaited_subscription(self, message_id: int) -> None:
        with self._state_changed:
            if self._subscription_results.pop(message_id, None) is None:
                self._unawaited_subscriptions.add(message_id)

    def _forget_handler(self, topic_filter: str, handler: MessageHandler) -> None:
        with self._state_changed:
            handlers = self._handlers.get(topic_filter, [])
            if handler in handlers:
                handlers.remove(handler)
            if not handlers:
                self._handlers.pop(topic_filter, None)

    def _on_network_thread(self) -> bool:
        return threading.current_thread() is self._client._thread  # paho has no public accessor

    def _raise_if_closed(self) -> None:
        if self._closed:
            raise MessageBusError(f"the message bus to {self.settings.address} is closed")


def _topic_filter_problem(topic_filter: str) -> str | None:
    """What is wrong with ``topic_filter`` by the MQTT rules, or None. Checked before it is stored, since
    a bad filter would otherwise fail only later, in the re-subscription after a reconnect."""
    if not topic_filter:
        return "a topic filter cannot be empty"
    if len(topic_filter.encode("utf-8")) > 65535 or "\x00" in topic_filter:
        return "a topic filter is at most 65535 bytes of UTF-8 without NUL characters"
    levels = topic_filter.split("/")
    for position, level in enumerate(levels):
        if "#" in level and (level != "#" or position != len(levels) - 1):
            return "'#' must be a whole level, and the last one"
        if "+" in level and level != "+":
            return "'+' must be a whole level"
    return None


def _disable_nagle(client: mqtt.Client) -> None:
    """Send small packets at once. paho leaves Nagle's algorithm on, and with delayed ACKs a publish that
    follows an acknowledgement waits about 40 ms (measured against amqtt: 44 ms per message, 1 ms without)."""
    connection = client.socket()
    if isinstance(connection, socket.socket):
        connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class _SelfClosingSSLSocket(ssl.SSLSocket):
    """Closes itself when the TLS handshake fails: paho 2.2 drops such a socket unclosed (ResourceWarning)."""

    def do_handshake(self, block: bool = False) -> None:
        try:
            super().do_handshake(block)
        except BaseException:
            self.close()
            raise


def _tls_context(ca_file: Path) -> ssl.SSLContext:
    """Verify the broker against ``ca_file`` only, host name included (as paho's own ``tls_set`` does)."""
    try:
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(ca_file))
    except (OSError, ssl.SSLError) as exc:
        raise ConfigurationError(f"cannot use TLS CA file {ca_file}: {exc}") from exc
    context.sslsocket_class = _SelfClosingSSLSocket
    return context
