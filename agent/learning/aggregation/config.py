"""Which aggregation rule a federation merges with, and its parameters: part of the training recipe.

The rule sits in the recipe (and so under the digest on chain) because every peer must merge with the
same rule and parameters, or their merged models, and the CIDs they attest, would differ. Parameters that
depend on the number of updates (how many to trim, how many attackers Multi-Krum assumes) are fractions,
so one recipe serves rounds of any size.

A recipe written before rules existed has no ``aggregation`` entry: it means :data:`LEGACY_FEDAVG`
(claim-weighted FedAvg, no clipping, claims up to 10**9), and :meth:`TrainingConfig.to_dict` leaves the
entry out for exactly that rule, so the digests of federations deployed before keep matching their chain.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from agent.errors import ConfigurationError
from agent.learning.recipe_section import section_from_mapping

RULE_NAMES: tuple[str, ...] = ("fedavg", "median", "trimmed_mean", "multi_krum")
WEIGHTING_NAMES: tuple[str, ...] = ("claimed", "median_capped", "equal")
WEIGHTED_RULES: tuple[str, ...] = ("fedavg", "multi_krum")
"""The rules whose result a claimed sample count moves; ``median`` and ``trimmed_mean`` ignore weights."""


@dataclass(frozen=True)
class AggregationConfig:
    """How one round's updates become one model.

    - ``rule``: ``fedavg``, ``median``, ``trimmed_mean`` or ``multi_krum``.
    - ``trim_fraction``: trimmed mean's beta, the fraction of values cut at each end of every coordinate.
    - ``assumed_attacker_fraction``: Multi-Krum's f as a fraction of the round's updates (rounded down).
    - ``krum_selection``: Multi-Krum's m, how many updates it averages; None selects n - f.
    - ``norm_bound``: kappa; every update is clipped, per tensor group, to kappa times the round's median
      norm before the rule runs (None: no clipping).
    - ``sample_weighting``: how claimed sample counts weigh an update in the averaging rules (``fedavg``,
      ``multi_krum``): as ``claimed``, ``median_capped`` at the round's median claim, or ``equal``. The
      order statistics (``median``, ``trimmed_mean``) are unweighted by construction.
    - ``maximum_samples``: the largest sample count an update may claim; larger claims are rejected.
    """

    rule: str = "trimmed_mean"
    trim_fraction: float = 0.3
    assumed_attacker_fraction: float = 0.3
    krum_selection: int | None = None
    norm_bound: float | None = 3.0
    sample_weighting: str = "median_capped"
    maximum_samples: int = 100_000

    def __post_init__(self) -> None:
        # A recipe comes from JSON on chain: 3.0 where an int belongs, or true where a number belongs,
        # must fail here, in every peer's recipe check, not later inside a merge.
        for name in ("trim_fraction", "assumed_attacker_fraction", "norm_bound"):
            value = getattr(self, name)
            if value is None and name == "norm_bound":
                continue
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
                raise ConfigurationError(f"{name} must be a finite number, not {value!r}")
        for name in ("krum_selection", "maximum_samples"):
            value = getattr(self, name)
            if value is None and name == "krum_selection":
                continue
            if isinstance(value, bool) or not isinstance(value, int):
                raise ConfigurationError(f"{name} must be an integer, not {value!r}")
        if self.rule not in RULE_NAMES:
            raise ConfigurationError(
                f"unknown aggregation rule {self.rule!r}; choose from {', '.join(RULE_NAMES)}"
            )
        if self.sample_weighting not in WEIGHTING_NAMES:
            raise ConfigurationError(
                f"unknown sample weighting {self.sample_weighting!r}; "
                f"choose from {', '.join(WEIGHTING_NAMES)}"
            )
        if not 0 <= self.trim_fraction < 0.5:
            raise ConfigurationError(f"trim_fraction must be in [0, 0.5), not {self.trim_fraction}")
        if not 0 <= self.assumed_attacker_fraction < 0.5:
            raise ConfigurationError(
                f"assumed_attacker_fraction must be in [0, 0.5), not {self.assumed_attacker_fraction}"
            )
        if self.krum_selection is not None and self.krum_selection < 1:
            raise ConfigurationError(f"krum_selection must be at least 1, not {self.krum_selection}")
        if self.norm_bound is not None and not self.norm_bound > 0:
            raise ConfigurationError(f"norm_bound must be positive, not {self.norm_bound}")
        if not 1 <= self.maximum_samples <= 10**9:
            raise ConfigurationError(f"maximum_samples must be in 1..10**9, not {self.maximum_samples}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: object) -> AggregationConfig:
        """Inverse of :meth:`to_dict`; anything but a mapping, unknown keys or wrong types raise
        ConfigurationError."""
        return section_from_mapping(cls, values, "aggregation")

    def describe(self) -> str:
        """A short label for logs and tables, e.g. ``trimmed_mean(0.3)+norm_bound(3)``."""
        if self.rule == "trimmed_mean":
            label = f"trimmed_mean({self.trim_fraction:g})"
        elif self.rule == "multi_krum":
            label = f"multi_krum(f={self.assumed_attacker_fraction:g}n)"
        else:
            label = self.rule
        if self.norm_bound is not None:
            label += f"+norm_bound({self.norm_bound:g})"
        return label


DEFAULT_AGGREGATION = AggregationConfig()
"""The rule new federations merge with (chosen from the robustness benchmark; see the README)."""

LEGACY_FEDAVG = AggregationConfig(
    rule="fedavg", norm_bound=None, sample_weighting="claimed", maximum_samples=10**9
)
"""The rule of every recipe written before rules were part of it."""
