"""The differential-privacy options of ``contract deploy``: the benchmark's (:mod:`agent.learning.privacy.
arguments`), so that settings measured with ``layerfed bench --dp-clip C --dp-noise Z`` are deployed with
the same words; the command line reaches them through this module, as it reaches everything, through the
commands."""

from __future__ import annotations

from agent.learning.privacy.arguments import add_privacy_arguments, privacy_from_arguments

__all__ = ["add_privacy_arguments", "privacy_from_arguments"]
