"""The identity port: who this device is, and who signed a payload.

The round engine signs its announcements and checks its peers' without knowing the signature scheme, so
that it imports no cryptography library (dependencies point one way: the engine imports ports, adapters
implement them). The scheme is EIP-191 ``personal_sign`` by an Ethereum key, the same key that sends the
device's transactions, so an address on the chain and a signer on the bus are the same identity.

Implementation: ``agent.adapters.account_identity.AccountIdentity`` (an ``eth_account`` key, kept in a
key file on a device or derived from the federation seed in a demo).
"""

from __future__ import annotations

from typing import Protocol


class SignatureVerifier(Protocol):
    """Tells who signed a text; needs no key of its own."""

    def signer_of(self, text: bytes, signature: str) -> str:
        """The address whose key made ``signature`` over ``text``.

        Raises :class:`agent.errors.MessageRejectedError` when ``signature`` is not a valid signature.
        """
        ...


class Signer(Protocol):
    """This device's identity: the address peers and the chain know it by, and its signature."""

    @property
    def address(self) -> str:
        """The checksummed address."""
        ...

    def sign(self, text: bytes) -> str:
        """A signature over ``text`` that :meth:`SignatureVerifier.signer_of` maps back to :attr:`address`:
        ``0x`` and 130 hexadecimal digits."""
        ...


class Identity(Signer, SignatureVerifier, Protocol):
    """What the round engine is given: it signs as itself and checks its peers' signatures."""
