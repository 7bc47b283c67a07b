"""A device's identity: the Ethereum key it signs transactions and messages with.

On a device the key is made once and never leaves it: the file is written with mode 0600 and a key file
that group or others can read is refused, as ssh refuses a private key that others can read, because whoever
copies it can submit updates and attest models in the device's name. The file holds the private key as 64
hex digits (an optional ``0x`` and surrounding whitespace allowed).

In a federation on one machine (the demo, the tests, the measurements) keys are derived from the
federation seed instead (:func:`account_from_seed`), because training seeds derive from addresses: with
random keys, two runs of the same command would train different models.

:class:`AccountIdentity` is the :class:`agent.ports.identity.Identity` the round engine signs with; this
module is the only place outside the ledger adapter that knows the signature scheme (``eth_account``).
"""

from __future__ import annotations

import contextlib
import hashlib
import stat
from pathlib import Path

from eth_account import Account
from eth_account.messages import encode_defunct
from eth_account.signers.local import LocalAccount
from eth_utils.address import is_address

from agent.atomic_file import write_atomically
from agent.errors import ConfigurationError, MessageRejectedError

__all__ = [
    "PERSONAL_SIGN",
    "AccountIdentity",
    "EthereumAccount",
    "PersonalSignVerifier",
    "account_from_seed",
    "create_account",
    "load_or_create_account",
]

EthereumAccount = LocalAccount
"""An account with its private key, as the ledger adapter signs transactions with it."""

# The order of secp256k1's group: a private key is an integer in 1..order-1.
_CURVE_ORDER = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141

_PRIVATE_KEY_HEX_DIGITS = 64
_HEX_DIGITS = frozenset("0123456789abcdefABCDEF")


def load_or_create_account(key_file: Path) -> LocalAccount:
    """Load the account whose key ``key_file`` holds, creating the key and the file on first use.

    Raises ConfigurationError, naming the file, when it is readable by group or others, is not a key, or
    cannot be read or written.
    """
    if not key_file.exists():
        _create(key_file)
    return _load(key_file)


def _create(key_file: Path) -> None:
    """Write a fresh key atomically: a temporary file (mode 0600) in the same directory, then a link.

    Linking instead of renaming never replaces a key file that another process created meanwhile: that
    one wins, and this process loads it.
    """
    account = Account.create()
    try:
        key_file.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as error:
        raise ConfigurationError(f"cannot create the key file {key_file}: {error}") from error
    text = account.key.hex().removeprefix("0x") + "\n"
    try:
        with contextlib.suppress(FileExistsError):  # another process created it meanwhile: that one wins
            write_atomically(key_file, text.encode("ascii"), mode=0o600, replace=False)
    except OSError as error:
        raise ConfigurationError(f"cannot write the key file {key_file}: {error}") from error


def _load(key_file: Path) -> LocalAccount:
    try:
        mode = stat.S_IMODE(key_file.stat().st_mode)
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise ConfigurationError(
                f"the key file {key_file} is accessible by group or others (mode {mode:04o}); "
                f"run: chmod 600 {key_file}"
            )
        text = key_file.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigurationError(f"cannot read the key file {key_file}: {error}") from error
    digits = text.removeprefix("0x")
    if len(digits) != _PRIVATE_KEY_HEX_DIGITS or not all(digit in _HEX_DIGITS for digit in digits):
        # The content is never echoed: it may be a key in another format.
        raise ConfigurationError(
            f"the key file {key_file} does not hold a private key ({_PRIVATE_KEY_HEX_DIGITS} hex digits)"
        )
    try:
        account: LocalAccount = Account.from_key(bytes.fromhex(digits))
    except ValueError as error:  # zero, or not below the curve order
        raise ConfigurationError(f"the key file {key_file} holds an invalid private key") from error
    return account


def is_ethereum_address(text: str) -> bool:
    """Whether ``text`` is a 20-byte hex address (any case; a mixed-case one must carry a valid checksum)."""
    return bool(is_address(text))


def create_account() -> LocalAccount:
    """A fresh random account (an observer's, or a one-off deployer's)."""
    account: LocalAccount = Account.create()
    return account


def account_from_seed(seed: int, label: str) -> LocalAccount:
    """The account named ``label`` ("peer-0", "deployer") in the federation seeded with ``seed``.

    The same seed and label give the same key on every run and machine; only for federations on one
    machine, whose keys protect nothing (anyone who knows the seed has them).
    """
    digest = hashlib.sha256(f"layerfed account {seed} {label}".encode()).digest()
    private_key = int.from_bytes(digest, "big") % (_CURVE_ORDER - 1) + 1
    account: LocalAccount = Account.from_key(private_key.to_bytes(32, "big"))
    return account


class PersonalSignVerifier:
    """EIP-191 ``personal_sign`` recovery: the :class:`agent.ports.identity.SignatureVerifier` of peers."""

    def signer_of(self, text: bytes, signature: str) -> str:
        try:
            signer: str = Account.recover_message(
                encode_defunct(primitive=text), signature=bytes.fromhex(signature.removeprefix("0x"))
            )
        # eth_keys raises its own BadSignature (not importable here) as well as ValueError for a bad v/r/s.
        except Exception as exc:  # deliberate, see above
            raise MessageRejectedError(f"invalid signature: {exc}") from exc
        return signer


PERSONAL_SIGN = PersonalSignVerifier()


class AccountIdentity(PersonalSignVerifier):
    """An Ethereum account as this device's identity; ``account`` also signs its transactions."""

    def __init__(self, account: LocalAccount) -> None:
        self.account = account

    @property
    def address(self) -> str:
        address: str = self.account.address
        return address

    def sign(self, text: bytes) -> str:
        signed = self.account.sign_message(encode_defunct(primitive=text))
        return "0x" + bytes(signed.signature).hex()
