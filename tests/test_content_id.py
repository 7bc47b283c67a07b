"""agent.content_id: known CIDs, and the same CIDs as a real IPFS node for every shape of DAG."""

from __future__ import annotations

import io
import random

import ipfshttpclient
import pytest

from agent import content_id
from agent.errors import ContentMismatchError

MEBIBYTE = 1024 * 1024

# Taken from `ipfs add --cid-version=1 --raw-leaves` on js-ipfs 0.66.1, default chunker and layout.
KNOWN_CIDS = {
    b"": "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku",
    b"hello": "bafkreibm6jg3ux5qumhcn2b3flc3tyu6dmlb4xa7u5bf44yegnrjhc4yeq",
}
# Zero-filled payloads of these sizes, from the same node.
KNOWN_ZERO_PAYLOAD_CIDS = {
    262_145: "bafybeigllfqgfpqydppr6cmv56g7ax4wyhruzswvcefv6j5kj77nzttfki",  # two leaves
    MEBIBYTE + 1: "bafybeihhq4imxfkfucfxjbnqvrvzdknmfbzvxaivz7jzdnumfkabdbq3yq",  # five leaves
    174 * 262_144 + 1: "bafybeihqwzd3o6q6v3pmwhzjy22vokhr767burokmqemg63hptx2nqd7ym",  # two tree levels
}

# Each size hits one shape: empty, tiny, exactly one chunk, one byte over, > one IPFS block (1 MiB),
# a model-sized file, exactly one full tree node, and > 174 chunks (a second tree level).
NODE_SIZES = [0, 1, 262_144, 262_145, MEBIBYTE + 1, 5 * MEBIBYTE, 174 * 262_144, 174 * 262_144 + 5]


@pytest.mark.parametrize(("data", "expected"), list(KNOWN_CIDS.items()), ids=["empty", "hello"])
def test_compute_gives_the_known_cid(data: bytes, expected: str) -> None:
    assert content_id.compute(data) == expected


@pytest.mark.parametrize(("size", "expected"), list(KNOWN_ZERO_PAYLOAD_CIDS.items()))
def test_compute_gives_the_known_cid_of_a_multi_chunk_payload(size: int, expected: str) -> None:
    assert content_id.compute(bytes(size)) == expected


def test_one_chunk_is_a_raw_block_and_more_chunks_a_dag_pb_tree() -> None:
    assert content_id.compute(bytes(content_id.CHUNK_SIZE)).startswith("bafkrei")
    assert content_id.compute(bytes(content_id.CHUNK_SIZE + 1)).startswith("bafybei")


def test_canonical_spells_every_form_of_a_cid_as_cidv1_base32() -> None:
    base58_cidv1 = (
        "zb2rhmy65F3REf8SZp7De11gxtECBGgUKaLdiDj7MCGCHxbDW"  # the empty payload, as js-ipfs answers
    )
    assert content_id.canonical(base58_cidv1) == KNOWN_CIDS[b""]
    cidv0 = "QmdfTbBqBPQ7VNxZEYEj14VmRuZBkqFbiwReogJgS1zR1n"
    assert content_id.canonical(cidv0).startswith("bafybei")


@pytest.mark.parametrize("malformed", ["", "../etc/passwd", "bafkrei", "not a cid"])
def test_canonical_rejects_what_is_not_a_cid(malformed: str) -> None:
    with pytest.raises(ValueError, match="not a valid CID"):
        content_id.canonical(malformed)
    assert not content_id.matches(malformed, b"")


def test_verify_accepts_the_content_and_rejects_any_other() -> None:
    content_id.verify(KNOWN_CIDS[b"hello"], b"hello")
    with pytest.raises(ContentMismatchError, match="not to the requested CID"):
        content_id.verify(KNOWN_CIDS[b"hello"], b"hellO")
    with pytest.raises(ContentMismatchError):
        content_id.verify("../etc/passwd", b"hello")


@pytest.mark.integration
@pytest.mark.filterwarnings("ignore:The 'strict' parameter:FutureWarning")  # ipfshttpclient on urllib3 2
@pytest.mark.parametrize("size", NODE_SIZES)
def test_compute_equals_the_node_cid(ipfs_address: str, size: int) -> None:
    data = random.Random(size).randbytes(size)
    client = ipfshttpclient.Client(
        ipfs_address
    )  # connect() refuses js-ipfs: see agent/adapters/ipfs_store.py
    added = client.add(io.BytesIO(data), cid_version=1, raw_leaves=True, only_hash=True)
    assert content_id.compute(data) == content_id.canonical(added["Hash"])
