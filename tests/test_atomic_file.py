"""The one atomic-write helper: whole files only, the requested mode, no temporary left behind."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from agent.atomic_file import write_atomically


def test_a_file_is_replaced_whole_with_the_requested_mode(tmp_path: Path) -> None:
    target = tmp_path / "checkpoint.json"
    write_atomically(target, b"old")
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    write_atomically(target, b"new", mode=0o644)
    assert target.read_bytes() == b"new" and stat.S_IMODE(target.stat().st_mode) == 0o644
    assert sorted(path.name for path in tmp_path.iterdir()) == ["checkpoint.json"]


def test_without_replace_an_existing_file_wins(tmp_path: Path) -> None:
    key = tmp_path / "key"
    write_atomically(key, b"first", replace=False)
    with pytest.raises(FileExistsError):
        write_atomically(key, b"second", replace=False)
    assert key.read_bytes() == b"first"
    assert sorted(path.name for path in tmp_path.iterdir()) == ["key"]


def test_a_failed_write_leaves_the_old_file_and_no_temporary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "status.json"
    write_atomically(target, b"old")

    def power_cut(_descriptor: int) -> None:
        raise OSError("power cut")

    monkeypatch.setattr(os, "fsync", power_cut)
    with pytest.raises(OSError, match="power cut"):
        write_atomically(target, b"new")
    assert target.read_bytes() == b"old"
    assert sorted(path.name for path in tmp_path.iterdir()) == ["status.json"]
