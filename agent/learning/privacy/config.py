"""The recipe's differential-privacy settings: the clipping bound, the noise multiplier, the target delta.

They sit in the recipe (and so under its digest on chain) because they are part of what every peer
provably runs: a peer cannot quietly send unclipped or un-noised updates under a recipe that promises
otherwise without its update being told apart by size alone, and an operator reading the chain knows
which guarantee the federation gives. The default, :data:`NO_PRIVACY`, is left out of the recipe's
canonical form (:meth:`agent.learning.training.TrainingConfig.to_dict`), so the digests of recipes
written before privacy existed stay what they were.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from agent.errors import ConfigurationError
from agent.learning.recipe_section import section_from_mapping

DEFAULT_TARGET_DELTA = 1e-5


@dataclass(frozen=True)
class PrivacyConfig:
    """Client-level DP of each device's exchanged update (DP-FedAvg, McMahan et al., 2018).

    - ``clip_norm``: C, the L2 bound of the whole exchanged delta (all its tensors together); None: off.
    - ``noise_multiplier``: z; Gaussian noise of standard deviation z * C is added to every coordinate of
      the clipped delta. 0 clips without noise (no privacy guarantee, epsilon is infinite).
    - ``target_delta``: the delta epsilon is reported for; it should be well below one over the number
      of devices.
    """

    clip_norm: float | None = None
    noise_multiplier: float = 0.0
    target_delta: float = DEFAULT_TARGET_DELTA

    def __post_init__(self) -> None:
        # A recipe comes from JSON on chain: a string or true where a number belongs must fail here.
        for name in ("clip_norm", "noise_multiplier", "target_delta"):
            value = getattr(self, name)
            if value is None and name == "clip_norm":
                continue
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
                raise ConfigurationError(f"privacy {name} must be a finite number, not {value!r}")
        if self.clip_norm is not None and not self.clip_norm > 0:
            raise ConfigurationError(f"privacy clip_norm must be positive, not {self.clip_norm}")
        if self.noise_multiplier < 0:
            raise ConfigurationError(
                f"privacy noise_multiplier must not be negative, not {self.noise_multiplier}"
            )
        if self.noise_multiplier > 0 and self.clip_norm is None:
            raise ConfigurationError("privacy noise needs a clip_norm: the noise is scaled to the bound")
        if not 0 < self.target_delta < 1:
            raise ConfigurationError(f"privacy target_delta must be in (0, 1), not {self.target_delta}")

    @property
    def enabled(self) -> bool:
        """Whether updates are clipped (and, with a positive multiplier, noised) before they leave."""
        return self.clip_norm is not None

    @property
    def noise_standard_deviation(self) -> float:
        """sigma = z * C, per coordinate (0 when off)."""
        return self.noise_multiplier * (self.clip_norm or 0.0)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: object) -> PrivacyConfig:
        """Inverse of :meth:`to_dict`; anything but a mapping, unknown keys or wrong types raise
        ConfigurationError."""
        return section_from_mapping(cls, values, "privacy")

    def describe(self) -> str:
        """A short label for logs and tables, e.g. ``dp(clip 5, noise 1)`` or ``none``."""
        if self.clip_norm is None:
            return "none"
        return f"dp(clip {self.clip_norm:g}, noise {self.noise_multiplier:g})"


NO_PRIVACY = PrivacyConfig()
"""Updates leave the device as trained: the default, and every recipe written before privacy existed."""
