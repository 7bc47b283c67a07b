"""The one exception tree of layerfed.

Every error raised to a caller is a :class:`LayerfedError`. Errors of third-party libraries (web3, paho,
ipfshttpclient, safetensors, ...) are translated once, where the adapter calls them, with
``raise SomeError(...) from exc``, so nothing above an adapter sees a foreign exception.

Each class declares the process exit code the CLI uses when it ends a command, in ranges per kind of
failure, so that systemd can tell a configuration mistake (do not restart) from a transient failure
(restart). Codes follow ``sysexits.h`` where one fits.
"""

from __future__ import annotations


class LayerfedError(Exception):
    """Base of every error layerfed raises on purpose."""

    exit_code: int = 70  # EX_SOFTWARE


class ConfigurationError(LayerfedError):
    """A configuration file, key or command-line value is wrong. Restarting will not help."""

    exit_code = 78  # EX_CONFIG


class DataError(LayerfedError):
    """A data set file is missing, truncated or corrupt; the message names the file and the problem."""

    exit_code = 65  # EX_DATAERR


class BackendUnavailableError(LayerfedError):
    """A training backend was selected whose packages are not installed on this platform."""

    exit_code = 69  # EX_UNAVAILABLE


class UpdateRejectedError(LayerfedError):
    """A peer's update or model failed validation: wrong tensors, shapes, dtype, non-finite values, size."""

    exit_code = 65


class NetworkError(LayerfedError):
    """A service (content store, chain, broker) failed or is unreachable. Usually transient: retry."""

    exit_code = 75  # EX_TEMPFAIL


class ContentStoreError(NetworkError):
    """The content store (local directory or IPFS node) failed."""


class ContentNotFoundError(ContentStoreError):
    """No content is stored under the requested CID."""


class ContentMismatchError(ContentStoreError):
    """Bytes returned for a CID do not hash to that CID. Never transient: the source is lying or broken."""

    exit_code = 65


class LedgerError(NetworkError):
    """The chain or the JSON-RPC node failed."""


class ContractRevertError(LedgerError):
    """The coordinator contract reverted a transaction; ``reason`` holds the decoded custom error."""

    exit_code = 65

    def __init__(self, message: str, reason: str | None = None) -> None:
        super().__init__(message)
        self.reason = reason


class MessageBusError(NetworkError):
    """The MQTT broker failed or is unreachable."""


class MessageRejectedError(LayerfedError):
    """An incoming message is malformed, unsigned, signed by a stranger, or replayed."""

    exit_code = 65
