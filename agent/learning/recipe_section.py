"""Reading one nested section of the training recipe (aggregation, privacy, ...) back from its JSON form.

A recipe comes from a model file that a peer fetched by the CID on chain: a section that is no mapping,
has keys this version does not know, or lacks required ones must fail as a ConfigurationError in every
peer's recipe check, never as a TypeError later. Each section's own ``__post_init__`` checks its values.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import fields
from typing import Any, TypeVar

from agent.errors import ConfigurationError

Section = TypeVar("Section")


def section_from_mapping(cls: type[Section], values: object, kind: str) -> Section:
    """``cls(**values)`` for a frozen dataclass ``cls``; ``kind`` ("aggregation") names it in errors."""
    if not isinstance(values, Mapping):
        raise ConfigurationError(f"{kind} settings must be a mapping, not {values!r}")
    known = {field.name for field in fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigurationError(f"unknown {kind} keys: {', '.join(unknown)}")
    arguments: dict[str, Any] = dict(values)
    try:
        return cls(**arguments)
    except TypeError as exc:
        raise ConfigurationError(f"{kind} settings are malformed: {exc}") from exc
