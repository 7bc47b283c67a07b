"""Who takes part in a round when only a fraction of the members may: a pure, checkable sampler.

Partial participation (the paper's 25 of 100 clients per round) must be decided so that every peer can
compute, and check, who was due: otherwise a device could appoint itself every round. The sampler is a
pure function of the member list, a public random value and the round number, built only from SHA-256,
so a contract or any other implementation can reproduce it exactly:

    key(member) = SHA-256(randomness || round as 32-byte big-endian || lower-cased member as UTF-8)

and the ``count`` members with the smallest keys (ties by member) are due. In an agent, ``randomness``
is the chain's: e.g. the hash of the block that opened the round (``blockhash``), or the ``prevrandao``
the coordinator recorded when it opened the round, which no member knows before the round opens; the
members are the registered, unsuspended addresses. The benchmark's simulation runs the same function
over its clients' labels with randomness derived from the federation seed.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from agent.errors import ConfigurationError

RANDOMNESS_BYTES = 32


def participant_count(members: int, fraction: float) -> int:
    """``ceil(fraction * members)`` computed without float rounding surprises, at least 1.

    The fraction is taken to six decimals (``0.25`` -> 250000 / 10**6) so that ``0.25 * 100`` is 25, never
    26 because of a last binary digit; a contract would carry the same integer parts-per-million.
    """
    if members < 1:
        raise ConfigurationError(f"a round needs at least one member, not {members}")
    if not 0 < fraction <= 1:
        raise ConfigurationError(f"participation fraction must be in (0, 1], not {fraction}")
    parts_per_million = round(fraction * 10**6)
    return max(1, min(members, -(-members * parts_per_million // 10**6)))  # integer ceiling


def participant_key(randomness: bytes, round_number: int, member: str) -> bytes:
    """The member's draw for this round: smaller keys are due first."""
    return hashlib.sha256(
        randomness + round_number.to_bytes(32, "big") + member.lower().encode("utf-8")
    ).digest()


def sample_participants(
    members: Sequence[str], fraction: float, randomness: bytes, round_number: int
) -> tuple[str, ...]:
    """The members due in ``round_number``, in sorted order: :func:`participant_count` of them, those with
    the smallest :func:`participant_key`. Members are compared case-insensitively (addresses)."""
    if len(randomness) != RANDOMNESS_BYTES:
        raise ConfigurationError(f"randomness must be {RANDOMNESS_BYTES} bytes, not {len(randomness)}")
    if round_number < 0:
        raise ConfigurationError(f"round number must not be negative, not {round_number}")
    unique = sorted({member.lower(): member for member in members}.values(), key=str.lower)
    if len(unique) != len(members):
        raise ConfigurationError("members repeat (compared case-insensitively)")
    count = participant_count(len(unique), fraction)
    ranked = sorted(
        unique, key=lambda member: (participant_key(randomness, round_number, member), member.lower())
    )
    return tuple(sorted(ranked[:count], key=str.lower))
