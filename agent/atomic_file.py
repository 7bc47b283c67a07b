"""The one way layerfed writes a file that must never be seen half written.

Checkpoints, the training step, the status file, content in the local store and the device's key are all
written so that a reader, a crash or a power cut sees the old file or the new one, never part of one: the
bytes go to a temporary file in the same directory (same file system, so the rename is atomic), are
flushed and fsynced, then the file is renamed onto its name and the directory is fsynced so the rename
itself survives a power cut. The temporary file is removed if anything fails.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

__all__ = ["write_atomically"]


def write_atomically(path: Path, data: bytes, *, mode: int = 0o600, replace: bool = True) -> None:
    """Write ``data`` to ``path`` atomically and durably, with permission bits ``mode``.

    ``mode`` is applied before any byte is written (0600 by default: readable by this user only; 0644 for
    what other users may read). With ``replace=False`` an existing file is never replaced: the new one is
    linked to ``path`` only if nothing is there, else FileExistsError (two processes creating a key at
    once: the first wins). OSError propagates; callers translate it into their own error.
    """
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(descriptor, "wb") as handle:
            os.fchmod(handle.fileno(), mode)
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        if replace:
            os.replace(temporary, path)
        else:
            os.link(temporary, path)
        _sync_directory(path.parent)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)


def _sync_directory(directory: Path) -> None:
    """fsync a directory, so that a rename in it is on disk (a no-op where directories cannot be opened)."""
    try:
        descriptor = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
