"""The content-store port: where a device puts its model update and where peers fetch theirs.

A device records only the CID of its update on chain and announces only the CID over the bus, so the CID
is the one thing that ties an update to its author. The port therefore promises that every store names the
same bytes with the same CID (the one :func:`agent.content_id.compute` gives, which is what
``ipfs add --cid-version=1 --raw-leaves`` gives), and that :meth:`ContentStore.get` never returns bytes
that do not hash to the requested CID, whoever served them.

Errors: every method raises :class:`agent.errors.ContentStoreError` (or a subclass: transient, so callers
may retry) and nothing else but :class:`agent.errors.ContentMismatchError` when bytes do not match their
CID (permanent: not a ContentStoreError, so nothing retries it);
:class:`agent.errors.ContentNotFoundError` when the content is absent (or, on a network store, could not
be found in time).

Implementations: ``agent.adapters.local_store.LocalContentStore`` (a directory, the embedded default) and
``agent.adapters.ipfs_store.IpfsContentStore`` (an IPFS node over its HTTP RPC API).
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable


@runtime_checkable
class ContentStore(Protocol):
    """A content-addressed store of byte strings, named by CIDv1 strings (base32)."""

    def put(self, data: bytes) -> str:
        """Store ``data``, keep it (pinned), and return its CID. Storing the same bytes again is harmless."""
        ...

    def get(self, cid: str) -> bytes:
        """Return the bytes named by ``cid``, checked against it (ContentMismatchError if they differ)."""
        ...

    def pin(self, cid: str) -> None:
        """Keep the content named by ``cid`` through garbage collection; ContentNotFoundError if absent."""
        ...

    def has(self, cid: str) -> bool:
        """Tell whether this store keeps the content itself, without asking any other peer."""
        ...

    def unpin(self, cid: str) -> None:
        """This device no longer needs ``cid``: garbage collection may remove it. Idempotent."""
        ...

    def garbage_collect(self) -> list[str]:
        """Remove content nothing pins (and what crashed writers left); return the CIDs removed."""
        ...

    def stored_bytes(self) -> int:
        """How many bytes this store holds on this device (for ``layerfed status``)."""
        ...
