"""The Gaussian mechanism on one device's update: clip the exchanged delta to C, add N(0, (z C)^2).

This is the client step of DP-FedAvg (McMahan, Ramage, Talwar and Zhang, 2018, "Learning Differentially
Private Recurrent Language Models", ICLR), done by each device on its own update because no server
aggregates: the whole exchanged delta (every tensor the mode exchanges, together) is scaled to an L2 norm
of at most C, then every coordinate gets independent Gaussian noise of standard deviation z * C. Whatever
a peer, a content-store node or an onlooker then does with the update (merging it, storing it, reading
it) is post-processing and cannot weaken the guarantee; :mod:`~agent.learning.privacy.accountant` says
what it is worth over a schedule.

Determinism: the norm is a fixed-order float64 reduction, the noise comes from a ``torch.Generator``
seeded by the caller (never torch's global generator), drawn tensor by tensor in sorted name order, and
the sum is rounded to float32 once. The same update and seed give the same bytes on every run, which is
what lets a device that was stopped mid-round pin the same update after restarting. The seed must be
private to the device (the agent derives it from a signature by the device's key): anyone who can
recompute the seed can subtract the noise.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from agent.learning.aggregation.arithmetic import squared_norm
from agent.learning.model_state import ModelState
from agent.learning.privacy.config import PrivacyConfig
from agent.learning.update import ModelUpdate

CLIP_MARGIN = 1.0 - 1e-6
"""Clipping scales to slightly inside the bound: rounding each coordinate to float32 changes it by at most
2**-24 of its value, so the norm of the rounded delta may exceed the float64 one by that relative amount
(6e-8), well inside this 1e-6 margin. The bound then holds for the bytes that leave the device."""


@dataclass(frozen=True)
class PrivateUpdate:
    """The update that leaves the device, and what clipping did (for the device's own log)."""

    update: ModelUpdate
    norm_before: float
    clipped: bool


def delta_norm(deltas: ModelState) -> float:
    """L2 norm of every exchanged tensor together, as a fixed-order float64 reduction."""
    return math.sqrt(squared_norm(deltas[name] for name in sorted(deltas)))


def privatize(update: ModelUpdate, privacy: PrivacyConfig, noise_seed: int) -> PrivateUpdate:
    """``update`` clipped to ``privacy.clip_norm`` and noised with ``noise_seed``'s generator.

    With privacy off the update is returned as it is. Noise is drawn even for a zero delta: skipping it
    would tell an onlooker that the device's update was zero.
    """
    norm = delta_norm(update.deltas)
    if privacy.clip_norm is None:
        return PrivateUpdate(update=update, norm_before=norm, clipped=False)
    clipped = norm > privacy.clip_norm * CLIP_MARGIN
    scale = privacy.clip_norm * CLIP_MARGIN / norm if clipped else 1.0
    deviation = privacy.noise_standard_deviation
    generator = torch.Generator().manual_seed(noise_seed)
    deltas: ModelState = {}
    for name in sorted(update.deltas):
        delta = update.deltas[name].to(torch.float64)
        if clipped:
            delta = delta * scale
        if deviation > 0:
            noise = torch.randn(delta.shape, generator=generator, dtype=torch.float64)
            delta = delta + noise * deviation
        deltas[name] = delta.to(torch.float32)
    private = ModelUpdate(mode=update.mode, stage=update.stage, samples=update.samples, deltas=deltas)
    return PrivateUpdate(update=private, norm_before=norm, clipped=clipped)
