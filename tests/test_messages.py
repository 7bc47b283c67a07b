"""The signed message schema: round trips, every rejection reason, and the replay guard."""

from __future__ import annotations

import json
from typing import Any

import pytest
from eth_account import Account

from agent.adapters.account_identity import PERSONAL_SIGN, AccountIdentity
from agent.errors import ConfigurationError, MessageRejectedError
from agent.protocol.messages import (
    MAX_PAYLOAD_BYTES,
    SCHEMA_VERSION,
    Message,
    ModelAttested,
    Presence,
    UpdateAnnounced,
    canonical_json,
    decode,
    encode,
    topic_of,
)
from agent.protocol.replay_guard import Admission, ReplayGuard
from agent.protocol.topics import FederationTopics

# Fixed keys keep the tests deterministic (these accounts hold nothing on any chain).
ALICE = AccountIdentity(Account.from_key("0x" + "11" * 32))
BOB = AccountIdentity(Account.from_key("0x" + "22" * 32))
CID = "bafkreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy"


def _update(account: AccountIdentity = ALICE, **changes: Any) -> UpdateAnnounced:
    fields: dict[str, Any] = {
        "federation": "fed-1",
        "round": 3,
        "stage": 1,
        "participant": account.address,
        "cid": CID,
        "samples": 600,
        "sent_at": 1_763_800_000_000,
    }
    return UpdateAnnounced(**{**fields, **changes})


def _attestation(round_number: int = 3, model_cid: str = CID) -> ModelAttested:
    return ModelAttested("fed-1", round_number, ALICE.address, model_cid, 1_763_800_000_000)


def _signed_document(message: Message, account: AccountIdentity = ALICE) -> dict[str, Any]:
    document: dict[str, Any] = json.loads(encode(message, account))
    return document


def _resign(document: dict[str, Any], account: AccountIdentity) -> bytes:
    """Sign ``document`` (any content) the way a sender would: a validly signed but unusual payload."""
    body = {key: value for key, value in document.items() if key != "signature"}
    return canonical_json({**body, "signature": account.sign(canonical_json(body))})


def _rejection(payload: bytes, **context: Any) -> str:
    with pytest.raises(MessageRejectedError) as caught:
        decode(payload, verifier=PERSONAL_SIGN, **context)
    return str(caught.value)


@pytest.mark.parametrize(
    "message",
    [
        _update(),
        _attestation(),
        Presence("fed-1", ALICE.address, "online", 1_763_800_000_000),
        Presence("fed-1", ALICE.address, "offline", 1_763_800_000_000),
    ],
    ids=["update", "attestation", "online", "offline"],
)
def test_round_trip(message: Message) -> None:
    payload = encode(message, ALICE)
    assert (
        decode(
            payload,
            verifier=PERSONAL_SIGN,
            topic=topic_of(message),
            federation="fed-1",
            is_registered=lambda _: True,
        )
        == message
    )


def test_payload_is_canonical_json_with_version_kind_and_signature() -> None:
    payload = encode(_update(), ALICE)
    document = json.loads(payload)
    assert payload == json.dumps(document, sort_keys=True, separators=(",", ":")).encode()
    assert document["schema_version"] == SCHEMA_VERSION
    assert document["kind"] == "update_announced"
    assert document["signature"].startswith("0x") and len(document["signature"]) == 132


def test_key_order_and_spacing_in_transit_do_not_matter() -> None:
    document = _signed_document(_update())
    reordered = json.dumps(dict(reversed(list(document.items()))), indent=2).encode()
    assert decode(reordered, verifier=PERSONAL_SIGN) == _update()


def test_a_peer_signs_only_as_itself() -> None:
    with pytest.raises(ValueError, match="cannot sign"):
        encode(_update(BOB), ALICE)


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"\xff\xfe", "not JSON"),
        (b"{not json", "not JSON"),
        (b"[1, 2]", "not an object"),
        (b'{"kind": "presence", "kind": "presence"}', "duplicate field 'kind'"),
        (b'{"sent_at": NaN}', "non-JSON number NaN"),
        (b"[" * 2000 + b"]" * 2000, "not an object"),
    ],
    ids=["not-utf8", "broken", "array", "duplicate-key", "nan", "deeply-nested"],
)
def test_rejects_what_is_not_a_json_object(payload: bytes, reason: str) -> None:
    assert reason in _rejection(payload)


def test_rejects_an_oversized_payload_before_parsing_it() -> None:
    payload = b" " * (MAX_PAYLOAD_BYTES + 1)
    assert f"exceeds the limit of {MAX_PAYLOAD_BYTES}" in _rejection(payload)


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"schema_version": None}, "missing field 'schema_version'"),
        ({"schema_version": 2}, "unsupported schema version 2"),
        ({"schema_version": "1"}, "unsupported schema version '1'"),
        ({"schema_version": 1.0}, "unsupported schema version 1.0"),
        ({"schema_version": True}, "unsupported schema version True"),
        ({"kind": None}, "unknown message kind None"),
        ({"kind": "update_withdrawn"}, "unknown message kind 'update_withdrawn'"),
        ({"cid": None}, "missing field 'cid'"),
        ({"colour": "blue"}, "unexpected field 'colour'"),
        ({"round": "3"}, "field 'round' must be an integer, got str"),
        ({"round": 3.0}, "field 'round' must be an integer, got float"),
        ({"round": True}, "field 'round' must be an integer, got bool"),
        ({"round": -1}, "field 'round' must be between 0"),
        ({"round": 2**64}, "field 'round' must be between 0"),
        ({"samples": 0}, "field 'samples' must be between 1"),
        ({"cid": 42}, "field 'cid' must be a string, got int"),
        ({"cid": "bafy/../etc"}, "field 'cid' is not a CID"),
        ({"cid": "b" * 300}, "field 'cid' is longer than"),
        ({"participant": "alice"}, "field 'participant' is not an Ethereum address"),
        ({"federation": "fed/#"}, "field 'federation' is not a federation id"),
    ],
)
def test_rejects_wrong_or_missing_fields_even_when_validly_signed(
    change: dict[str, Any], reason: str
) -> None:
    document = _signed_document(_update())
    for key, value in change.items():
        if value is None:
            del document[key]
        else:
            document[key] = value
    assert reason in _rejection(_resign(document, ALICE))


def test_rejects_an_unknown_presence_status() -> None:
    document = _signed_document(Presence("fed-1", ALICE.address, "online", 1))
    document["status"] = "away"
    assert "field 'status' must be one of online, offline, got 'away'" in _rejection(_resign(document, ALICE))


def test_rejects_a_missing_signature() -> None:
    document = _signed_document(_update())
    del document["signature"]
    assert "missing field 'signature'" in _rejection(canonical_json(document))


@pytest.mark.parametrize("signature", ["0x1234", 42, "0x" + "zz" * 65], ids=["short", "number", "not-hex"])
def test_rejects_a_malformed_signature(signature: object) -> None:
    document = _signed_document(_update())
    document["signature"] = signature
    assert "is not 0x and 130 hexadecimal digits" in _rejection(canonical_json(document))


def test_rejects_a_signature_that_does_not_verify() -> None:
    document = _signed_document(_update())
    document["signature"] = "0x" + "00" * 65  # v = 0 is no valid recovery id
    assert "invalid signature" in _rejection(canonical_json(document))


def test_rejects_a_tampered_message() -> None:
    document = _signed_document(_update())
    document["samples"] = 60_000  # inflate the weight after signing
    reason = _rejection(canonical_json(document))
    assert "claims to come from" in reason


def test_rejects_a_message_signed_by_a_claiming_b() -> None:
    forged = _resign(_signed_document(_update(BOB), BOB), ALICE)
    assert f"signed by {ALICE.address} but claims to come from {BOB.address}" in _rejection(forged)


def test_the_registry_hook_sees_the_signer_and_can_reject_it() -> None:
    asked: list[str] = []

    def is_registered(address: str) -> bool:
        asked.append(address)
        return address == BOB.address

    assert f"signer {ALICE.address} is not a registered participant" in _rejection(
        encode(_update(), ALICE), is_registered=is_registered
    )
    assert decode(encode(_update(BOB), BOB), verifier=PERSONAL_SIGN, is_registered=is_registered) == _update(
        BOB
    )
    assert asked == [ALICE.address, BOB.address]


def test_rejects_a_message_of_another_federation() -> None:
    payload = encode(_update(federation="fed-2"), ALICE)
    assert "message for federation 'fed-2', this peer is in 'fed-1'" in _rejection(
        payload, federation="fed-1"
    )


def test_rejects_a_message_on_someone_elses_topic() -> None:
    payload = encode(Presence("fed-1", ALICE.address, "offline", 1), ALICE)
    bobs_topic = FederationTopics("fed-1").presence(BOB.address)
    assert "arrived on foreign topic" in _rejection(payload, topic=bobs_topic)


def test_local_construction_checks_fields_too() -> None:
    with pytest.raises(ValueError, match="field 'stage' must be between 0"):
        _update(stage=-1)


def test_topics_live_under_one_tree_per_federation() -> None:
    topics = FederationTopics("fed-1")
    assert topics.update_announcements(ALICE.address) == f"layerfed/fed-1/updates/{ALICE.address.lower()}"
    assert topics.model_attestations(ALICE.address).startswith("layerfed/fed-1/attestations/0x")
    assert topics.presence(ALICE.address).startswith("layerfed/fed-1/presence/0x")
    assert topics.all_update_announcements() == "layerfed/fed-1/updates/+"
    assert topics.all_model_attestations() == "layerfed/fed-1/attestations/+"
    assert topics.all_presence() == "layerfed/fed-1/presence/+"
    assert topics.everything() == "layerfed/fed-1/#"


@pytest.mark.parametrize("federation_id", ["", "a/b", "fed+", "fed#", "with space", "x" * 65])
def test_topics_refuse_a_federation_id_that_would_break_the_tree(federation_id: str) -> None:
    with pytest.raises(ConfigurationError, match="federation id"):
        FederationTopics(federation_id)


def test_topics_refuse_a_participant_that_is_not_an_address() -> None:
    with pytest.raises(ConfigurationError, match="not an Ethereum address"):
        FederationTopics("fed-1").presence("+")


def test_replay_guard_reports_duplicates_and_replays() -> None:
    guard = ReplayGuard()
    assert guard.admit(_update()) is Admission.NEW
    assert guard.admit(_update()) is Admission.DUPLICATE
    assert (
        guard.admit(_update(sent_at=1_763_900_000_000)) is Admission.DUPLICATE
    )  # re-signed later, same claim
    assert guard.admit(_update(cid="bafkreianother")) is Admission.NEW
    assert guard.admit(_update(stage=2)) is Admission.DUPLICATE  # identity: kind, federation, round, who, cid
    assert guard.admit(_attestation()) is Admission.NEW  # same round and CID, another kind of claim
    assert guard.admit(_update(federation="fed-2")) is Admission.NEW


def test_replay_guard_forgets_old_rounds_and_refuses_them_as_stale() -> None:
    guard = ReplayGuard(horizon_rounds=2)
    for round_number in range(6):
        assert guard.admit(_update(round=round_number)) is Admission.NEW
    assert guard.remembered_rounds() == [3, 4, 5]
    assert guard.admit(_update(round=2)) is Admission.STALE  # forgotten, yet not taken for new
    assert guard.admit(_update(round=3)) is Admission.DUPLICATE
    guard.advance(10)
    assert guard.remembered_rounds() == []
    assert guard.admit(_attestation(round_number=7)) is Admission.STALE
    assert guard.admit(_attestation(round_number=8)) is Admission.NEW


def test_replay_guard_rejects_a_negative_horizon() -> None:
    with pytest.raises(ValueError, match="horizon_rounds"):
        ReplayGuard(horizon_rounds=-1)
