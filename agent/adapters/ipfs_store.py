"""The IPFS content store: an IPFS node (kubo, go-ipfs or js-ipfs) reached over its HTTP RPC API.

Why ``ipfshttpclient.Client(address)`` and not ``ipfshttpclient.connect(address)``: ``connect`` asks the
daemon for its version and refuses every node newer than 0.7 (``VersionMismatch``), that is every kubo and
js-ipfs release in use, although the few calls used here (``add``, ``cat``, ``pin/add``, ``pin/ls``) have
not changed. Constructing the client directly skips that check. This workaround lives in this module only.

Same bytes, same CID: :meth:`IpfsContentStore.put` asks for CIDv1, raw leaves and the 256 KiB chunker,
then compares the CID the node returns with :func:`agent.content_id.compute`. A node that builds its DAG
differently would name updates differently from every other store, so ``put`` refuses it.

Threads: one store may be called from several threads at once (a merge fetches its updates in parallel).
ipfshttpclient opens a fresh ``requests`` session for every call unless a persistent one is opened
(``Client(session=True)``, never done here), so no session, whose thread safety requests does not promise,
is ever shared; the client object itself keeps no state between calls.

Errors: every ipfshttpclient exception is translated here into :class:`agent.errors.ContentStoreError`
or a subclass. Refused and dropped connections (a node restarting) are retried a few times with
exponential backoff; nothing else is retried.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import Any

import ipfshttpclient
from ipfshttpclient import exceptions as ipfs_exceptions

from agent import content_id
from agent.errors import ConfigurationError, ContentNotFoundError, ContentStoreError
from agent.retry_policy import RetryPolicy

__all__ = ["DEFAULT_ADDRESS", "IpfsContentStore"]

DEFAULT_ADDRESS = "/ip4/127.0.0.1/tcp/5001/http"
"""Where kubo serves its RPC API by default."""

_CHUNKER = f"size-{content_id.CHUNK_SIZE}"
_TRANSIENT_ERRORS = (ipfs_exceptions.ConnectionError, ipfs_exceptions.ProtocolError)
# Error messages with which nodes say that content is absent, or could not be found in time:
# js-ipfs ("request timed out", "... is not pinned") and kubo ("context deadline exceeded", "not found").
_NOT_FOUND_MESSAGES = ("timed out", "deadline exceeded", "not found", "not pinned")
# The node gives up at `timeout` and says so; the client waits this much longer to hear it.
_CLIENT_TIMEOUT_MARGIN_SECONDS = 5.0


class IpfsContentStore:
    """A :class:`agent.ports.content_store.ContentStore` on an IPFS node.

    ``timeout`` bounds each call in seconds: a ``get`` or ``pin`` of content that no reachable peer
    provides ends with ContentNotFoundError after it. ``attempts`` and ``backoff_seconds`` govern the
    retries of refused connections (waits of backoff, 2 x backoff, ...).
    """

    def __init__(
        self,
        address: str = DEFAULT_ADDRESS,
        *,
        timeout: float = 60.0,
        attempts: int = 3,
        backoff_seconds: float = 0.5,
    ) -> None:
        if timeout <= 0 or attempts < 1 or backoff_seconds < 0:
            raise ConfigurationError(
                f"IPFS store needs timeout > 0, attempts >= 1, backoff >= 0; got {timeout}, "
                f"{attempts}, {backoff_seconds}"
            )
        self._address = address
        self._timeout = timeout
        self._attempts = attempts
        self._retry_policy = RetryPolicy(attempts, first_delay_seconds=backoff_seconds, backoff_factor=2.0)
        try:
            self._client = ipfshttpclient.Client(address, timeout=timeout + _CLIENT_TIMEOUT_MARGIN_SECONDS)
        except ipfs_exceptions.Error as error:
            raise ConfigurationError(
                f"{address!r} is not an IPFS API multiaddr such as {DEFAULT_ADDRESS!r}: {error}"
            ) from error

    def put(self, data: bytes) -> str:
        """Add and pin ``data`` on the node; return its CID, checked against :func:`content_id.compute`."""
        expected = content_id.compute(data)
        response = self._call(
            "add",
            lambda: self._client.add(
                io.BytesIO(data),  # a fresh stream for each attempt
                cid_version=1,
                raw_leaves=True,
                chunker=_CHUNKER,
                pin=True,
                opts={"timeout": self._node_timeout()},
            ),
        )
        returned = _canonical_from_node(_field(response, "Hash"))
        if returned != expected:
            raise ContentStoreError(
                f"the IPFS node at {self._address} named {len(data)} bytes {returned}, but layerfed's CID "
                f"for them is {expected}: the node builds its DAG differently (chunker or layout "
                f"settings), which would break the rule that the same bytes get the same CID everywhere"
            )
        return expected

    def get(self, cid: str) -> bytes:
        """Fetch the bytes named by ``cid`` (from the node or, through it, from its peers) and verify them."""
        name = _canonical_from_caller(cid)
        data = self._call(
            f"cat {cid}", lambda: self._client.cat(name, opts={"timeout": self._node_timeout()})
        )
        if not isinstance(data, bytes):
            raise ContentStoreError(f"the IPFS node at {self._address} answered cat with {type(data)}")
        content_id.verify(name, data)
        return data

    def pin(self, cid: str) -> None:
        """Pin ``cid`` recursively on the node (fetching it from peers if it must)."""
        name = _canonical_from_caller(cid)
        self._call(f"pin {cid}", lambda: self._client.pin.add(name, opts={"timeout": self._node_timeout()}))

    def has(self, cid: str) -> bool:
        """Tell whether the node pins ``cid``.

        Pinned content is complete and kept; unpinned blocks are a cache the node may drop at any time,
        and no RPC call common to kubo and js-ipfs tells whether a whole DAG is local without fetching it.
        """
        try:
            name = _canonical_from_caller(cid)
            self._call(f"pin ls {cid}", lambda: self._client.pin.ls(name, type="recursive"))
        except ContentNotFoundError:
            return False
        return True

    def unpin(self, cid: str) -> None:
        """Remove this node's recursive pin of ``cid``; content that is not pinned is left as it is."""
        name = _canonical_from_caller(cid)
        try:
            self._call(f"pin rm {cid}", lambda: self._client.pin.rm(name))
        except ContentNotFoundError:  # "not pinned": nothing to do
            return

    def garbage_collect(self) -> list[str]:
        """Run the node's repository garbage collection; return the CIDs of the blocks it removed.

        The agent does not call this on an IPFS node (the node collects on its own schedule, see
        agent.engine.round_engine.EngineOptions); it is here for an operator's explicit collection.
        """
        # A collection walks the whole repository: on a large one it outlasts any per-call timeout, and it
        # runs off the critical path, so it gets ten times the budget of a call, on the node's side too,
        # so that a collection stuck on the node (js-ipfs waiting for a block it lost) still ends.
        budget = 10 * self._timeout
        try:
            removed = self._call(
                "repo gc",
                lambda: self._client.repo.gc(
                    quiet=False,
                    timeout=budget + _CLIENT_TIMEOUT_MARGIN_SECONDS,
                    opts={"timeout": f"{budget}s"},
                ),
            )
        except ContentNotFoundError as error:  # the node's "request timed out"
            raise ContentStoreError(
                f"the IPFS node at {self._address} did not finish repo gc within {budget} s: {error}"
            ) from error
        names = [str(entry.get("Key", {}).get("/", "")) for entry in removed or () if isinstance(entry, dict)]
        return [name for name in names if name]

    def stored_bytes(self) -> int:
        """The node's repository size (``repo stat``): this device's share of the network's content."""
        statistics = self._call("repo stat", lambda: self._client.repo.stat())
        try:
            return int(statistics["RepoSize"])
        except (KeyError, TypeError, ValueError) as error:
            raise ContentStoreError(
                f"the IPFS node answered repo stat without a size: {statistics!r}"
            ) from error

    def _node_timeout(self) -> str:
        return f"{self._timeout}s"

    def _call(self, action: str, request: Callable[[], Any]) -> Any:
        """Run one RPC call, retrying refused connections, and translate every ipfshttpclient error."""
        try:
            return self._retry_policy.call(request, retry_on=_TRANSIENT_ERRORS)
        except _TRANSIENT_ERRORS as error:
            raise ContentStoreError(
                f"the IPFS node at {self._address} is unreachable ({action}, {self._attempts} attempts): "
                f"{error}"
            ) from error
        except ipfs_exceptions.TimeoutError as error:
            raise ContentStoreError(
                f"the IPFS node at {self._address} did not answer {action} within "
                f"{self._timeout + _CLIENT_TIMEOUT_MARGIN_SECONDS} s"
            ) from error
        except ipfs_exceptions.ErrorResponse as error:
            if any(message in str(error).lower() for message in _NOT_FOUND_MESSAGES):
                raise ContentNotFoundError(f"{action}: {error}") from error
            raise ContentStoreError(
                f"{action} failed on the IPFS node at {self._address}: {error}"
            ) from error
        except ipfs_exceptions.Error as error:
            raise ContentStoreError(
                f"{action} failed on the IPFS node at {self._address}: {error}"
            ) from error


def _field(response: Any, key: str) -> str:
    try:
        return str(response[key])
    except (KeyError, TypeError) as error:
        raise ContentStoreError(f"the IPFS node answered without {key!r}: {response!r}") from error


def _canonical_from_node(cid: str) -> str:
    try:
        return content_id.canonical(cid)
    except ValueError as error:
        raise ContentStoreError(f"the IPFS node answered with a malformed CID {cid!r}") from error


def _canonical_from_caller(cid: str) -> str:
    try:
        return content_id.canonical(cid)
    except ValueError as error:
        raise ContentNotFoundError(f"no content {cid!r}: not a CID") from error
