"""The one exception tree of layerfed.

Every error raised to a caller is a :class:`LayerfedError`. Errors of third-party libraries (web3, paho,
ipfshttpclient, safetensors, ...) are translated once, where the adapter calls them, with
``raise SomeError(...) from exc``, so nothing above an adapter sees a foreign exception.

Each class declares the process exit code the CLI uses when it ends a command, in ranges per kind of
failure, so that systemd can tell a configuration mistake (do not restart) from a transient failure
(restart). Codes follow ``sysexits.h`` where one fits. The tree has one branch per kind, and the kind
decides the code; a class never sits under a branch whose code it overrides, because code that retries
(``except NetworkError``) must never retry something that trying again cannot fix:

- :class:`ConfigurationError` (78): fix the file or the command line;
- :class:`BackendUnavailableError` (69): install the backend or choose another;
- :class:`RejectedInputError` (65): bad data, or an input that was refused for good;
- :class:`NetworkError` (75): a service failed; trying again may help;
- :class:`LayerfedError` itself, and any exception layerfed did not expect (70): a bug.

:data:`EXIT_CODES` is the table the README documents; a test keeps the two equal.
"""

from __future__ import annotations

EXIT_SUCCESS = 0
EXIT_NOT_RUNNING = 3  # ``layerfed status`` only: as `systemctl status` and LSB init scripts say "not running"
EXIT_REJECTED = 65  # EX_DATAERR
EXIT_UNAVAILABLE = 69  # EX_UNAVAILABLE
EXIT_BUG = 70  # EX_SOFTWARE
EXIT_TRANSIENT = 75  # EX_TEMPFAIL
EXIT_CONFIGURATION = 78  # EX_CONFIG
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as shells report a Ctrl-C

EXIT_CODES: dict[int, str] = {
    EXIT_SUCCESS: "success: schedule complete, or stopped by SIGTERM",
    EXIT_NOT_RUNNING: "`layerfed status` only: the agent is not running",
    EXIT_REJECTED: "bad data or a rejected input",
    EXIT_UNAVAILABLE: "a training backend not installed here",
    EXIT_BUG: "a bug (the traceback is logged), or demo peers that ended with different models",
    EXIT_TRANSIENT: "a service (chain, IPFS, broker) failed: transient",
    EXIT_CONFIGURATION: "a configuration mistake (the message names the file and the key, or the option)",
    EXIT_INTERRUPTED: "interrupted by Ctrl-C (SIGINT) in the foreground",
}


class LayerfedError(Exception):
    """Base of every error layerfed raises on purpose."""

    exit_code: int = EXIT_BUG


class ConfigurationError(LayerfedError):
    """A configuration file, key or command-line value is wrong. Restarting will not help."""

    exit_code = EXIT_CONFIGURATION


class BackendUnavailableError(LayerfedError):
    """A training backend was selected whose packages are not installed on this platform."""

    exit_code = EXIT_UNAVAILABLE


class RejectedInputError(LayerfedError):
    """Input that is wrong for good: trying again gives the same answer, so nothing retries it."""

    exit_code = EXIT_REJECTED


class DataError(RejectedInputError):
    """A data set file is missing, truncated or corrupt; the message names the file and the problem."""


class UpdateRejectedError(RejectedInputError):
    """A peer's update or model failed validation: wrong tensors, shapes, dtype, non-finite values, size."""


class MessageRejectedError(RejectedInputError):
    """An incoming message is malformed, unsigned, signed by a stranger, or replayed."""


class ContentMismatchError(RejectedInputError):
    """Bytes returned for a CID do not hash to that CID. Never transient: the source is lying or broken.

    Not a :class:`ContentStoreError`: a store that answered with the wrong bytes would answer so again.
    """


class VerificationFailedError(RejectedInputError):
    """A finalized round's canonical model is not the merge of its submitted updates (a forged finalization,
    found by ``layerfed federation verify``)."""


class ContractRevertError(RejectedInputError):
    """The coordinator contract refused a call; ``reason`` holds the decoded custom error.

    Not a :class:`LedgerError`: the same call on the same chain state is refused again. The round engine
    re-reads the chain after a revert that says the round moved on, and lets every other revert end it.
    """

    def __init__(self, message: str, reason: str | None = None) -> None:
        super().__init__(message)
        self.reason = reason


class NetworkError(LayerfedError):
    """A service (content store, chain, broker) failed or is unreachable. Transient: retry."""

    exit_code = EXIT_TRANSIENT


class ContentStoreError(NetworkError):
    """The content store (local directory or IPFS node) failed."""


class ContentNotFoundError(ContentStoreError):
    """No content is stored under the requested CID."""


class LedgerError(NetworkError):
    """The chain or the JSON-RPC node failed."""


class MessageBusError(NetworkError):
    """The MQTT broker failed or is unreachable."""


class WorkerFailedError(LayerfedError):
    """A worker (a benchmark job's process, a demo peer's thread) failed: the command ends with its code.

    A code outside :data:`EXIT_CODES` (a signal, a crash of the interpreter) becomes the bug code, so the
    command's own exit status always means what the table says.
    """

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        documented = exit_code in EXIT_CODES and exit_code not in (EXIT_SUCCESS, EXIT_NOT_RUNNING)
        self.exit_code = exit_code if documented else EXIT_BUG
