"""agent.adapters.local_store: round trips, checked reads, pins, several processes and threads at once."""

from __future__ import annotations

import multiprocessing
import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from agent import content_id
from agent.adapters.local_store import LocalContentStore
from agent.errors import ContentMismatchError, ContentNotFoundError
from agent.ports.content_store import ContentStore

SHARED_PAYLOAD = bytes(range(256)) * 8192  # 2 MiB: eight chunks, so a partial file would be noticed
WRITER_PROCESSES = 3
WRITES_PER_PROCESS = 20


def test_is_a_content_store(tmp_path: Path) -> None:
    assert isinstance(LocalContentStore(tmp_path), ContentStore)


@pytest.mark.parametrize("size", [0, 5, 262_145, 3 * 1024 * 1024])
def test_put_then_get_returns_the_bytes_under_their_ipfs_cid(tmp_path: Path, size: int) -> None:
    store = LocalContentStore(tmp_path)
    data = os.urandom(size)
    cid = store.put(data)
    assert cid == content_id.compute(data)
    assert store.get(cid) == data
    assert store.has(cid)
    assert (tmp_path / "blocks" / cid).read_bytes() == data


def test_get_accepts_another_spelling_of_the_cid(tmp_path: Path) -> None:
    store = LocalContentStore(tmp_path)
    store.put(b"")
    assert store.get("zb2rhmy65F3REf8SZp7De11gxtECBGgUKaLdiDj7MCGCHxbDW") == b""


def test_a_tampered_file_is_detected_on_read(tmp_path: Path) -> None:
    store = LocalContentStore(tmp_path)
    cid = store.put(b"weights of block 1")
    (tmp_path / "blocks" / cid).write_bytes(b"weights of block 2")
    with pytest.raises(ContentMismatchError):
        store.get(cid)
    store.put(b"weights of block 1")  # putting the bytes again repairs the copy
    assert store.get(cid) == b"weights of block 1"


@pytest.mark.parametrize("cid", [content_id.compute(b"never stored"), "../../etc/passwd", "junk"])
def test_absent_or_malformed_cids_are_not_found(tmp_path: Path, cid: str) -> None:
    store = LocalContentStore(tmp_path)
    with pytest.raises(ContentNotFoundError):
        store.get(cid)
    with pytest.raises(ContentNotFoundError):
        store.pin(cid)
    assert not store.has(cid)


def test_put_pins_and_garbage_collection_removes_only_unpinned_content(tmp_path: Path) -> None:
    store = LocalContentStore(tmp_path)
    kept = store.put(b"kept")
    dropped = store.put(b"dropped")
    assert store.pinned() == {kept, dropped}
    store.unpin(dropped)
    assert store.garbage_collect() == [dropped]
    assert store.has(kept)
    assert not store.has(dropped)


def test_pin_keeps_content_through_garbage_collection(tmp_path: Path) -> None:
    store = LocalContentStore(tmp_path)
    cid = store.put(b"update")
    store.unpin(cid)
    store.pin(cid)
    assert store.garbage_collect() == []
    assert store.get(cid) == b"update"


def test_garbage_collection_removes_temporary_files_of_crashed_writers(tmp_path: Path) -> None:
    store = LocalContentStore(tmp_path)
    stale = tmp_path / "blocks" / ".tmp-crashed"
    fresh = tmp_path / "blocks" / ".tmp-writing"
    stale.write_bytes(b"partial")
    fresh.write_bytes(b"partial")
    two_hours_ago = time.time() - 7200
    os.utime(stale, (two_hours_ago, two_hours_ago))
    store.garbage_collect()
    assert not stale.exists()
    assert fresh.exists()


def _write_repeatedly(root: str, index: int) -> list[str]:
    store = LocalContentStore(root)
    own = f"payload of process {index}".encode()
    return [cid for _ in range(WRITES_PER_PROCESS) for cid in (store.put(SHARED_PAYLOAD), store.put(own))]


def _read_repeatedly(root: str, cid: str) -> int:
    store = LocalContentStore(root)
    for _ in range(WRITES_PER_PROCESS * 2):
        store.get(cid)  # raises ContentMismatchError on a partial file
    return WRITES_PER_PROCESS * 2


def test_several_processes_write_and_read_one_store(tmp_path: Path) -> None:
    store = LocalContentStore(tmp_path)
    shared = store.put(SHARED_PAYLOAD)
    context = multiprocessing.get_context("spawn")  # fork is unsafe once torch has started threads
    with context.Pool(WRITER_PROCESSES + 1) as pool:
        writers = [
            pool.apply_async(_write_repeatedly, (str(tmp_path), index)) for index in range(WRITER_PROCESSES)
        ]
        reader = pool.apply_async(_read_repeatedly, (str(tmp_path), shared))
        written = [writer.get(timeout=120) for writer in writers]
        assert reader.get(timeout=120) == WRITES_PER_PROCESS * 2
    assert all(
        set(cids) == {shared, content_id.compute(f"payload of process {index}".encode())}
        for index, cids in enumerate(written)
    )
    assert store.get(shared) == SHARED_PAYLOAD
    assert sorted(path.name for path in (tmp_path / "blocks").iterdir() if path.name.startswith(".")) == []


def test_one_store_is_used_by_several_threads_at_once(tmp_path: Path) -> None:
    """What a merge's fetch threads do (agent.engine.round_engine): one store object, calls overlapping."""
    store = LocalContentStore(tmp_path)
    payloads = [SHARED_PAYLOAD, *(f"update {index}".encode() * 10_000 for index in range(7))] * 3
    with ThreadPoolExecutor(8) as pool:
        cids = list(pool.map(store.put, payloads))
        fetched = list(pool.map(store.get, cids))
    assert cids == [content_id.compute(payload) for payload in payloads]
    assert fetched == payloads
