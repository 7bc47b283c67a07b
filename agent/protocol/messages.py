"""The signed messages peers exchange over the bus, and the one place their wire format is defined.

A payload is one JSON object: the message's fields (the dataclass field names below are the JSON keys),
plus ``schema_version``, ``kind`` and ``signature``. The signature is made by the participant's
:class:`agent.ports.identity.Signer` (EIP-191 ``personal_sign`` by its Ethereum key) over
the *canonical JSON* of every other key: keys sorted, no spaces, ASCII only, no NaN. Canonical JSON makes
the signed bytes a function of the content alone, so a receiver re-encodes what it parsed and checks the
signature against that; key order or white space added in transit cannot break (or forge) a signature.

:func:`decode` accepts a payload only when its sender is who it claims to be: the address recovered from
the signature must equal the ``participant`` field. Whether that address may take part at all is the
coordinator contract's business; the caller passes that check in as ``is_registered``.

Every field's type and value is checked when a message is built, received or local, by pydantic in
strict mode against the annotated types below (``Count``, ``Address``, ``Cid``, ...), and the first
problem is reported in the protocol's own words (``field 'round' must be an integer, got str``).

Schema evolution: a receiver rejects any ``schema_version`` other than :data:`SCHEMA_VERSION` and any
field it does not know, so a change to a message means a new schema version, never a silent
reinterpretation.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, ClassVar, Final, Literal, get_args, get_type_hints

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, create_model

from agent.errors import MessageRejectedError
from agent.ports.identity import SignatureVerifier, Signer
from agent.protocol.topics import FederationTopics, is_valid_address, is_valid_federation_id

SCHEMA_VERSION: Final = 1
"""The only schema version this code writes and accepts."""

MAX_PAYLOAD_BYTES: Final = 4096
"""Largest payload :func:`decode` parses. Real messages are under 700 bytes; this bounds the work a
stranger can make a peer do before its signature is even checked."""

MAX_TEXT_LENGTH: Final = 200
"""Longest string field (a CIDv1 in base32 is 59 characters)."""

MAX_COUNT: Final = 2**63 - 1
"""Largest integer field, so every number fits the 64-bit integers other implementations use."""

SCHEMA_VERSION_FIELD: Final = "schema_version"
KIND_FIELD: Final = "kind"
SIGNATURE_FIELD: Final = "signature"

PresenceStatus = Literal["online", "offline"]
ONLINE: Final[PresenceStatus] = "online"
OFFLINE: Final[PresenceStatus] = "offline"

_CID_PATTERN: Final = re.compile(r"[A-Za-z0-9]+")
_SIGNATURE_PATTERN: Final = re.compile(r"0x[0-9a-fA-F]{130}")


def _federation_id(value: str) -> str:
    if not is_valid_federation_id(value):
        raise ValueError(f"is not a federation id: {value!r}")
    return value


def _address(value: str) -> str:
    if not is_valid_address(value):
        raise ValueError(f"is not an Ethereum address: {value!r}")
    return value


def _cid(value: str) -> str:
    if _CID_PATTERN.fullmatch(value) is None:
        raise ValueError(f"is not a CID: {value!r}")
    return value


# The field types: what pydantic checks (strictly: no "3" for 3, no 3.0, no True) when a message is built.
Count = Annotated[int, Field(ge=0, le=MAX_COUNT)]
SampleCount = Annotated[int, Field(ge=1, le=MAX_COUNT)]
FederationId = Annotated[str, Field(max_length=MAX_TEXT_LENGTH), AfterValidator(_federation_id)]
Address = Annotated[str, Field(max_length=MAX_TEXT_LENGTH), AfterValidator(_address)]
Cid = Annotated[str, Field(max_length=MAX_TEXT_LENGTH), AfterValidator(_cid)]


@dataclass(frozen=True)
class UpdateAnnounced:
    """``participant`` trained ``stage`` of ``round`` on ``samples`` samples and pinned the update as ``cid``.

    ``sent_at`` is Unix time in milliseconds (an integer, so the signed bytes never depend on how a float
    is printed).
    """

    KIND: ClassVar[str] = "update_announced"

    federation: FederationId
    round: Count
    stage: Count
    participant: Address
    cid: Cid
    samples: SampleCount
    sent_at: Count

    def __post_init__(self) -> None:
        _raise_for_invalid_fields(self)


@dataclass(frozen=True)
class ModelAttested:
    """``participant`` merged the updates of ``round`` itself and vouches that the result is ``model_cid``."""

    KIND: ClassVar[str] = "model_attested"

    federation: FederationId
    round: Count
    participant: Address
    model_cid: Cid
    sent_at: Count

    def __post_init__(self) -> None:
        _raise_for_invalid_fields(self)


@dataclass(frozen=True)
class Presence:
    """``participant`` is ``online`` (published on connect) or ``offline`` (its last will, or a goodbye)."""

    KIND: ClassVar[str] = "presence"

    federation: FederationId
    participant: Address
    status: PresenceStatus
    sent_at: Count

    def __post_init__(self) -> None:
        _raise_for_invalid_fields(self)


Message = UpdateAnnounced | ModelAttested | Presence

_MESSAGE_TYPES: Final[dict[str, type[Message]]] = {
    message_type.KIND: message_type for message_type in (UpdateAnnounced, ModelAttested, Presence)
}


def topic_of(message: Message) -> str:
    """The topic ``message`` is published on (its sender's own topic in its federation's tree)."""
    topics = FederationTopics(message.federation)
    if isinstance(message, UpdateAnnounced):
        return topics.update_announcements(message.participant)
    if isinstance(message, ModelAttested):
        return topics.model_attestations(message.participant)
    return topics.presence(message.participant)


def canonical_json(value: dict[str, Any]) -> bytes:
    """The one byte encoding of ``value`` that is signed: sorted keys, no spaces, ASCII, no NaN."""
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False
    ).encode("ascii")


def encode(message: Message, signer: Signer) -> bytes:
    """Sign ``message`` with ``signer`` and return the payload to publish.

    Raises ValueError when ``signer`` is not ``message.participant``: a peer signs only as itself.
    """
    if signer.address.lower() != message.participant.lower():
        raise ValueError(f"account {signer.address} cannot sign a message from {message.participant}")
    body = _body_of(message)
    return canonical_json({**body, SIGNATURE_FIELD: signer.sign(canonical_json(body))})


def decode(
    payload: bytes,
    *,
    verifier: SignatureVerifier,
    is_registered: Callable[[str], bool] | None = None,
    federation: str | None = None,
    topic: str | None = None,
) -> Message:
    """Parse and authenticate a payload; raise MessageRejectedError saying why when it is not acceptable.

    Checks, in order: size, JSON, schema version, kind, fields and their types and values, signature
    (recovered by ``verifier``), signer equals the claimed participant, then the optional context:
    ``federation`` (the receiver's own federation id), ``topic`` (the topic it arrived on must be the
    sender's own, see :func:`topic_of`) and ``is_registered(signer_address)`` (the on-chain registry; its
    own exceptions propagate).
    """
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise MessageRejectedError(
            f"payload of {len(payload)} bytes exceeds the limit of {MAX_PAYLOAD_BYTES}"
        )
    document = _parse_json_object(payload)
    version = document.pop(SCHEMA_VERSION_FIELD, None)
    if version is None:
        raise MessageRejectedError(f"missing field {SCHEMA_VERSION_FIELD!r}")
    if type(version) is not int or version != SCHEMA_VERSION:  # not 1.0, not True
        raise MessageRejectedError(
            f"unsupported schema version {version!r} (this peer speaks {SCHEMA_VERSION})"
        )
    kind = document.pop(KIND_FIELD, None)
    message_type = _MESSAGE_TYPES.get(kind) if isinstance(kind, str) else None
    if message_type is None:
        raise MessageRejectedError(
            f"unknown message kind {kind!r} (known: {', '.join(sorted(_MESSAGE_TYPES))})"
        )
    signature = document.pop(SIGNATURE_FIELD, None)
    message = _build(message_type, document)
    signer = _recover_signer(verifier, _body_of(message), signature)
    if signer.lower() != message.participant.lower():
        raise MessageRejectedError(f"signed by {signer} but claims to come from {message.participant}")
    if federation is not None and message.federation != federation:
        raise MessageRejectedError(
            f"message for federation {message.federation!r}, this peer is in {federation!r}"
        )
    if topic is not None and topic != topic_of(message):
        raise MessageRejectedError(
            f"{message.KIND} from {message.participant} arrived on foreign topic {topic!r}"
        )
    if is_registered is not None and not is_registered(signer):
        raise MessageRejectedError(f"signer {signer} is not a registered participant")
    return message


def _body_of(message: Message) -> dict[str, Any]:
    """Everything that is signed: the fields plus schema version and kind (so neither can be swapped)."""
    return {SCHEMA_VERSION_FIELD: SCHEMA_VERSION, KIND_FIELD: message.KIND, **dataclasses.asdict(message)}


def _parse_json_object(payload: bytes) -> dict[str, Any]:
    try:
        document = json.loads(
            payload.decode("utf-8"), object_pairs_hook=_reject_duplicate_keys, parse_constant=_reject_constant
        )
    except (ValueError, RecursionError) as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise MessageRejectedError(f"payload is not JSON: {exc}") from exc
    if not isinstance(document, dict):
        raise MessageRejectedError(f"payload is JSON {type(document).__name__}, not an object")
    return document


def _reject_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    document: dict[str, Any] = {}
    for key, value in pairs:
        if key in document:
            raise MessageRejectedError(f"duplicate field {key!r}")
        document[key] = value
    return document


def _reject_constant(name: str) -> None:
    raise MessageRejectedError(f"payload holds the non-JSON number {name}")


def _build(message_type: type[Message], document: dict[str, Any]) -> Message:
    names = {field.name for field in dataclasses.fields(message_type)}
    missing = sorted(names - document.keys())
    if missing:
        raise MessageRejectedError(f"{message_type.KIND} is missing field {missing[0]!r}")
    unexpected = sorted(document.keys() - names)
    if unexpected:
        raise MessageRejectedError(f"{message_type.KIND} has unexpected field {unexpected[0]!r}")
    try:
        return message_type(**document)
    except ValueError as exc:
        raise MessageRejectedError(f"{message_type.KIND}: {exc}") from exc


def _recover_signer(verifier: SignatureVerifier, body: dict[str, Any], signature: object) -> str:
    if signature is None:
        raise MessageRejectedError(f"missing field {SIGNATURE_FIELD!r}")
    if not isinstance(signature, str) or _SIGNATURE_PATTERN.fullmatch(signature) is None:
        raise MessageRejectedError(f"field {SIGNATURE_FIELD!r} is not 0x and 130 hexadecimal digits")
    return verifier.signer_of(canonical_json(body), signature)


def _raise_for_invalid_fields(message: Message) -> None:
    """Check every field's type and value with the message's schema; ValueError names the first bad field."""
    schema = _SCHEMAS[type(message)]
    try:
        schema.model_validate(dataclasses.asdict(message))
    except ValidationError as error:
        problem = error.errors()[0]
        name = str(problem["loc"][0])
        raise ValueError(f"field {name!r} {_describe(schema, name, problem)}") from None


def _describe(schema: type[BaseModel], name: str, problem: Any) -> str:
    """pydantic's complaint in the protocol's words (the rejection reasons peers log)."""
    kind, value = problem["type"], problem["input"]
    if kind == "int_type":
        return f"must be an integer, got {type(value).__name__}"
    if kind == "string_type":
        return f"must be a string, got {type(value).__name__}"
    if kind in ("greater_than_equal", "less_than_equal"):
        bounds = schema.model_fields[name].metadata
        minimum = next(bound.ge for bound in bounds if hasattr(bound, "ge"))
        maximum = next(bound.le for bound in bounds if hasattr(bound, "le"))
        return f"must be between {minimum} and {maximum}, got {value}"
    if kind == "string_too_long":
        return f"is longer than {MAX_TEXT_LENGTH} characters"
    if kind == "literal_error":
        return f"must be one of {', '.join(get_args(PresenceStatus))}, got {value!r}"
    if kind == "value_error":
        return str(problem["ctx"]["error"])
    return str(problem["msg"])


def _schema_of(message_type: type[Message]) -> type[BaseModel]:
    """A strict pydantic model of the message's fields, from its annotations (declared once, above)."""
    hints = get_type_hints(message_type, include_extras=True)
    fields: dict[str, Any] = {
        field.name: (hints[field.name], ...) for field in dataclasses.fields(message_type)
    }
    schema: type[BaseModel] = create_model(
        f"{message_type.__name__}Schema", __config__=ConfigDict(strict=True, extra="forbid"), **fields
    )
    return schema


_SCHEMAS: Final[dict[type[Message], type[BaseModel]]] = {
    message_type: _schema_of(message_type) for message_type in _MESSAGE_TYPES.values()
}
