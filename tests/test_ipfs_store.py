"""agent.adapters.ipfs_store against a real js-ipfs node (tests/services/ipfs_node.py)."""

from __future__ import annotations

import random
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import ipfshttpclient
import pytest

from agent import content_id
from agent.adapters import ipfs_store
from agent.adapters.ipfs_store import IpfsContentStore
from agent.adapters.local_store import LocalContentStore
from agent.errors import ConfigurationError, ContentMismatchError, ContentNotFoundError, ContentStoreError
from agent.ports.content_store import ContentStore
from tests.services.ipfs_node import IpfsNode

pytestmark = [
    pytest.mark.integration,
    # ipfshttpclient 0.7 passes urllib3 2 a parameter it deprecates; harmless, and not ours to fix.
    pytest.mark.filterwarnings("ignore:The 'strict' parameter:FutureWarning"),
]

MEBIBYTE = 1024 * 1024
SIZES = [0, 1, 262_144, 262_145, MEBIBYTE + 1, 5 * MEBIBYTE, 174 * 262_144 + 5]


def payload(size: int) -> bytes:
    return random.Random(f"ipfs store {size}").randbytes(size)


def test_is_a_content_store(ipfs_address: str) -> None:
    assert isinstance(IpfsContentStore(ipfs_address), ContentStore)


@pytest.mark.parametrize("size", SIZES)
def test_same_bytes_get_the_same_cid_as_in_the_local_store(
    ipfs_address: str, tmp_path: Path, size: int
) -> None:
    data = payload(size)
    assert IpfsContentStore(ipfs_address).put(data) == LocalContentStore(tmp_path).put(data)


def test_a_model_sized_payload_goes_through_end_to_end(ipfs_address: str) -> None:
    data = payload(5 * MEBIBYTE + 123)
    store = IpfsContentStore(ipfs_address)
    cid = store.put(data)
    assert store.has(cid)
    assert IpfsContentStore(ipfs_address).get(cid) == data


def test_bytes_that_do_not_match_the_cid_are_rejected(
    ipfs_address: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = IpfsContentStore(ipfs_address)
    cid = store.put(b"honest update")

    def tampered_cat(self: Any, cid: str, **options: Any) -> bytes:
        return b"poisoned update"

    monkeypatch.setattr(ipfshttpclient.Client, "cat", tampered_cat)
    with pytest.raises(ContentMismatchError):
        store.get(cid)


def test_a_node_that_chunks_differently_is_refused(
    ipfs_address: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ipfs_store, "_CHUNKER", "size-1000")
    with pytest.raises(ContentStoreError, match="builds its DAG differently"):
        IpfsContentStore(ipfs_address).put(payload(5000))


def test_absent_content_is_not_found_once_the_timeout_passes(ipfs_address: str) -> None:
    store = IpfsContentStore(ipfs_address, timeout=1)
    absent = content_id.compute(b"nobody ever stored this")
    with pytest.raises(ContentNotFoundError):
        store.get(absent)
    with pytest.raises(ContentNotFoundError):
        store.pin(absent)
    with pytest.raises(ContentNotFoundError):
        store.get("../not-a-cid")
    assert not store.has(absent)


def test_pin_of_stored_content_succeeds(ipfs_address: str) -> None:
    store = IpfsContentStore(ipfs_address)
    cid = store.put(b"pinned update")
    store.pin(cid)
    assert store.has(cid)


def test_a_stopped_node_gives_a_clear_error_and_a_restarted_one_works(ipfs_node: IpfsNode) -> None:
    if not ipfs_node.running:
        ipfs_node.start()
    store = IpfsContentStore(ipfs_node.address, attempts=2, backoff_seconds=0.05)
    cid = store.put(b"survives a restart")
    ipfs_node.stop()
    try:
        with pytest.raises(ContentStoreError, match="unreachable") as raised:
            store.get(cid)
        assert type(raised.value) is ContentStoreError  # not "not found": the node is down
        with pytest.raises(ContentStoreError, match="unreachable"):
            store.put(b"while down")
    finally:
        ipfs_node.start()
    assert store.get(cid) == b"survives a restart"


@pytest.mark.parametrize(
    "arguments",
    [{"address": "http://127.0.0.1:5001"}, {"timeout": 0}, {"attempts": 0}, {"backoff_seconds": -1}],
)
def test_bad_settings_are_configuration_errors(arguments: dict[str, Any]) -> None:
    with pytest.raises(ConfigurationError):
        IpfsContentStore(**arguments)


def test_unpinned_content_is_collected_and_the_repository_size_is_known(ipfs_address: str) -> None:
    store = IpfsContentStore(ipfs_address)
    kept, dropped = store.put(payload(300_000)), store.put(payload(300_001))  # no chunk in common
    before = store.stored_bytes()
    assert before > 600_000
    store.unpin(dropped)
    store.unpin(dropped)  # idempotent: no longer pinned is not an error
    store.garbage_collect()
    assert store.has(kept) and not store.has(dropped)
    assert store.stored_bytes() < before


def test_one_store_is_used_by_several_threads_at_once(ipfs_address: str) -> None:
    """What a merge's fetch threads do: one adapter, calls overlapping (each call has its own session)."""
    store = IpfsContentStore(ipfs_address)
    payloads = [payload(300_000 + index) for index in range(6)]  # two chunks each
    with ThreadPoolExecutor(4) as pool:
        cids = list(pool.map(store.put, payloads))
        fetched = list(pool.map(store.get, cids * 2))
    assert cids == [content_id.compute(data) for data in payloads]
    assert fetched == payloads * 2
