"""Content identifiers: the CID an IPFS node gives some bytes, computed in pure Python, without a node.

Every store of layerfed (the local directory and the IPFS node) must name the same bytes with the same CID,
so a peer can check what it fetched against the CID a device recorded on chain, whichever store it used.
The reference is ``ipfs add --cid-version=1 --raw-leaves=true`` with the default importer settings:

* the bytes are cut into chunks of 262,144 bytes (chunker ``size-262144``);
* each chunk is a ``raw`` block; a payload of one chunk (the empty payload included) is named by that block
  alone: CIDv1, codec ``raw``, sha2-256, base32 (``bafkrei...``);
* several chunks are linked by a balanced UnixFS tree of ``dag-pb`` nodes holding at most 174 links each,
  every leaf at the same depth, filled left to right (CIDv1, codec ``dag-pb``: ``bafybei...``).

A tree node is the dag-pb protobuf ``PBNode {repeated PBLink Links = 2; optional bytes Data = 1}``, written
links first and then data, as go-ipfs and js-ipfs both do; each ``PBLink {Hash = 1; Name = 2; Tsize = 3}``
carries the child's binary CID, an empty name and the child's cumulative size (block bytes of its whole
subtree). ``Data`` is the UnixFS message ``{Type = 1: File (2); filesize = 3; repeated blocksizes = 4}``
(no inline data), where each block size is the number of file bytes below that child.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from multiformats import CID, multihash

from agent.errors import ContentMismatchError

__all__ = ["CHUNK_SIZE", "MAX_LINKS_PER_NODE", "canonical", "compute", "matches", "verify"]

CHUNK_SIZE = 262_144
"""Bytes per leaf: the default chunker of go-ipfs, kubo and js-ipfs (``size-262144``)."""

MAX_LINKS_PER_NODE = 174
"""Children per tree node in the balanced layout of go-ipfs, kubo and js-ipfs."""

_UNIXFS_FILE_TYPE = 2
_WIRE_VARINT = 0
_WIRE_LENGTH_DELIMITED = 2


@dataclass(frozen=True)
class _Node:
    """One block of the tree, as its parent links to it."""

    cid: CID
    cumulative_size: int  # bytes of this block and every block below it: the link's Tsize
    file_size: int  # payload bytes below this block: the parent's UnixFS block size


def compute(data: bytes) -> str:
    """Return the CID (CIDv1, base32) that ``ipfs add --cid-version=1 --raw-leaves`` gives ``data``."""
    view = memoryview(data)
    # max(..., 1): the empty payload is one empty chunk, as in the importers.
    level = [_leaf(view[start : start + CHUNK_SIZE]) for start in range(0, max(len(view), 1), CHUNK_SIZE)]
    while len(level) > 1:
        level = [
            _parent(level[start : start + MAX_LINKS_PER_NODE])
            for start in range(0, len(level), MAX_LINKS_PER_NODE)
        ]
    return str(level[0].cid)


def canonical(cid: str) -> str:
    """Return ``cid`` as CIDv1 in base32, the one spelling layerfed stores and compares.

    Raises ``ValueError`` when ``cid`` is not a CID, so that it can never be used as a file name.
    """
    try:
        parsed = CID.decode(cid)
    except (ValueError, KeyError) as error:
        raise ValueError(f"{cid!r} is not a valid CID") from error
    return str(parsed.set(base="base32", version=1))


def matches(cid: str, data: bytes) -> bool:
    """Tell whether ``data`` is the content named by ``cid`` (a malformed CID matches nothing)."""
    try:
        return canonical(cid) == compute(data)
    except ValueError:
        return False


def verify(cid: str, data: bytes) -> None:
    """Raise ContentMismatchError unless ``data`` is the content named by ``cid``."""
    if not matches(cid, data):
        raise ContentMismatchError(
            f"{len(data)} bytes hash to {compute(data)}, not to the requested CID {cid!r}"
        )


def _leaf(chunk: memoryview) -> _Node:
    cid = CID("base32", 1, "raw", _sha2_256(chunk))
    return _Node(cid=cid, cumulative_size=len(chunk), file_size=len(chunk))


def _parent(children: list[_Node]) -> _Node:
    file_size = sum(child.file_size for child in children)
    unixfs_data = _varint_field(1, _UNIXFS_FILE_TYPE) + _varint_field(3, file_size)
    unixfs_data += b"".join(_varint_field(4, child.file_size) for child in children)
    links = b"".join(_bytes_field(2, _link(child)) for child in children)
    block = links + _bytes_field(1, unixfs_data)
    cid = CID("base32", 1, "dag-pb", _sha2_256(block))
    cumulative_size = len(block) + sum(child.cumulative_size for child in children)
    return _Node(cid=cid, cumulative_size=cumulative_size, file_size=file_size)


def _link(child: _Node) -> bytes:
    return _bytes_field(1, bytes(child.cid)) + _bytes_field(2, b"") + _varint_field(3, child.cumulative_size)


def _sha2_256(block: bytes | memoryview) -> bytes:
    digest: bytes = multihash.wrap(hashlib.sha256(block).digest(), "sha2-256")
    return digest


def _varint(value: int) -> bytes:
    encoded = bytearray()
    while value >= 0x80:
        encoded.append((value & 0x7F) | 0x80)
        value >>= 7
    encoded.append(value)
    return bytes(encoded)


def _varint_field(number: int, value: int) -> bytes:
    return _varint(number << 3 | _WIRE_VARINT) + _varint(value)


def _bytes_field(number: int, value: bytes) -> bytes:
    return _varint(number << 3 | _WIRE_LENGTH_DELIMITED) + _varint(len(value)) + value
