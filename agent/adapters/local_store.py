"""The embedded content store: a content-addressed directory, used when no IPFS node is configured.

Layout under ``root``::

    blocks/<cid>   the bytes named by <cid> (CIDv1 base32, exactly as an IPFS node would name them)
    pins/<cid>     an empty marker file: <cid> is pinned, and garbage_collect keeps it

Several agent processes on one machine may share one root. A writer writes a temporary file inside
``blocks/`` (its name starts with a dot, so it is never taken for content), flushes it to disk, and renames
it onto its final name with ``os.replace``, which is atomic on POSIX: a reader sees no file or the whole
file, never part of one. Two writers of one CID write the same bytes, so it does not matter whose rename
lands last. Every read is checked against its CID, so a file damaged or edited on disk raises
ContentMismatchError instead of handing corrupt weights to the merge. The same holds for threads of one
process sharing one store object (a merge fetches in parallel): it keeps no state but the directory.
"""

from __future__ import annotations

import os
import time
import uuid
from pathlib import Path

from agent import content_id
from agent.atomic_file import write_atomically
from agent.errors import ContentNotFoundError, ContentStoreError

__all__ = ["LocalContentStore"]

_TEMPORARY_PREFIX = "."  # every temporary file is hidden (agent.atomic_file); a CID never starts with "."
_STALE_TEMPORARY_SECONDS = 3600.0  # a writer that left its temporary file this long ago has crashed


class LocalContentStore:
    """A :class:`agent.ports.content_store.ContentStore` kept in a directory on this machine."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self._root = Path(root)
        self._blocks = self._root / "blocks"
        self._pins = self._root / "pins"
        try:
            self._blocks.mkdir(parents=True, exist_ok=True)
            self._pins.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise ContentStoreError(f"cannot create the content store in {self._root}: {error}") from error

    def put(self, data: bytes) -> str:
        """Store and pin ``data``; return its CID.

        The pin marker is written before the content, so a concurrent garbage_collect never sees the
        content unpinned. The content is always rewritten, which also repairs a damaged copy.
        """
        cid = content_id.compute(data)
        try:
            (self._pins / cid).touch(exist_ok=True)
            self._write_atomically(self._blocks / cid, data)
        except OSError as error:
            raise ContentStoreError(f"cannot store {cid} in {self._root}: {error}") from error
        return cid

    def get(self, cid: str) -> bytes:
        """Return the bytes named by ``cid``, verified against it."""
        name = self._file_name(cid)
        try:
            data = (self._blocks / name).read_bytes()
        except FileNotFoundError as error:
            raise ContentNotFoundError(f"no content {cid} in {self._root}") from error
        except OSError as error:
            raise ContentStoreError(f"cannot read {cid} from {self._root}: {error}") from error
        content_id.verify(name, data)
        return data

    def pin(self, cid: str) -> None:
        """Mark ``cid`` pinned, then check that its content is here.

        Marker first, check second: a garbage_collect running at the same time either sees the marker or
        had already moved the content away, in which case this check fails. A marker left by a failed pin
        names no content and is harmless.
        """
        name = self._file_name(cid)
        try:
            (self._pins / name).touch(exist_ok=True)
        except OSError as error:
            raise ContentStoreError(f"cannot pin {cid} in {self._root}: {error}") from error
        if not (self._blocks / name).is_file():
            raise ContentNotFoundError(f"cannot pin {cid}: no such content in {self._root}")

    def unpin(self, cid: str) -> None:
        """Let garbage_collect remove ``cid``'s content. Unpinning what is not pinned does nothing."""
        try:
            (self._pins / self._file_name(cid)).unlink(missing_ok=True)
        except OSError as error:
            raise ContentStoreError(f"cannot unpin {cid} in {self._root}: {error}") from error

    def has(self, cid: str) -> bool:
        """Tell whether the content named by ``cid`` is in the directory (pinned or not)."""
        try:
            return (self._blocks / self._file_name(cid)).is_file()
        except ContentNotFoundError:
            return False

    def stored_bytes(self) -> int:
        """The size of every file of content in the directory."""
        try:
            return sum(path.stat().st_size for path in self._blocks.iterdir())
        except OSError as error:
            raise ContentStoreError(f"cannot measure the content store in {self._root}: {error}") from error

    def pinned(self) -> frozenset[str]:
        """Return the CIDs pinned in this store."""
        try:
            return frozenset(path.name for path in self._pins.iterdir())
        except OSError as error:
            raise ContentStoreError(f"cannot list the pins in {self._root}: {error}") from error

    def garbage_collect(self) -> list[str]:
        """Remove unpinned content and the temporary files of crashed writers; return the CIDs removed.

        Each unpinned file is first renamed aside, then its pin marker is checked again: content that a
        concurrent pin marked in the meantime is put back instead of deleted.
        """
        removed: list[str] = []
        try:
            for path in self._blocks.iterdir():
                if path.name.startswith(_TEMPORARY_PREFIX):
                    self._remove_if_stale(path)
                elif self._collect_if_unpinned(path):
                    removed.append(path.name)
        except OSError as error:
            raise ContentStoreError(f"garbage collection in {self._root} failed: {error}") from error
        return removed

    def _collect_if_unpinned(self, path: Path) -> bool:
        if (self._pins / path.name).exists():
            return False
        aside = path.with_name(f"{_TEMPORARY_PREFIX}collect-{uuid.uuid4().hex}")
        try:
            os.replace(path, aside)
        except FileNotFoundError:  # another collector got there first
            return False
        if (self._pins / path.name).exists():
            os.replace(aside, path)
            return False
        aside.unlink()
        return True

    def _file_name(self, cid: str) -> str:
        """Return the canonical spelling of ``cid``; a malformed CID (say ``../x``) names no content."""
        try:
            return content_id.canonical(cid)
        except ValueError as error:
            raise ContentNotFoundError(f"no content {cid!r}: not a CID") from error

    @staticmethod
    def _write_atomically(target: Path, data: bytes) -> None:
        write_atomically(target, data, mode=0o644)  # agents of other users may read it

    @staticmethod
    def _remove_if_stale(path: Path) -> None:
        try:
            if time.time() - path.stat().st_mtime > _STALE_TEMPORARY_SECONDS:
                path.unlink()
        except FileNotFoundError:
            pass
