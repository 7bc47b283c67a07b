"""A device's identity: the Ethereum key it signs transactions and messages with, kept in one file.

The key is made once, on the device, and never leaves it: the file is written with mode 0600 and a key file
that group or others can read is refused, as ssh refuses a private key that others can read, because whoever
copies it can submit updates and attest models in the device's name.

The file holds the private key as 64 hex digits (an optional ``0x`` and surrounding whitespace allowed).
"""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from pathlib import Path

from eth_account import Account
from eth_account.signers.local import LocalAccount

from agent.errors import ConfigurationError

__all__ = ["load_or_create_account"]

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
        descriptor, temporary_name = tempfile.mkstemp(dir=key_file.parent, prefix=f".{key_file.name}.")
    except OSError as error:
        raise ConfigurationError(f"cannot create the key file {key_file}: {error}") from error
    try:
        with os.fdopen(descriptor, "w", encoding="ascii") as handle:  # mkstemp opens it with mode 0600
            handle.write(account.key.hex().removeprefix("0x") + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        with contextlib.suppress(FileExistsError):
            os.link(temporary_name, key_file)
    except OSError as error:
        raise ConfigurationError(f"cannot write the key file {key_file}: {error}") from error
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary_name)


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
