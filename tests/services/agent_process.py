"""Start ``layerfed agent run`` as its own process, the way systemd does, for multi-process tests."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPOSITORY_ROOT = Path(__file__).resolve().parents[2]


def start_agent(config: Path, log: Path) -> subprocess.Popen[bytes]:
    """The agent on ``config``, its stdout piped (the final model CID), its log appended to ``log``."""
    with log.open("ab") as handle:
        return subprocess.Popen(
            [
                sys.executable,
                "-m",
                "agent.cli",
                "--log-level",
                "INFO",
                "agent",
                "run",
                "--config",
                str(config),
            ],
            stdout=subprocess.PIPE,
            stderr=handle,
            env={**os.environ, "PYTHONPATH": str(REPOSITORY_ROOT)},
        )
