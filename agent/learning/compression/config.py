"""How a device compresses the update it uploads: part of the training recipe.

Compression sits in the recipe (under its digest on chain) because every peer must decode every other
peer's update the same way, and refuse one that is not compressed as the recipe says. Methods:

- ``none``: float32 deltas, the update format that existed before compression (same bytes, same CIDs).
- ``fp16``: every delta rounded to float16 (half the bytes).
- ``int8``: symmetric 8-bit quantisation with one float32 scale per output channel (per row of dimension
  0; one scale for a 1-D tensor), round half to even (about a quarter of the bytes).
- ``topk``: per tensor, the ``topk_fraction`` largest-magnitude entries (at least one) as int32 flat
  indices and float32 values (8 bytes per kept entry); with ``error_feedback`` the device adds what it
  did not send to its next update (Seide et al., 2014; Stich et al., 2018), so no direction is lost.

A recipe written before compression existed has no ``compression`` entry: it means :data:`NO_COMPRESSION`,
and :meth:`agent.learning.training.TrainingConfig.to_dict` leaves the entry out for exactly that value, so
the digests of recipes deployed before keep matching their chain.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

from agent.errors import ConfigurationError

METHOD_NAMES: tuple[str, ...] = ("none", "fp16", "int8", "topk")


@dataclass(frozen=True)
class CompressionConfig:
    """``method`` (see the module); ``topk_fraction`` and ``error_feedback`` apply to ``topk`` only."""

    method: str = "none"
    topk_fraction: float = 0.01
    error_feedback: bool = True

    def __post_init__(self) -> None:
        if self.method not in METHOD_NAMES:
            raise ConfigurationError(
                f"unknown compression {self.method!r}; choose from {', '.join(METHOD_NAMES)}"
            )
        fraction = self.topk_fraction
        if isinstance(fraction, bool) or not isinstance(fraction, int | float) or not math.isfinite(fraction):
            raise ConfigurationError(f"topk_fraction must be a finite number, not {fraction!r}")
        if not 0 < fraction <= 1:
            raise ConfigurationError(f"topk_fraction must be in (0, 1], not {fraction}")
        if not isinstance(self.error_feedback, bool):
            raise ConfigurationError(f"error_feedback must be true or false, not {self.error_feedback!r}")

    @property
    def keeps_residual(self) -> bool:
        """Whether the device carries what it did not send into its next update."""
        return self.method == "topk" and self.error_feedback

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    # The same checks as AggregationConfig.from_dict, deliberately: each recipe entry reads its own JSON
    # and names its own keys in the error; a shared helper would hide which entry was malformed.
    @classmethod
    def from_dict(cls, values: object) -> CompressionConfig:
        """Inverse of :meth:`to_dict`; anything but a mapping, unknown keys or wrong types raise
        ConfigurationError."""
        if not isinstance(values, Mapping):
            raise ConfigurationError(f"compression settings must be a mapping, not {values!r}")
        unknown = sorted(set(values) - {field.name for field in fields(cls)})
        if unknown:
            raise ConfigurationError(f"unknown compression keys: {', '.join(unknown)}")
        try:
            return cls(**dict(values))
        except TypeError as exc:
            raise ConfigurationError(f"compression settings are malformed: {exc}") from exc

    def describe(self) -> str:
        """A short label for logs and tables: ``int8``, ``topk(0.01)+ef``."""
        if self.method != "topk":
            return self.method
        return f"topk({self.topk_fraction:g})" + ("+ef" if self.error_feedback else "")


NO_COMPRESSION = CompressionConfig()
"""float32 deltas: what every recipe without a ``compression`` entry exchanges."""
