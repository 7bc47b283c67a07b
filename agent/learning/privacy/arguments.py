"""Command-line options that switch client-level differential privacy on: ``--dp-clip``, ``--dp-noise``,
``--dp-delta``, in one group, so every command that writes a recipe spells them the same way."""

from __future__ import annotations

import argparse

from agent.errors import ConfigurationError
from agent.learning.privacy.config import DEFAULT_TARGET_DELTA, NO_PRIVACY, PrivacyConfig


def add_privacy_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("differential privacy of each update (part of the training recipe)")
    group.add_argument(
        "--dp-clip", type=float, help="clip every update (all exchanged tensors together) to this L2 norm"
    )
    group.add_argument(
        "--dp-noise",
        type=float,
        help="noise multiplier z: Gaussian noise of standard deviation z x the clip on every coordinate",
    )
    group.add_argument(
        "--dp-delta", type=float, help=f"the delta epsilon is reported for (default {DEFAULT_TARGET_DELTA:g})"
    )


def privacy_from_arguments(arguments: argparse.Namespace) -> PrivacyConfig:
    """The settings the options describe; none given: :data:`NO_PRIVACY`."""
    clip, noise, delta = arguments.dp_clip, arguments.dp_noise, arguments.dp_delta
    if clip is None:
        if noise is not None or delta is not None:
            raise ConfigurationError(
                "--dp-noise and --dp-delta need --dp-clip: the noise is scaled to the clip"
            )
        return NO_PRIVACY
    return PrivacyConfig(
        clip_norm=clip,
        noise_multiplier=noise if noise is not None else 0.0,
        target_delta=delta if delta is not None else DEFAULT_TARGET_DELTA,
    )
