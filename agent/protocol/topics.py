"""Every MQTT topic name layerfed uses, built in this one module.

One topic tree per federation, so that several federations can share a broker without hearing each
other, and so that one wildcard subscription (``layerfed/<federation>/#``) sees a whole federation::

    layerfed/<federation>/updates/<participant>       UpdateAnnounced  (a peer's update is pinned)
    layerfed/<federation>/attestations/<participant>  ModelAttested    (a peer vouches for a merged model)
    layerfed/<federation>/presence/<participant>      Presence         (retained; "offline" = last will)

The last level is the sender's address in lower case. One topic per sender lets the broker keep one
retained presence per peer, and lets a receiver check that a message arrived on its sender's own topic
(``agent.protocol.messages.decode`` does when given the topic).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

from agent.errors import ConfigurationError

TOPIC_ROOT: Final = "layerfed"
UPDATES_LEVEL: Final = "updates"
ATTESTATIONS_LEVEL: Final = "attestations"
PRESENCE_LEVEL: Final = "presence"

_FEDERATION_ID_PATTERN: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_ADDRESS_PATTERN: Final = re.compile(r"0x[0-9a-fA-F]{40}")


def is_valid_federation_id(text: str) -> bool:
    """1 to 64 letters, digits, ``.``, ``_`` or ``-``, starting with a letter or digit.

    Narrower than MQTT allows on purpose: no ``/``, ``+``, ``#`` or spaces, so an id is always exactly one
    topic level and can never widen a subscription.
    """
    return _FEDERATION_ID_PATTERN.fullmatch(text) is not None


def is_valid_address(text: str) -> bool:
    """``0x`` and 40 hexadecimal digits, in any letter case (an Ethereum account address)."""
    return _ADDRESS_PATTERN.fullmatch(text) is not None


@dataclass(frozen=True)
class FederationTopics:
    """The topic names of one federation. Raises ConfigurationError for an unusable federation id."""

    federation_id: str

    def __post_init__(self) -> None:
        if not is_valid_federation_id(self.federation_id):
            raise ConfigurationError(
                f"federation id {self.federation_id!r} is not usable in topic names: use 1 to 64 letters, "
                "digits, '.', '_' or '-', starting with a letter or digit"
            )

    @property
    def root(self) -> str:
        """``layerfed/<federation>``: the prefix of every topic of this federation."""
        return f"{TOPIC_ROOT}/{self.federation_id}"

    def everything(self) -> str:
        """A filter matching every message of this federation (monitoring, debugging)."""
        return f"{self.root}/#"

    def update_announcements(self, participant: str) -> str:
        """Where ``participant`` announces its updates."""
        return self._participant_topic(UPDATES_LEVEL, participant)

    def all_update_announcements(self) -> str:
        """A filter matching every participant's update announcements."""
        return f"{self.root}/{UPDATES_LEVEL}/+"

    def model_attestations(self, participant: str) -> str:
        """Where ``participant`` attests the merged models it computed."""
        return self._participant_topic(ATTESTATIONS_LEVEL, participant)

    def all_model_attestations(self) -> str:
        """A filter matching every participant's model attestations."""
        return f"{self.root}/{ATTESTATIONS_LEVEL}/+"

    def presence(self, participant: str) -> str:
        """Where ``participant``'s retained presence lives (online on connect, offline as its last will)."""
        return self._participant_topic(PRESENCE_LEVEL, participant)

    def all_presence(self) -> str:
        """A filter matching every participant's presence."""
        return f"{self.root}/{PRESENCE_LEVEL}/+"

    def _participant_topic(self, level: str, participant: str) -> str:
        if not is_valid_address(participant):
            raise ConfigurationError(f"participant {participant!r} is not an Ethereum address (0x + 40 hex)")
        return f"{self.root}/{level}/{participant.lower()}"
