"""What client-level DP costs over a schedule: epsilon at the recipe's delta, from Opacus's RDP accountant.

The one module that imports Opacus (Yousefpour et al., 2021), and only its accountant: the mechanism is
the device's own (:mod:`~agent.learning.privacy.mechanism`); Opacus's per-sample training is not used,
since the unit protected here is a device's whole update, not one example.

Each round a device takes part in is one Gaussian mechanism with noise multiplier z on a delta clipped to
C. Two neighbouring relations are reported:

- ``epsilon``: add/remove, the convention of DP-FedAvg and of Opacus (sensitivity C): a peer reading the
  device's updates cannot tell its updates from those of a device that trained on no data at all.
- ``epsilon_replace``: replace-one (sensitivity 2C, so the accountant runs with z / 2): the peer cannot
  tell the device's data from any other data set it might have held. The stronger statement, and the
  larger epsilon.

The sampling rate q amplifies privacy only if an onlooker does not know which rounds a device took part
in. In layerfed every submission is recorded on chain with the device's address, so the agent and the
benchmark account with q = 1 and one step per round the device submits in; q < 1 is for a deployment
that hides participation (none does today).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import asdict, dataclass
from typing import Any

from agent.errors import ConfigurationError
from agent.learning.privacy.config import PrivacyConfig

REPLACE_SENSITIVITY_FACTOR = 2.0


@dataclass(frozen=True)
class PrivacySpent:
    """Epsilon after ``rounds`` rounds at ``delta`` (``math.inf`` without noise, 0 after no round)."""

    epsilon: float
    epsilon_replace: float
    delta: float
    rounds: int
    sampling_rate: float
    noise_multiplier: float
    clip_norm: float | None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: an infinite epsilon is written as None."""
        values = asdict(self)
        for name in ("epsilon", "epsilon_replace"):
            if math.isinf(values[name]):
                values[name] = None
        return values

    def describe(self) -> str:
        if self.clip_norm is None:
            return "no differential privacy: updates leave the device as trained"
        if math.isinf(self.epsilon):
            return f"clipped to {self.clip_norm:g} without noise: no differential privacy (epsilon infinite)"
        return (
            f"epsilon {self.epsilon:.3g} (add/remove; {self.epsilon_replace:.3g} replace-one) at delta "
            f"{self.delta:g} after {self.rounds} rounds, noise multiplier {self.noise_multiplier:g}, "
            f"clip {self.clip_norm:g}"
        )


def gaussian_epsilon(noise_multiplier: float, sampling_rate: float, rounds: int, delta: float) -> float:
    """Epsilon of ``rounds`` compositions of the sampled Gaussian mechanism, by Opacus's RDP accountant."""
    if rounds == 0:
        return 0.0
    if noise_multiplier == 0:
        return math.inf
    # Imported here: Opacus's package loads its whole training engine (seconds on a small device), and
    # ``layerfed status`` of a federation without privacy should not pay for it.
    from opacus.accountants import RDPAccountant

    accountant = RDPAccountant()
    accountant.history.append((noise_multiplier, sampling_rate, rounds))
    with warnings.catch_warnings():
        # For very small multipliers the best order is Opacus's smallest and it warns that a wider range
        # could give a tighter bound: the epsilon returned is still a valid (loose) upper bound.
        warnings.filterwarnings("ignore", message="Optimal order is the smallest alpha")
        return float(accountant.get_epsilon(delta=delta))


def privacy_spent(privacy: PrivacyConfig, rounds: int, sampling_rate: float = 1.0) -> PrivacySpent:
    """What ``rounds`` rounds of ``privacy`` cost each device (see the module docstring for q)."""
    if rounds < 0:
        raise ConfigurationError(f"rounds must not be negative, not {rounds}")
    if not 0 < sampling_rate <= 1:
        raise ConfigurationError(f"sampling rate must be in (0, 1], not {sampling_rate}")
    if privacy.clip_norm is None:
        epsilon = epsilon_replace = math.inf
    else:
        multiplier = privacy.noise_multiplier
        epsilon = gaussian_epsilon(multiplier, sampling_rate, rounds, privacy.target_delta)
        epsilon_replace = gaussian_epsilon(
            multiplier / REPLACE_SENSITIVITY_FACTOR, sampling_rate, rounds, privacy.target_delta
        )
    return PrivacySpent(
        epsilon=epsilon,
        epsilon_replace=epsilon_replace,
        delta=privacy.target_delta,
        rounds=rounds,
        sampling_rate=sampling_rate,
        noise_multiplier=privacy.noise_multiplier,
        clip_norm=privacy.clip_norm,
    )
