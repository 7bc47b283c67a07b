"""Presence over the bus: a retained "online" on connect and an "offline" last will, both signed."""

from __future__ import annotations

import time

from agent.adapters.mqtt_bus import OutgoingMessage
from agent.ports.identity import Signer
from agent.protocol.messages import OFFLINE, ONLINE, Presence, PresenceStatus, encode, topic_of


def presence_message(federation_id: str, account: Signer, status: PresenceStatus) -> OutgoingMessage:
    presence = Presence(
        federation=federation_id, participant=account.address, status=status, sent_at=int(time.time() * 1000)
    )
    return OutgoingMessage(topic=topic_of(presence), payload=encode(presence, account), retain=True)


def online_and_last_will(federation_id: str, account: Signer) -> tuple[OutgoingMessage, OutgoingMessage]:
    """The message to publish on every connect, and the will the broker publishes if this peer vanishes."""
    return (
        presence_message(federation_id, account, ONLINE),
        presence_message(federation_id, account, OFFLINE),
    )
