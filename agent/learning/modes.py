"""Training modes and what each trains and exchanges at a given stage.

- ``lw`` (LW-FedSSL): stage s trains encoder stage s and head s; earlier stages are frozen.
- ``prog`` (Prog-FedSSL): stage s trains encoder stages 1..s and head s.
- ``e2e`` (end-to-end FedSSL): every round trains all encoder stages and the last head.

The schedule is the same for every mode (S stages x R rounds per stage), so modes are compared over the
same number of rounds; for ``e2e`` the stage only labels the round.
"""

from __future__ import annotations

from enum import Enum

from agent.errors import ConfigurationError
from models.staged_model import head_prefix, stage_prefix


class TrainingMode(str, Enum):
    LAYER_WISE = "lw"
    PROGRESSIVE = "prog"
    END_TO_END = "e2e"

    @classmethod
    def parse(cls, value: str) -> TrainingMode:
        try:
            return cls(value)
        except ValueError:
            valid = ", ".join(mode.value for mode in cls)
            raise ConfigurationError(f"unknown training mode {value!r}; choose one of {valid}") from None


def trained_stages(mode: TrainingMode, stage: int, stages: int) -> range:
    """1-based encoder stages that receive gradients at ``stage``."""
    if not 1 <= stage <= stages:
        raise ConfigurationError(f"stage {stage} is outside 1..{stages}")
    if mode is TrainingMode.LAYER_WISE:
        return range(stage, stage + 1)
    if mode is TrainingMode.PROGRESSIVE:
        return range(1, stage + 1)
    return range(1, stages + 1)


def head_stage(mode: TrainingMode, stage: int, stages: int) -> int:
    """The stage whose head is trained (and whose output it reads)."""
    return stages if mode is TrainingMode.END_TO_END else stage


def exchanged_prefixes(mode: TrainingMode, stage: int, stages: int) -> tuple[str, ...]:
    """Name prefixes of every tensor a client trains and therefore exchanges at ``stage``."""
    trained = [stage_prefix(index) for index in trained_stages(mode, stage, stages)]
    return (*trained, head_prefix(head_stage(mode, stage, stages)))


def is_exchanged(name: str, prefixes: tuple[str, ...]) -> bool:
    return name.startswith(prefixes)
