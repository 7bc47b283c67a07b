"""What one benchmark run trains on, and the two presets: ``smoke`` for CI and ``paper`` for the report.

Every mode of one run shares the whole configuration (model, seed, data, partition, schedule), so the
modes differ only in what they train and exchange. The configuration is written to a JSON file that each
worker process reads, which is also how the results record it.

``smoke`` exists to prove the pipeline end to end in CI: all modes in well under three minutes on two
cores, so the model, the data and the schedule are tiny and its accuracies mean nothing. It uses one
torch thread: ops this small gain nothing from a second one, and when another process holds a core,
two spinning OpenMP threads ran the same step about ten times slower (measured here).

``paper`` is sized to separate the modes on this 2-core machine in about 25 minutes per model with one
torch thread (measured; the README has the runs). For ViT it is a ViT-Tiny-like encoder (width 192,
3 heads, MLP ratio 4) with one transformer block per stage and S = 6 stages, on 7x7 patches (16 tokens;
4x4 patches ran about 2.5x slower per image). With S equal stages, end-to-end training costs S * 3S FLOP
units per client against sum_s (s - 1 + 3) for layer-wise (frozen stages cost one forward pass, trained
ones three): 3.27x at S = 6 (4.2x at S = 12, at twice the cost per e2e round). The batch is 256 so that
activations, which lw keeps for one stage and e2e for all, dominate training memory. The ResNet keeps
its four stages; its first, full-resolution stage holds most of the activations and a quarter of the
FLOPs, so lw saves less there by construction.

``paper12`` is the LW-FedSSL paper's shape (issue 13): a 12-block ViT, one block per stage, 8 clients.
ViT-Tiny is 192 wide with heads of 64; this one is 64 wide with one head of 64, since a block's cost
grows with the square of the width: at width 128 (batch 128, 10 clients, 12 x 2 rounds over 6000 images)
each client would take 10 optimizer steps per stage and the three modes about 55 minutes per seed here,
and in the reduced run made (2-3 steps per stage) lw ended 0.9 points above random init. Pilots at width
64, lw and e2e, 12 x 2 rounds over 6000 images, one seed (linear probe, random init 59.0%): batch 64 and
learning rate 1e-3, lw 62.7% / e2e 74.8%; 3e-3, 67.9% / 75.3%; lw at 1e-2, 69.2%; batch 32 with 8 clients
(46 steps per client and stage) and 3e-3, 69.2% / 74.3% in 168 s / 473 s of training. The preset is the
last: e2e is insensitive to the rate over that range, lw gains most from more steps per stage, and 8
clients is the low end of the 8-10 that issue 13 asks for. ``--blocks-per-stage 2`` gives the paper's
6-stage variant of the same encoder (with twice the rounds per stage, so as many rounds in all).

``robustness`` is the unit of ``layerfed bench --robustness``, which runs it once per (aggregation rule,
attack, scenario): a 3-stage ResNet (widths 16-64) trained layer-wise, 3 stages x 2 rounds, 600 images
per client, so that one cell takes about a minute here and training still lifts the linear probe some
3-4 points above random initialisation (what an attack has to destroy, and a defence to keep).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any

from agent.benchmark.attacks import check_attack
from agent.data.fashion_mnist import DEFAULT_FASHION_MNIST_DIRECTORY
from agent.errors import ConfigurationError
from agent.learning.aggregation.config import DEFAULT_AGGREGATION, LEGACY_FEDAVG, AggregationConfig
from agent.learning.backends import BACKEND_NAMES, DEFAULT_BACKEND
from agent.learning.compression import NO_COMPRESSION, CompressionConfig
from agent.learning.modes import TrainingMode
from agent.learning.privacy.config import NO_PRIVACY, PrivacyConfig
from models.spec import ARCHITECTURES, Architecture, EncoderSpec

PRESET_NAMES: tuple[str, ...] = ("smoke", "paper", "paper12", "robustness")
DATASET_NAME = "fashion-mnist"


@dataclass(frozen=True)
class BenchmarkConfig:
    """One benchmark run. ``train_limit`` and ``test_limit`` cut the splits (class-stratified);
    ``probe_limit`` is how many labelled training images the linear probe and kNN fit on."""

    model: Architecture
    preset: str
    spec: EncoderSpec
    clients: int
    rounds_per_stage: int
    local_epochs: int
    batch_size: int
    train_limit: int | None
    probe_limit: int
    test_limit: int | None
    learning_rate: float = 1e-3
    dirichlet_alpha: float | None = None
    seed: int = 0
    data_path: str = str(DEFAULT_FASHION_MNIST_DIRECTORY)
    modes: tuple[str, ...] = tuple(mode.value for mode in TrainingMode)
    centralised: bool = False
    threads: int | None = None
    dataset: str = DATASET_NAME
    backends: tuple[str, ...] = (DEFAULT_BACKEND,)
    aggregation: AggregationConfig = DEFAULT_AGGREGATION
    attack: str | None = None
    attackers: int = 0
    attack_scale: float | None = None
    privacy: PrivacyConfig = NO_PRIVACY
    compression: CompressionConfig = NO_COMPRESSION
    participation: float = 1.0

    def __post_init__(self) -> None:
        if not 0 < self.participation <= 1:
            raise ConfigurationError(f"participation must be in (0, 1], not {self.participation}")
        for name in ("clients", "rounds_per_stage", "local_epochs", "probe_limit"):
            if getattr(self, name) < 1:
                raise ConfigurationError(f"{name} must be at least 1, not {getattr(self, name)}")
        if self.batch_size < 2:
            raise ConfigurationError(f"batch_size must be at least 2, not {self.batch_size}")
        if self.dirichlet_alpha is not None and self.dirichlet_alpha <= 0:
            raise ConfigurationError(f"dirichlet_alpha must be positive, not {self.dirichlet_alpha}")
        if self.threads is not None and self.threads < 1:
            raise ConfigurationError(f"threads must be at least 1, not {self.threads}")
        if not self.modes:
            raise ConfigurationError("choose at least one mode")
        for mode in self.modes:
            TrainingMode.parse(mode)
        if len(set(self.modes)) != len(self.modes):
            raise ConfigurationError(f"modes repeat: {', '.join(self.modes)}")
        if not self.backends:
            raise ConfigurationError("choose at least one training backend")
        for backend in self.backends:
            if backend not in BACKEND_NAMES:
                raise ConfigurationError(
                    f"unknown training backend {backend!r}; choose from {', '.join(BACKEND_NAMES)}"
                )
        if len(set(self.backends)) != len(self.backends):
            raise ConfigurationError(f"backends repeat: {', '.join(self.backends)}")
        check_attack(self.attack, self.attackers, self.clients)

    @property
    def total_rounds(self) -> int:
        return self.spec.stages * self.rounds_per_stage

    def to_dict(self) -> dict[str, Any]:
        values = asdict(self)
        values["spec"] = self.spec.to_dict()
        values["modes"] = list(self.modes)
        values["backends"] = list(self.backends)
        values["aggregation"] = self.aggregation.to_dict()
        values["privacy"] = self.privacy.to_dict()
        values["compression"] = self.compression.to_dict()
        return values

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> BenchmarkConfig:
        converted = dict(values)
        converted["spec"] = EncoderSpec.from_dict(dict(values["spec"]))
        converted["modes"] = tuple(values["modes"])
        converted["backends"] = tuple(values.get("backends", (DEFAULT_BACKEND,)))
        # results written before aggregation rules existed were merged with FedAvg
        converted["aggregation"] = (
            AggregationConfig.from_dict(values["aggregation"]) if "aggregation" in values else LEGACY_FEDAVG
        )
        converted["privacy"] = (
            PrivacyConfig.from_dict(values["privacy"]) if "privacy" in values else NO_PRIVACY
        )
        # results written before compression and partial participation: float32 deltas, everyone
        converted["compression"] = CompressionConfig.from_dict(values.get("compression", {}))
        return cls(**converted)


def _smoke(model: Architecture) -> BenchmarkConfig:
    if model == "vit":
        spec = EncoderSpec(
            architecture="vit", stages=2, depth=2, embed_dim=48, attention_heads=3, patch_size=7
        )
    else:
        spec = EncoderSpec(architecture="resnet", stages=2, widths=(8, 16))
    return BenchmarkConfig(
        model=model,
        preset="smoke",
        spec=spec,
        clients=3,
        rounds_per_stage=1,
        local_epochs=1,
        batch_size=64,
        train_limit=600,
        probe_limit=600,
        test_limit=300,
        threads=1,
    )


def _paper(model: Architecture) -> BenchmarkConfig:
    if model == "vit":
        spec = EncoderSpec(
            architecture="vit", stages=6, depth=6, embed_dim=192, attention_heads=3, patch_size=7
        )
        train_limit = 6000
    else:
        spec = EncoderSpec(architecture="resnet", stages=4, widths=(32, 64, 128, 256))
        # Fewer images than ViT: the ResNet's full-resolution first stage is memory-bound, so it runs
        # at about half the ViT's images per second here, in every mode.
        train_limit = 4500
    return BenchmarkConfig(
        model=model,
        preset="paper",
        spec=spec,
        clients=3,
        rounds_per_stage=2,
        local_epochs=1,
        batch_size=256,
        train_limit=train_limit,
        probe_limit=3000,
        test_limit=2000,
    )


def _paper12(model: Architecture) -> BenchmarkConfig:
    if model != "vit":
        raise ConfigurationError("preset paper12 is a 12-block ViT: use --model vit")
    spec = EncoderSpec(architecture="vit", stages=12, depth=12, embed_dim=64, attention_heads=1, patch_size=7)
    # preset data, spelled out like the other presets so each reads on its own
    return BenchmarkConfig(
        model=model,
        preset="paper12",
        spec=spec,
        clients=8,
        rounds_per_stage=2,
        local_epochs=1,
        batch_size=32,
        train_limit=6000,
        probe_limit=2000,
        test_limit=2000,
        learning_rate=3e-3,
        threads=1,
    )


def _robustness(model: Architecture) -> BenchmarkConfig:
    if model == "vit":
        spec = EncoderSpec(
            architecture="vit", stages=3, depth=3, embed_dim=96, attention_heads=3, patch_size=7
        )
    else:
        spec = EncoderSpec(architecture="resnet", stages=3, widths=(16, 32, 64))
    return BenchmarkConfig(
        model=model,
        preset="robustness",
        spec=spec,
        clients=5,
        rounds_per_stage=2,
        local_epochs=1,
        batch_size=128,
        train_limit=3000,
        probe_limit=2000,
        test_limit=2000,
        modes=("lw",),
        threads=1,
    )


def preset_config(model: str, preset: str) -> BenchmarkConfig:
    """The configuration of ``preset`` for ``model``; override fields with :func:`dataclasses.replace`."""
    if model not in ARCHITECTURES:
        raise ConfigurationError(f"unknown model {model!r}; choose one of {', '.join(ARCHITECTURES)}")
    architecture: Architecture = "vit" if model == "vit" else "resnet"
    if preset == "smoke":
        return _smoke(architecture)
    if preset == "paper":
        return _paper(architecture)
    if preset == "paper12":
        return _paper12(architecture)
    if preset == "robustness":
        return _robustness(architecture)
    raise ConfigurationError(f"unknown preset {preset!r}; choose one of {', '.join(PRESET_NAMES)}")


def with_blocks_per_stage(config: BenchmarkConfig, blocks: int) -> BenchmarkConfig:
    """``config`` with its ViT's blocks grouped ``blocks`` to a stage (stages = depth / blocks) and
    ``blocks`` times the rounds per stage, so that the run has as many rounds as the one-block schedule:
    its e2e row is then the same training as the one-block run's, and lw is compared at equal rounds."""
    spec = config.spec
    if spec.architecture != "vit":
        raise ConfigurationError("--blocks-per-stage groups ViT blocks; a ResNet stage is one block")
    if blocks < 1 or spec.depth % blocks != 0:
        raise ConfigurationError(f"cannot group {spec.depth} blocks {blocks} to a stage")
    return replace(
        config,
        spec=replace(spec, stages=spec.depth // blocks),
        rounds_per_stage=config.rounds_per_stage * blocks * spec.stages // spec.depth,
    )


def with_overrides(config: BenchmarkConfig, **overrides: Any) -> BenchmarkConfig:
    """``config`` with every override that is not None applied (validated again)."""
    return replace(config, **{name: value for name, value in overrides.items() if value is not None})
