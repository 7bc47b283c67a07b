"""What a running agent says about itself: ``status.json`` in its state directory, rewritten every 10 s.

``layerfed status`` runs in another process (often as another user) and must work whether the agent is
running or not, so the agent does not answer questions; it leaves a small file behind instead: its pid,
resident memory, what it is doing, the round it last saw on chain and its statistics. The file is written
atomically (temporary file, rename), so a reader never sees half of one, and ``written_at`` tells a
reader whether it is fresh. The Prometheus exporter (:mod:`agent.commands.metrics`) reads the same
:class:`AgentStatus`, so the two never disagree.
"""

from __future__ import annotations

import json
import logging
import os
import resource
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

from agent.atomic_file import write_atomically
from agent.engine.round_engine import RoundEngine
from agent.engine.statistics import StatisticsSnapshot

logger = logging.getLogger(__name__)

STATUS_FILE = "status.json"
STATUS_INTERVAL_SECONDS = 10.0


@dataclass(frozen=True)
class AgentStatus:
    """One moment of a running agent."""

    pid: int
    address: str
    federation: str
    started_at: float  # unix seconds
    written_at: float  # unix seconds
    activity: str  # starting, training, merging, waiting or stopped
    resident_memory_bytes: int
    round_number: int  # 0 until the chain was read
    stage: int
    phase: str  # SUBMISSION, ATTESTATION, ... ("" until the chain was read)
    finalized_rounds: int
    training_complete: bool
    statistics: StatisticsSnapshot

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True, indent=1)

    @classmethod
    def from_json(cls, text: str) -> AgentStatus:
        """Inverse of :meth:`to_json`; ValueError for anything else (keys added later are ignored)."""
        try:
            values = json.loads(text)
            statistics_fields = {field.name for field in fields(StatisticsSnapshot)}
            values["statistics"] = StatisticsSnapshot(
                **{key: value for key, value in values["statistics"].items() if key in statistics_fields}
            )
            known = {field.name for field in fields(cls)}
            return cls(**{key: value for key, value in values.items() if key in known})
        except (KeyError, TypeError, AttributeError) as error:
            raise ValueError(f"not an agent status: {error}") from error


def resident_memory_bytes() -> int:
    """This process's resident set size now (Linux ``/proc``), or its peak where ``/proc`` is missing."""
    try:
        resident_pages = int(Path("/proc/self/statm").read_text().split()[1])
        return resident_pages * os.sysconf("SC_PAGE_SIZE")
    except (OSError, IndexError, ValueError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def engine_status(engine: RoundEngine, started_at: float) -> AgentStatus:
    """The status of ``engine`` in this process, now."""
    state = engine.round_state
    return AgentStatus(
        pid=os.getpid(),
        address=engine.identity.address,
        federation=engine.federation_id,
        started_at=started_at,
        written_at=time.time(),
        activity=engine.activity,
        resident_memory_bytes=resident_memory_bytes(),
        round_number=state.number if state else 0,
        stage=state.stage if state else 0,
        phase=state.phase.name if state else "",
        finalized_rounds=state.finalized_rounds if state else 0,
        training_complete=state.training_complete if state else False,
        statistics=engine.statistics.snapshot(),
    )


class StatusFile:
    """Reads and atomically writes ``status.json`` in a state directory."""

    def __init__(self, directory: Path) -> None:
        self.path = directory / STATUS_FILE

    def write(self, status: AgentStatus) -> None:
        # Readable by the operator's `layerfed status`; nothing secret in it.
        write_atomically(self.path, status.to_json().encode(), mode=0o644)

    def read(self) -> AgentStatus | None:
        """The last status written, or None when there is none (the agent never ran here)."""
        try:
            return AgentStatus.from_json(self.path.read_text())
        except FileNotFoundError:
            return None


def process_exists(pid: int) -> bool:
    """Whether a process ``pid`` exists (it may belong to another user: the agent runs as ``layerfed``)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def is_running(status: AgentStatus, now: float, interval_seconds: float = STATUS_INTERVAL_SECONDS) -> bool:
    """Whether the agent that wrote ``status`` is still running: its pid exists and the file is fresh.

    Freshness guards against a pid reused after a reboot or a crash: a live agent rewrites the file every
    ``interval_seconds``.
    """
    return (
        status.activity != "stopped"
        and process_exists(status.pid)
        and now - status.written_at < 3 * interval_seconds
    )


class StatusWriter:
    """A thread that writes ``read_status()`` to the status file every ``interval_seconds``.

    :meth:`stop` writes one last status with activity ``stopped``, so ``layerfed status`` can tell a clean
    stop from a crash.
    """

    def __init__(
        self,
        status_file: StatusFile,
        read_status: Callable[[], AgentStatus],
        interval_seconds: float = STATUS_INTERVAL_SECONDS,
    ) -> None:
        self.status_file = status_file
        self.read_status = read_status
        self.interval_seconds = interval_seconds
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name="layerfed-status", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopped.set()
        if self._thread.is_alive():
            self._thread.join()
        self._write(lambda status: replace(status, activity="stopped"))

    def _run(self) -> None:
        while True:
            self._write(lambda status: status)
            if self._stopped.wait(self.interval_seconds):
                return

    def _write(self, adjust: Callable[[AgentStatus], AgentStatus]) -> None:
        try:
            self.status_file.write(adjust(self.read_status()))
        except OSError as error:  # a full disk must not stop the agent: the status is informational
            logger.warning("cannot write %s: %s", self.status_file.path, error)
