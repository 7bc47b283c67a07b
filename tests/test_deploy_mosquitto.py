"""The shipped mosquitto configuration and ACL on a real mosquitto: peers publish only under their own topics.

The broker runs ``deploy/mosquitto/layerfed.conf`` itself, with only its paths and port replaced: TLS with a
self-signed certificate made here by openssl, the password file made by ``mosquitto_passwd`` and the ACL
``deploy/mosquitto/acl``. Two peers connect as their lower-case addresses over MQTT 5, as the agent does.
"""

from __future__ import annotations

import os
import shutil
import ssl
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from eth_account import Account
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from agent.protocol.topics import FederationTopics
from tests.services.mosquitto import MosquittoService

pytestmark = pytest.mark.integration

DEPLOY = Path(__file__).resolve().parent.parent / "deploy" / "mosquitto"
FEDERATION = FederationTopics("0x5fbdb2315678afecb367f032d93f642f64180aa3")
NOT_AUTHORIZED = 135
TIMEOUT_SECONDS = 10.0


def _program(name: str) -> str:
    path = shutil.which(name, path=os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/usr/bin"]))
    if path is None:
        pytest.fail(f"{name} is not installed (apt-get install -y mosquitto mosquitto-clients openssl)")
    return path


def self_signed_certificate(directory: Path) -> tuple[Path, Path]:
    """A P-256 certificate for 127.0.0.1, valid for a day: the broker's certificate and the clients' CA."""
    certificate, key = directory / "broker.crt", directory / "broker.key"
    subprocess.run(
        [
            _program("openssl"),
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(certificate),
        ],
        check=True,
        capture_output=True,
    )
    return certificate, key


@dataclass
class Peer:
    username: str
    password: str
    certificate: Path
    port: int
    received: list[tuple[str, bytes]] = field(default_factory=list)
    client: mqtt.Client | None = None
    _arrived: threading.Condition = field(default_factory=threading.Condition)

    def connect(self) -> ReasonCode:
        """Connect and return the broker's CONNACK reason code (disconnecting again if it refused)."""
        answered = threading.Event()
        outcome: list[ReasonCode] = []

        def on_connect(
            client: mqtt.Client, userdata: object, flags: object, reason: ReasonCode, properties: object
        ) -> None:
            outcome.append(reason)
            answered.set()

        client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=f"test-{self.username[:10]}", protocol=mqtt.MQTTv5
        )
        client.tls_set(ca_certs=str(self.certificate), tls_version=ssl.PROTOCOL_TLS_CLIENT)
        client.username_pw_set(self.username, self.password)
        client.on_connect = on_connect
        client.on_message = self._on_message
        client.connect("127.0.0.1", self.port)
        client.loop_start()
        assert answered.wait(TIMEOUT_SECONDS), "no CONNACK"
        self.client = client
        if outcome[0].is_failure:
            self.close()
        return outcome[0]

    def subscribe(self, topic_filter: str) -> None:
        assert self.client is not None
        acknowledged = threading.Event()

        def on_subscribe(
            client: mqtt.Client, userdata: object, mid: int, reasons: list[ReasonCode], properties: object
        ) -> None:
            assert not any(reason.is_failure for reason in reasons), reasons
            acknowledged.set()

        self.client.on_subscribe = on_subscribe
        self.client.subscribe(topic_filter, qos=1)
        assert acknowledged.wait(TIMEOUT_SECONDS), "no SUBACK"

    def publish(self, topic: str, payload: bytes) -> int:
        """Publish at QoS 1 and return the PUBACK's reason code (0: accepted)."""
        assert self.client is not None
        acknowledged = threading.Event()
        codes: list[int] = []

        def on_publish(
            client: mqtt.Client, userdata: object, mid: int, reason: ReasonCode, properties: Properties
        ) -> None:
            codes.append(reason.value)
            acknowledged.set()

        self.client.on_publish = on_publish
        self.client.publish(topic, payload, qos=1)
        assert acknowledged.wait(TIMEOUT_SECONDS), "no PUBACK"
        return codes[0]

    def wait_for(self, count: int) -> list[tuple[str, bytes]]:
        with self._arrived:
            self._arrived.wait_for(lambda: len(self.received) >= count, TIMEOUT_SECONDS)
            return list(self.received)

    def close(self) -> None:
        if self.client is not None:
            self.client.disconnect()
            self.client.loop_stop()
            self.client._reset_sockets()  # loop_stop leaves paho's wake-up socket pair open
            self.client = None

    def _on_message(self, client: mqtt.Client, userdata: object, message: mqtt.MQTTMessage) -> None:
        with self._arrived:
            self.received.append((message.topic, bytes(message.payload)))
            self._arrived.notify_all()


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[tuple[MosquittoService, dict[str, str], Path]]:
    """mosquitto on the shipped configuration (paths and port replaced); yields it, the users, the CA."""
    certificate, key = self_signed_certificate(tmp_path)
    users = {Account.create().address.lower(): f"password-{index}" for index in range(2)}
    passwords = tmp_path / "passwords"
    for index, (username, password) in enumerate(users.items()):
        create = ["-c"] if index == 0 else []
        subprocess.run(
            [_program("mosquitto_passwd"), *create, "-b", str(passwords), username, password],
            check=True,
            capture_output=True,
        )
    service = MosquittoService(tmp_path)
    shipped = (DEPLOY / "layerfed.conf").read_text()
    assert "listener 8883\n" in shipped
    configuration = (
        shipped.replace("listener 8883\n", f"listener {service.port} 127.0.0.1\n")
        .replace("/etc/mosquitto/certs/layerfed.crt", str(certificate))
        .replace("/etc/mosquitto/certs/layerfed.key", str(key))
        .replace("/etc/mosquitto/layerfed/passwords", str(passwords))
        .replace("/etc/mosquitto/layerfed/acl", str(DEPLOY / "acl"))
    )
    configuration += "persistence false\nlog_dest stderr\n"
    if os.geteuid() == 0:
        configuration += "user root\n"  # as root, mosquitto would drop to user "mosquitto"
    service.config_file.write_text(configuration)
    service.start()
    try:
        yield service, users, certificate
    finally:
        service.stop()


def test_a_peer_publishes_under_its_own_topics_only(
    broker: tuple[MosquittoService, dict[str, str], Path],
) -> None:
    service, users, certificate = broker
    (alice, alice_password), (bob, bob_password) = users.items()
    sender = Peer(alice, alice_password, certificate, service.port)
    observer = Peer(bob, bob_password, certificate, service.port)
    try:
        assert not sender.connect().is_failure
        assert not observer.connect().is_failure
        observer.subscribe(f"{FEDERATION.root}/#")  # everyone may read the whole tree

        own_topics = [
            FEDERATION.update_announcements(alice),
            FEDERATION.model_attestations(alice),
            FEDERATION.presence(alice),
        ]
        foreign_topics = [
            FEDERATION.update_announcements(bob),
            FEDERATION.model_attestations(bob),
            FEDERATION.presence(bob),
            f"{FEDERATION.root}/updates/everyone",
            "elsewhere/topic",
        ]
        assert [sender.publish(topic, b"mine") for topic in own_topics] == [0, 0, 0]
        assert [sender.publish(topic, b"forged") for topic in foreign_topics] == [NOT_AUTHORIZED] * 5
        # A marker after the refused messages: once it arrives, anything delivered before it has arrived too.
        assert sender.publish(FEDERATION.presence(alice), b"marker") == 0
        received = observer.wait_for(len(own_topics) + 1)
        assert received == [
            *((topic, b"mine") for topic in own_topics),
            (FEDERATION.presence(alice), b"marker"),
        ]
    finally:
        sender.close()
        observer.close()


def test_strangers_and_wrong_passwords_are_refused(
    broker: tuple[MosquittoService, dict[str, str], Path],
) -> None:
    service, users, certificate = broker
    alice = next(iter(users))
    for username, password in ((alice, "wrong"), (Account.create().address.lower(), "any")):
        peer = Peer(username, password, certificate, service.port)
        try:
            assert peer.connect().is_failure
        finally:
            peer.close()
