"""What a worker measures for one mode, as plain data that round-trips through JSON.

Per-client figures are means over the clients that took part (all of them, in the benchmark), so
``gflops_per_client`` and ``bytes_per_client`` are what one device pays over the whole run. Memory is a
maximum, not a mean: a device must have room for its worst round. Seconds per step is a median over
steady optimizer steps (the time between the ends of consecutive steps of one client), which leaves out
each client's first step (it also counts FLOPs and builds the backend's sessions) and is robust to a
shared machine's hiccups; None where no client took two steps.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from agent.benchmark.presets import BenchmarkConfig

SCHEMA = "layerfed-benchmark/2"


@dataclass(frozen=True)
class RoundResult:
    """One round: what a client paid on average, and the largest training memory any client needed."""

    round_index: int
    stage: int
    loss: float
    gflops_per_client: float
    upload_bytes_per_client: float
    download_bytes_per_client: float
    peak_train_memory_bytes: int
    client_peak_train_memory_bytes: tuple[int, ...]
    wall_seconds: float
    seconds_per_step: float | None = None
    steps_per_client: float = 0.0
    merge_seconds: float = 0.0
    decisions: tuple[str, ...] = ()  # "client-4 discarded by multi_krum", one per decision of the merge


@dataclass(frozen=True)
class StageResult:
    """The model after a stage's last round, read out after ``readout_stage``; costs are cumulative."""

    stage: int
    readout_stage: int
    linear_probe_accuracy: float
    knn_accuracy: float
    peak_train_memory_bytes: int
    cumulative_gflops_per_client: float
    cumulative_bytes_per_client: float
    cumulative_wall_seconds: float
    seconds_per_step: float | None = None


@dataclass(frozen=True)
class ModeResult:
    """Everything measured for one mode (or a reference run) in one fresh process."""

    mode: str
    linear_probe_accuracy: float
    knn_accuracy: float
    peak_train_memory_bytes: int
    gflops_per_client: float
    bytes_per_client: float
    upload_bytes_per_client: float
    download_bytes_per_client: float
    wall_seconds: float
    evaluation_seconds: float
    process_seconds: float
    memory_method: str
    clients: int
    stages: tuple[StageResult, ...]
    rounds: tuple[RoundResult, ...]
    backend: str = "torch"
    seconds_per_step: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> ModeResult:
        converted = dict(values)
        converted["stages"] = tuple(StageResult(**stage) for stage in values["stages"])
        converted["rounds"] = tuple(
            RoundResult(
                **{
                    **record,
                    "client_peak_train_memory_bytes": tuple(record["client_peak_train_memory_bytes"]),
                    "decisions": tuple(record.get("decisions", ())),
                }
            )
            for record in values["rounds"]
        )
        return cls(**converted)


@dataclass(frozen=True)
class ReferenceAccuracy:
    """Accuracy of an encoder that was not trained federatedly (random initialisation)."""

    linear_probe_accuracy: float
    knn_accuracy: float
    evaluation_seconds: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Comparison:
    """How much more ``reference`` (e2e) costs than ``other`` and how much more accurate it is.

    Ratios are reference / other (so 3.0 means e2e needs three times as much); None where ``other``
    measured zero. Gaps are reference minus other, in percentage points.
    """

    reference: str
    other: str
    peak_train_memory_ratio: float | None
    gflops_ratio: float | None
    bytes_ratio: float | None
    linear_probe_gap_points: float
    knn_gap_points: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class BackendComparison:
    """One mode and stage (``stage`` None: the whole run) trained by ``backend`` and by ``reference``.

    Ratios are backend / reference (0.8 means ``backend`` needs 20 % less); None where a figure is missing
    or the reference measured zero.
    """

    backend: str
    reference: str
    mode: str
    stage: int | None
    seconds_per_step: float | None
    reference_seconds_per_step: float | None
    peak_train_memory_bytes: int
    reference_peak_train_memory_bytes: int
    seconds_per_step_ratio: float | None
    peak_train_memory_ratio: float | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class BenchmarkResults:
    """A whole run: what ``results.json`` holds (its layout is described in this package's README).

    ``modes`` were trained by the reference backend (the configuration's first); ``other_backends`` holds
    the same modes trained by each further backend, and ``backend_comparisons`` sets them side by side.
    """

    config: BenchmarkConfig
    machine: dict[str, Any]
    modes: dict[str, ModeResult]
    comparisons: tuple[Comparison, ...]
    other_backends: dict[str, dict[str, ModeResult]] = field(default_factory=dict)
    backend_comparisons: tuple[BackendComparison, ...] = ()
    random_init: ReferenceAccuracy | None = None
    centralised: ModeResult | None = None
    job_seconds: dict[str, float] = field(default_factory=dict)
    created_at: str = ""
    command: tuple[str, ...] = ()
    privacy: dict[str, Any] | None = None  # PrivacySpent.to_dict() over the run's schedule

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA,
            "created_at": self.created_at,
            "command": list(self.command),
            "config": self.config.to_dict(),
            "machine": self.machine,
            "modes": {name: result.to_dict() for name, result in self.modes.items()},
            "references": {
                "random_init": self.random_init.to_dict() if self.random_init else None,
                "centralised": self.centralised.to_dict() if self.centralised else None,
            },
            "comparisons": {
                f"{item.reference}_over_{item.other}": item.to_dict() for item in self.comparisons
            },
            "other_backends": {
                backend: {name: result.to_dict() for name, result in modes.items()}
                for backend, modes in self.other_backends.items()
            },
            "backend_comparisons": [item.to_dict() for item in self.backend_comparisons],
            "job_seconds": self.job_seconds,
            "privacy": self.privacy,
        }

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> BenchmarkResults:
        """Read back ``results.json``, e.g. to draw the plots or the tables again."""
        references = values["references"]
        return cls(
            config=BenchmarkConfig.from_dict(values["config"]),
            machine=dict(values["machine"]),
            modes={name: ModeResult.from_dict(result) for name, result in values["modes"].items()},
            comparisons=tuple(Comparison(**item) for item in values["comparisons"].values()),
            other_backends={
                backend: {name: ModeResult.from_dict(result) for name, result in modes.items()}
                for backend, modes in values.get("other_backends", {}).items()
            },
            backend_comparisons=tuple(
                BackendComparison(**item) for item in values.get("backend_comparisons", ())
            ),
            random_init=ReferenceAccuracy(**references["random_init"]) if references["random_init"] else None,
            centralised=ModeResult.from_dict(references["centralised"])
            if references["centralised"]
            else None,
            job_seconds=dict(values["job_seconds"]),
            created_at=values["created_at"],
            command=tuple(values["command"]),
            privacy=values.get("privacy"),
        )
