"""The participant sampler: a pure function every peer (and a contract) can recompute from public data."""

from __future__ import annotations

import hashlib
from collections import Counter

import pytest

from agent.errors import ConfigurationError
from agent.learning.participation import participant_count, participant_key, sample_participants
from agent.learning.simulation import choose_participants

RANDOMNESS = hashlib.sha256(b"block 1234").digest()
MEMBERS = [f"0x{index:040x}" for index in range(100)]


def test_the_count_is_the_ceiling_of_the_fraction_and_never_zero() -> None:
    assert participant_count(100, 0.25) == 25
    assert participant_count(10, 0.3) == 3  # 0.3 * 10 is 3.0000000000000004 in binary floating point
    assert participant_count(10, 0.25) == 3
    assert participant_count(7, 0.01) == 1
    assert participant_count(7, 1.0) == 7
    for bad in (0.0, 1.5, -0.1):
        with pytest.raises(ConfigurationError):
            participant_count(10, bad)


def test_the_sample_is_the_smallest_keys_written_out_by_hand() -> None:
    chosen = sample_participants(MEMBERS, 0.25, RANDOMNESS, 7)
    by_key = sorted(
        MEMBERS,
        key=lambda member: hashlib.sha256(RANDOMNESS + (7).to_bytes(32, "big") + member.encode()).digest(),
    )
    assert chosen == tuple(sorted(by_key[:25]))
    assert (
        participant_key(RANDOMNESS, 7, MEMBERS[0])
        == hashlib.sha256(RANDOMNESS + (7).to_bytes(32, "big") + MEMBERS[0].encode()).digest()
    )


def test_every_peer_gets_the_same_sample_whatever_order_or_case_it_holds() -> None:
    reference = sample_participants(MEMBERS, 0.25, RANDOMNESS, 3)
    shuffled = list(reversed(MEMBERS))
    assert sample_participants(shuffled, 0.25, RANDOMNESS, 3) == reference
    upper = [member.upper().replace("0X", "0x") for member in MEMBERS]
    assert [member.lower() for member in sample_participants(upper, 0.25, RANDOMNESS, 3)] == list(reference)


def test_rounds_and_randomness_change_the_sample_and_everyone_is_due_about_equally_often() -> None:
    samples = [sample_participants(MEMBERS, 0.25, RANDOMNESS, round_number) for round_number in range(200)]
    assert len(set(samples)) == 200
    assert sample_participants(MEMBERS, 0.25, hashlib.sha256(b"other").digest(), 0) != samples[0]
    counts = Counter(member for sample in samples for member in sample)
    assert len(counts) == 100
    assert min(counts.values()) >= 25 and max(counts.values()) <= 80  # 50 expected; binomial sd 6.1


def test_bad_input_is_refused() -> None:
    with pytest.raises(ConfigurationError):
        sample_participants(MEMBERS, 0.25, b"short", 0)
    with pytest.raises(ConfigurationError):
        sample_participants([*MEMBERS, MEMBERS[0].upper()], 0.25, RANDOMNESS, 0)
    with pytest.raises(ConfigurationError):
        sample_participants(MEMBERS, 0.25, RANDOMNESS, -1)


def test_the_simulation_draws_its_clients_with_the_same_sampler() -> None:
    chosen = choose_participants(20, 0.25, federation_seed=4, round_index=2)
    assert len(chosen) == 5 and list(chosen) == sorted(chosen)
    assert chosen == choose_participants(20, 0.25, federation_seed=4, round_index=2)
    assert choose_participants(20, 1.0, 4, 2) == tuple(range(20))
