"""The Coordinator's committee draw, replayed off chain: who merges a round, from chain data alone.

When a round with more than ``committee_threshold`` submissions closes, the contract notes the closing block
(the anchor); ``drawCommittee`` (or the ``closeExpiredRound`` that fails a round nobody drew) draws
``committee_size`` of its submitters (``_drawCommittee`` in ``coordinator_contract/Coordinator.sol``):

* seed = keccak256(blockhash(seed block) ‖ round ‖ federation seed) (``abi.encodePacked``: 32, 32 and 8
  bytes), where the seed block is the anchor, or the latest block 256*m after it when the draw comes more
  than 256 blocks later (``blockhash`` forgets older blocks). Nobody knows the anchor's hash when sending
  the closing transaction, so nobody can re-roll the draw by choosing when to close;
* the j-th candidate position is keccak256(seed ‖ j) mod (number of submissions), j = 0, 1, ..., and a
  position drawn already is skipped, until ``committee_size`` positions are chosen;
* the committee is the submitters at those positions of the round's submissions, in draw order.

Both steps are mirrored here, so that a peer knows whether it merges before the draw is stored, and anyone
can check the committee the chain names
(:meth:`agent.adapters.ethereum_ledger.EthereumLedger.replay_committee_draw`); tests keep the two equal.
"""

from __future__ import annotations

from collections.abc import Sequence

from eth_utils.crypto import keccak

__all__ = ["committee_seed", "draw_committee", "draw_positions", "seed_block"]

BLOCKHASH_WINDOW = 256  # blocks the EVM's blockhash remembers


def seed_block(anchor_block: int, drawing_block: int) -> int:
    """The block whose hash seeds a draw made in ``drawing_block`` for a round closed in ``anchor_block``."""
    if drawing_block <= anchor_block:
        raise ValueError("a committee is drawn in a block after the one that closed the round")
    return anchor_block + (drawing_block - anchor_block - 1) // BLOCKHASH_WINDOW * BLOCKHASH_WINDOW


def committee_seed(block_hash: bytes, round_number: int, federation_seed: int) -> bytes:
    """The seed the contract derives from the seed block's hash."""
    if len(block_hash) != 32:
        raise ValueError("a block hash is 32 bytes")
    return keccak(block_hash + round_number.to_bytes(32, "big") + federation_seed.to_bytes(8, "big"))


def draw_positions(seed: bytes, count: int, size: int) -> tuple[int, ...]:
    """``size`` distinct positions among ``count`` submissions (``size < count``), in draw order."""
    if not 0 < size < count:
        raise ValueError(f"a committee of {size} is drawn from more submissions than that, not {count}")
    chosen: list[int] = []
    counter = 0
    while len(chosen) < size:
        candidate = int.from_bytes(keccak(seed + counter.to_bytes(32, "big")), "big") % count
        if candidate not in chosen:
            chosen.append(candidate)
        counter += 1
    return tuple(chosen)


def draw_committee(seed: bytes, submitters: Sequence[str], size: int) -> tuple[str, ...]:
    """The committee: the submitters (in the chain's arrival order) at the drawn positions."""
    return tuple(submitters[position] for position in draw_positions(seed, len(submitters), size))
