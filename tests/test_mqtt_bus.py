"""The MQTT adapter against the embedded amqtt broker (MQTT 3.1.1) and a real mosquitto (MQTT 5).

Every wait is an event or a queue with a timeout; nothing sleeps and then asserts.
"""

from __future__ import annotations

import gc
import logging
import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import pytest
from eth_account import Account

from agent.adapters.account_identity import PERSONAL_SIGN, AccountIdentity
from agent.adapters.embedded_broker import EmbeddedBroker
from agent.adapters.mqtt_bus import MqttMessageBus, MqttSettings
from agent.errors import ConfigurationError, MessageBusError
from agent.ports.message_bus import MessageBus
from agent.protocol.messages import OFFLINE, ONLINE, Presence, decode, encode, topic_of
from tests.services.mosquitto import (
    MOSQUITTO_PASSWORD,
    MOSQUITTO_USERNAME,
    MosquittoService,
    make_certificate_authority,
)

TIMEOUT_SECONDS = 10.0
RECONNECT_TIMEOUT_SECONDS = 20.0
REPOSITORY_ROOT = Path(__file__).resolve().parent.parent


class _Service(Protocol):
    host: str
    port: int

    def start(self) -> None: ...
    def stop(self) -> None: ...


@dataclass
class BrokerUnderTest:
    """A running broker and the MQTT version to speak to it."""

    service: _Service
    protocol: str

    def settings(self, **overrides: Any) -> MqttSettings:
        fields: dict[str, Any] = {
            "host": self.service.host,
            "port": self.service.port,
            "protocol": self.protocol,
            "connect_timeout_seconds": 5.0,
            "reconnect_min_delay_seconds": 1,
            "reconnect_max_delay_seconds": 1,
            "close_timeout_seconds": 2.0,
        }
        return MqttSettings(**{**fields, **overrides})


@pytest.fixture(
    params=["embedded", pytest.param("mosquitto", marks=pytest.mark.integration)],
)
def broker(request: pytest.FixtureRequest) -> Iterator[BrokerUnderTest]:
    if request.param == "mosquitto":
        mosquitto: MosquittoService = request.getfixturevalue("mosquitto")
        yield BrokerUnderTest(mosquitto, "5")
        return
    with EmbeddedBroker() as embedded:
        yield BrokerUnderTest(embedded, EmbeddedBroker.mqtt_protocol)


@pytest.fixture(autouse=True)
def _no_leaked_threads() -> Iterator[None]:
    """Closing a bus or stopping a broker ends its thread; a leak here would not show up otherwise."""
    before = set(threading.enumerate())
    yield
    leaked = [
        thread.name
        for thread in set(threading.enumerate()) - before
        if thread.name.startswith(("paho-mqtt-client", "embedded-mqtt-broker"))
    ]
    assert leaked == []


def _receiver() -> tuple[queue.Queue[tuple[str, bytes]], Callable[[str, bytes], None]]:
    received: queue.Queue[tuple[str, bytes]] = queue.Queue()
    return received, lambda topic, payload: received.put((topic, payload))


def _receive_all(
    received: queue.Queue[tuple[str, bytes]], expected: set[tuple[str, bytes]]
) -> set[tuple[str, bytes]]:
    """Collect messages until every expected one came (duplicates allowed) or the timeout passes."""
    got: set[tuple[str, bytes]] = set()
    deadline = time.monotonic() + TIMEOUT_SECONDS
    while not expected <= got and time.monotonic() < deadline:
        try:
            got.add(received.get(timeout=max(deadline - time.monotonic(), 0.0)))
        except queue.Empty:
            break
    return got


def _wait_until(condition: Callable[[], bool], timeout_seconds: float = TIMEOUT_SECONDS) -> bool:
    deadline = time.monotonic() + timeout_seconds
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def _unused_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def test_the_adapter_is_a_message_bus(broker: BrokerUnderTest) -> None:
    with MqttMessageBus(broker.settings()) as bus:
        port: MessageBus = bus
        assert port is bus


def test_publish_subscribe_round_trip(broker: BrokerUnderTest) -> None:
    received, handler = _receiver()
    payload = bytes(range(256)) * 4  # binary, with zero bytes
    with MqttMessageBus(broker.settings()) as subscriber, MqttMessageBus(broker.settings()) as publisher:
        subscriber.subscribe("layerfed/fed-1/updates/+", handler)
        publisher.publish("layerfed/fed-2/updates/0xabc", b"another federation")
        publisher.publish("layerfed/fed-1/updates/0xabc", payload)
        assert received.get(timeout=TIMEOUT_SECONDS) == ("layerfed/fed-1/updates/0xabc", payload)
        publisher.publish("layerfed/fed-1/updates/0xdef", b"second")
        assert received.get(timeout=TIMEOUT_SECONDS) == ("layerfed/fed-1/updates/0xdef", b"second")


def test_qos1_publishes_are_acknowledged_by_the_broker(broker: BrokerUnderTest) -> None:
    received, handler = _receiver()
    with MqttMessageBus(broker.settings()) as bus:
        bus.subscribe("qos/#", handler)
        for number in range(20):
            bus.publish(f"qos/{number}", str(number).encode())
        assert bus.flush(TIMEOUT_SECONDS)  # every PUBACK arrived: QoS 0 would have none
        expected = {(f"qos/{number}", str(number).encode()) for number in range(20)}
        assert _receive_all(received, expected) == expected


def test_a_handler_that_raises_does_not_stop_later_deliveries(
    broker: BrokerUnderTest, caplog: pytest.LogCaptureFixture
) -> None:
    received, handler = _receiver()

    def faulty_handler(topic: str, payload: bytes) -> None:
        if payload == b"poison":
            raise RuntimeError("cannot digest this")

    with MqttMessageBus(broker.settings()) as bus:
        bus.subscribe("handlers/#", faulty_handler)
        bus.subscribe("handlers/#", handler)
        bus.publish("handlers/a", b"poison")
        bus.publish("handlers/a", b"fine")
        assert received.get(timeout=TIMEOUT_SECONDS) == (
            "handlers/a",
            b"poison",
        )  # the second handler still ran
        assert received.get(timeout=TIMEOUT_SECONDS) == ("handlers/a", b"fine")
    # Only the bus's own records: the embedded broker (amqtt) sometimes logs an unrelated asyncio error
    # while an earlier test's connection is torn down ("feed_data after feed_eof").
    failures = [
        record
        for record in caplog.records
        if record.name == "agent.adapters.mqtt_bus" and record.levelno == logging.ERROR and record.exc_info
    ]
    assert len(failures) == 1
    assert "cannot digest this" in str(failures[0].exc_info[1] if failures[0].exc_info else "")


def test_a_handler_cannot_close_the_bus_it_runs_on(broker: BrokerUnderTest) -> None:
    errors: queue.Queue[Exception] = queue.Queue()
    with MqttMessageBus(broker.settings()) as bus:

        def closing_handler(topic: str, payload: bytes) -> None:
            try:
                bus.close()
            except MessageBusError as exc:
                errors.put(exc)

        bus.subscribe("closing/#", closing_handler)
        bus.publish("closing/now", b"x")
        assert "cannot close the bus it is running on" in str(errors.get(timeout=TIMEOUT_SECONDS))
        assert bus.is_connected


def test_retained_presence_and_the_last_will_of_a_client_that_dies(broker: BrokerUnderTest) -> None:
    account = AccountIdentity(Account.from_key("0x" + "33" * 32))
    online = Presence("fed-1", account.address, ONLINE, 1_763_800_000_000)
    offline = Presence("fed-1", account.address, OFFLINE, 1_763_800_000_000)
    topic = topic_of(online)
    received, handler = _receiver()
    with MqttMessageBus(broker.settings()) as observer:
        observer.subscribe(topic, handler)
        peer = _start_peer_process(
            broker.settings(), topic, encode(online, account), encode(offline, account)
        )
        try:
            got_topic, payload = received.get(timeout=TIMEOUT_SECONDS)
            assert (got_topic, decode(payload, verifier=PERSONAL_SIGN, topic=got_topic)) == (topic, online)
            peer.send_signal(signal.SIGKILL)  # no DISCONNECT packet: the broker must publish the will
            peer.wait(TIMEOUT_SECONDS)
        finally:
            _end_process(peer)
        got_topic, payload = received.get(timeout=TIMEOUT_SECONDS)
        assert (got_topic, decode(payload, verifier=PERSONAL_SIGN, topic=got_topic)) == (topic, offline)
    late_received, late_handler = _receiver()
    with MqttMessageBus(broker.settings()) as latecomer:
        latecomer.subscribe(topic, late_handler)
        got_topic, payload = late_received.get(timeout=TIMEOUT_SECONDS)  # retained: kept for later arrivals
        assert decode(payload, verifier=PERSONAL_SIGN, topic=got_topic) == offline


def test_after_a_broker_restart_the_client_reconnects_resubscribes_and_sends_its_queue(
    broker: BrokerUnderTest,
) -> None:
    received, handler = _receiver()
    with MqttMessageBus(broker.settings()) as subscriber, MqttMessageBus(broker.settings()) as publisher:
        subscriber.subscribe("restart/#", handler)
        publisher.publish("restart/before", b"1")
        assert received.get(timeout=TIMEOUT_SECONDS) == ("restart/before", b"1")

        broker.service.stop()
        assert _wait_until(lambda: not subscriber.is_connected and not publisher.is_connected)
        # Queued while the broker is down, sent on reconnect; retained, so it reaches the subscriber
        # whichever of the two clients reconnects first.
        publisher.publish("restart/queued", b"2", retain=True)
        subscriber.subscribe("late/#", handler)  # made when the connection is back
        broker.service.start()

        assert subscriber.wait_until_connected(RECONNECT_TIMEOUT_SECONDS)
        assert publisher.wait_until_connected(RECONNECT_TIMEOUT_SECONDS)
        publisher.publish("restart/after", b"3", retain=True)
        publisher.publish("late/subscription", b"4", retain=True)
        # A retained message may arrive twice (live, and again on re-subscription): QoS 1 is at least once.
        expected = {("restart/queued", b"2"), ("restart/after", b"3"), ("late/subscription", b"4")}
        assert _receive_all(received, expected) == expected


def test_a_dead_broker_at_connect_is_a_message_bus_error_naming_it() -> None:
    port = _unused_port()
    with pytest.raises(MessageBusError, match=f"127.0.0.1:{port}.*refused"):
        MqttMessageBus(MqttSettings(port=port))


def test_a_silent_broker_is_a_message_bus_error_after_the_connect_timeout() -> None:
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()  # the kernel completes the TCP handshake; nobody ever answers CONNECT
        port = silent.getsockname()[1]
        started = time.monotonic()
        with pytest.raises(MessageBusError, match=f"127.0.0.1:{port} did not answer within 0.5 s"):
            MqttMessageBus(MqttSettings(port=port, connect_timeout_seconds=0.5))
        assert time.monotonic() - started < TIMEOUT_SECONDS


def test_mqtt5_against_the_embedded_broker_says_to_use_3_1_1() -> None:
    with EmbeddedBroker() as embedded, pytest.raises(MessageBusError, match=r"needs 3\.1\.1"):
        MqttMessageBus(MqttSettings(host=embedded.host, port=embedded.port, protocol="5"))


@pytest.mark.integration
def test_credentials_against_a_password_protected_mosquitto(
    mosquitto_with_password: MosquittoService,
) -> None:
    broker = BrokerUnderTest(mosquitto_with_password, "5")
    with pytest.raises(ConfigurationError, match="refused the connection"):
        MqttMessageBus(broker.settings())
    with pytest.raises(ConfigurationError, match="refused the connection"):
        MqttMessageBus(broker.settings(username=MOSQUITTO_USERNAME, password="wrong"))
    received, handler = _receiver()
    with MqttMessageBus(broker.settings(username=MOSQUITTO_USERNAME, password=MOSQUITTO_PASSWORD)) as bus:
        bus.subscribe("auth/#", handler)
        bus.publish("auth/ok", b"in")
        assert received.get(timeout=TIMEOUT_SECONDS) == ("auth/ok", b"in")


def test_publishing_while_disconnected_queues_up_to_the_limit(broker: BrokerUnderTest) -> None:
    bus = MqttMessageBus(broker.settings(max_queued_messages=2, close_timeout_seconds=0.1))
    try:
        broker.service.stop()
        assert _wait_until(lambda: not bus.is_connected)
        bus.publish("queue/1", b"1")
        bus.publish("queue/2", b"2")
        with pytest.raises(MessageBusError, match="2 messages already wait"):
            bus.publish("queue/3", b"3")
        assert not bus.flush(0.05)
    finally:
        bus.close()


def test_misuse_is_a_message_bus_error(broker: BrokerUnderTest) -> None:
    with MqttMessageBus(broker.settings()) as bus:
        with pytest.raises(MessageBusError, match="cannot publish on 'wild/#'"):
            bus.publish("wild/#", b"x")
        for bad_filter in ("", "a/#/b", "a#", "a/b+"):
            with pytest.raises(MessageBusError, match=re.escape(f"cannot subscribe to '{bad_filter}'")):
                bus.subscribe(bad_filter, lambda topic, payload: None)
    bus.close()  # idempotent
    with pytest.raises(MessageBusError, match="is closed"):
        bus.publish("after/close", b"x")
    with pytest.raises(MessageBusError, match="is closed"):
        bus.subscribe("after/close", lambda topic, payload: None)


def test_settings_are_validated() -> None:
    with pytest.raises(ConfigurationError, match="protocol"):
        MqttSettings(protocol="3.1")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="password needs a username"):
        MqttSettings(password="secret")
    with pytest.raises(ConfigurationError, match="port"):
        MqttSettings(port=0)


def test_a_missing_tls_ca_file_is_a_configuration_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="TLS CA file"):
        MqttMessageBus(MqttSettings(tls_ca_file=tmp_path / "absent.pem"))


def test_the_embedded_broker_accepts_clients_once_started_stops_and_restarts_on_its_port() -> None:
    embedded = EmbeddedBroker()
    embedded.start()  # returns once clients can connect, however loaded the machine
    embedded.start()  # idempotent
    port = embedded.port
    assert embedded.is_running and port > 0
    with MqttMessageBus(MqttSettings(host=embedded.host, port=port, protocol="3.1.1")) as client:
        assert client.is_connected
    embedded.stop()
    embedded.stop()  # idempotent
    assert not embedded.is_running
    with pytest.raises(MessageBusError, match="refused"):
        MqttMessageBus(MqttSettings(port=port, protocol="3.1.1"))
    with embedded:
        assert embedded.port == port
        MqttMessageBus(MqttSettings(port=port, protocol="3.1.1")).close()


def test_the_embedded_broker_reports_a_taken_port() -> None:
    with EmbeddedBroker() as first, pytest.raises(MessageBusError, match=f"127.0.0.1:{first.port}"):
        EmbeddedBroker(port=first.port).start()


def test_stopping_the_embedded_broker_closes_a_connection_still_waiting_for_its_connect() -> None:
    """A client caught half-way (TCP open, no CONNECT yet) must not leave its socket to the garbage
    collector after the broker's event loop is gone: that surfaced as "unclosed socket" and "loop is
    closed" ResourceWarnings in whichever later test happened to collect it."""
    broker = EmbeddedBroker()
    broker.start()
    with socket.create_connection((broker.host, broker.port)) as silent_client:
        accepted = threading.Event()
        deadline = time.monotonic() + 5
        while not accepted.wait(0.01) and time.monotonic() < deadline:
            if broker._broker.open_streams:  # the broker's side of the connection exists
                accepted.set()
        assert accepted.is_set()
        broker.stop()  # while the client still holds its end open
        assert silent_client.recv(1) == b""  # the broker closed its end
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        gc.collect()
    assert [str(warning.message) for warning in caught if warning.category is ResourceWarning] == []


_PEER_SCRIPT = """
import sys
from agent.adapters.mqtt_bus import MqttMessageBus, MqttSettings, OutgoingMessage
host, port, protocol, topic, online, offline = sys.argv[1:]
bus = MqttMessageBus(
    MqttSettings(host=host, port=int(port), protocol=protocol),
    last_will=OutgoingMessage(topic, bytes.fromhex(offline)),
    connect_message=OutgoingMessage(topic, bytes.fromhex(online)),
)
print("connected", flush=True)
sys.stdin.read()  # live until killed
"""


def _start_peer_process(
    settings: MqttSettings, topic: str, online: bytes, offline: bytes
) -> subprocess.Popen[str]:
    """A peer in its own process, so it can die the hard way (SIGKILL) without a DISCONNECT."""
    environment = {**os.environ, "PYTHONPATH": str(REPOSITORY_ROOT)}
    arguments = [settings.host, str(settings.port), settings.protocol, topic, online.hex(), offline.hex()]
    peer = subprocess.Popen(
        [sys.executable, "-c", _PEER_SCRIPT, *arguments],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=environment,
    )
    assert peer.stdout is not None
    if peer.stdout.readline().strip() != "connected":
        _end_process(peer)
        pytest.fail("the peer process did not connect")
    return peer


def _end_process(process: subprocess.Popen[str]) -> None:
    if process.poll() is None:
        process.kill()
    process.wait(TIMEOUT_SECONDS)
    for stream in (process.stdin, process.stdout):
        if stream is not None:
            stream.close()


@pytest.mark.integration
def test_tls_with_the_brokers_ca_connects_and_a_stranger_ca_is_refused(
    mosquitto_with_tls: MosquittoService, tmp_path: Path
) -> None:
    broker = BrokerUnderTest(mosquitto_with_tls, "5")
    received, handler = _receiver()
    with MqttMessageBus(broker.settings(tls_ca_file=mosquitto_with_tls.tls_ca_file)) as bus:
        bus.subscribe("tls/#", handler)
        bus.publish("tls/ok", b"private")
        assert received.get(timeout=TIMEOUT_SECONDS) == ("tls/ok", b"private")
    stranger_ca, _ = make_certificate_authority(tmp_path / "stranger")
    with pytest.raises(MessageBusError, match=f"{mosquitto_with_tls.address}.*certificate verify failed"):
        MqttMessageBus(broker.settings(tls_ca_file=stranger_ca))
    with pytest.raises(MessageBusError, match=mosquitto_with_tls.address):
        MqttMessageBus(broker.settings(connect_timeout_seconds=1.0))  # plain MQTT to a TLS listener


def test_pahos_expected_not_connected_error_is_silent_at_the_default_level(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """paho logs it at ERROR between reconnect attempts and at the end of every demo: demoted, not shown."""
    paho = logging.getLogger("agent.adapters.mqtt_bus.paho")
    with caplog.at_level(logging.WARNING):
        paho.error("Client is not connected. Socket: None).")
        paho.error("a real paho failure")
    assert [(record.levelname, record.getMessage()) for record in caplog.records] == [
        ("ERROR", "a real paho failure")
    ]
    caplog.clear()
    with caplog.at_level(logging.DEBUG):
        paho.error("Client is not connected. Socket: None).")
    assert [record.levelname for record in caplog.records] == ["DEBUG"]
