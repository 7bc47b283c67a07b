"""Every aggregation rule against a naive reference written from its paper, plus hand-computed cases.

The references below are plain Python over one coordinate at a time (``math.fsum``, ``sorted``,
``statistics.median``), written from the papers' definitions and never calling the implementation's
helpers, so a bug in a shared helper (the sort, the pairwise sum, the trim count) cannot hide in both.
"""

from __future__ import annotations

import math
import statistics
import struct
from collections.abc import Mapping, Sequence

import pytest
import torch

from agent.learning.aggregation.config import RULE_NAMES, AggregationConfig
from agent.learning.aggregation.contribution import Contribution, Decision
from agent.learning.aggregation.fedavg import FederatedAveraging
from agent.learning.aggregation.median import CoordinateMedian
from agent.learning.aggregation.multi_krum import MultiKrum
from agent.learning.aggregation.norm_bound import bound_norms
from agent.learning.aggregation.rules import build_rule
from agent.learning.aggregation.sample_weights import sample_weights
from agent.learning.aggregation.trimmed_mean import TrimmedMean
from agent.learning.merging import merge_round
from agent.learning.modes import TrainingMode
from agent.learning.update import ModelUpdate

Vector = list[float]

SHAPES: dict[str, dict[str, tuple[int, ...]]] = {
    "one-tensor": {"stages.0.weight": (5,)},
    "several-tensors": {
        "stages.0.weight": (4, 3),
        "stages.0.bias": (4,),
        "stages.1.weight": (2, 2, 3),
        "heads.0.weight": (3, 4),
    },
    "scalar-and-empty": {"stages.0.scale": (), "stages.0.weight": (3,), "stages.1.unused": (2, 0)},
}
COUNTS = list(range(1, 10))


def random_contributions(
    count: int, shapes: Mapping[str, tuple[int, ...]], seed: int, weighted: bool = True
) -> list[Contribution]:
    generator = torch.Generator().manual_seed(seed)
    return [
        Contribution(
            label=f"peer-{index}",
            deltas={
                name: torch.randn(shape, generator=generator, dtype=torch.float64)
                for name, shape in shapes.items()
            },
            weight=float(torch.randint(1, 100, (1,), generator=generator)) if weighted else 1.0,
        )
        for index in range(count)
    ]


def flat(contribution: Contribution, names: Sequence[str]) -> Vector:
    """One update as a single list of Python floats, tensors in the order of ``names``."""
    values: Vector = []
    for name in names:
        values.extend(float(value) for value in contribution.deltas[name].reshape(-1).tolist())
    return values


def coordinates(contributions: Sequence[Contribution]) -> tuple[list[Vector], list[str]]:
    names = sorted(contributions[0].deltas)
    return [flat(contribution, names) for contribution in contributions], names


# --- naive references, from the papers -------------------------------------------------------------


def reference_weighted_mean(vectors: Sequence[Vector], weights: Sequence[float]) -> Vector:
    """McMahan et al. 2017: sum_k (n_k / n) w_k."""
    total = math.fsum(weights)
    return [
        math.fsum(weight * vector[j] for vector, weight in zip(vectors, weights, strict=True)) / total
        for j in range(len(vectors[0]))
    ]


def reference_median(vectors: Sequence[Vector]) -> Vector:
    """Yin et al. 2018, Definition 1: the coordinate-wise median."""
    return [statistics.median(vector[j] for vector in vectors) for j in range(len(vectors[0]))]


def reference_trimmed_mean(vectors: Sequence[Vector], beta: float) -> Vector:
    """Yin et al. 2018, Definition 2: remove the largest and smallest beta fraction, average the rest."""
    count = len(vectors)
    cut = math.floor(beta * count)
    while count - 2 * cut < 1:  # never trim everything away
        cut -= 1
    result = []
    for j in range(len(vectors[0])):
        kept = sorted(vector[j] for vector in vectors)[cut : count - cut]
        result.append(math.fsum(kept) / len(kept))
    return result


def reference_krum_attackers(count: int, fraction: float) -> int:
    """The largest f <= fraction * n for which Blanchard et al.'s condition n > 2f + 2 holds."""
    attackers = math.floor(fraction * count)
    while attackers > 0 and not count > 2 * attackers + 2:
        attackers -= 1
    return attackers


def reference_multi_krum(
    vectors: Sequence[Vector], weights: Sequence[float], fraction: float, selection: int | None
) -> tuple[list[int], Vector]:
    """Blanchard et al. 2017: score(i) = sum of ||V_i - V_j||^2 over the n - f - 2 closest j; average
    the m lowest scores (ties: the earlier update)."""
    count = len(vectors)
    attackers = reference_krum_attackers(count, fraction)
    closest = max(count - attackers - 2, 1) if count > 1 else 0
    scores = []
    for i in range(count):
        distances = sorted(
            math.fsum((a - b) ** 2 for a, b in zip(vectors[i], vectors[j], strict=True))
            for j in range(count)
            if j != i
        )
        scores.append(math.fsum(distances[:closest]))
    chosen = min(count, selection if selection is not None else count - attackers)
    selected = sorted(sorted(range(count), key=lambda i: (scores[i], i))[:chosen])
    mean = reference_weighted_mean([vectors[i] for i in selected], [weights[i] for i in selected])
    return selected, mean


def reference_norm_bound(
    contributions: Sequence[Contribution], kappa: float
) -> tuple[list[dict[str, Vector]], set[tuple[str, str]]]:
    """Sun et al. 2019: w <- w / max(1, ||w|| / M), with M = kappa x the round's median norm, for each
    group of tensors (the first two parts of a name)."""
    groups: dict[str, list[str]] = {}
    for name in sorted(contributions[0].deltas):
        groups.setdefault(".".join(name.split(".")[:2]), []).append(name)
    result: list[dict[str, Vector]] = [{} for _ in contributions]
    clipped: set[tuple[str, str]] = set()
    for group, names in groups.items():
        vectors = [flat(contribution, names) for contribution in contributions]
        norms = [math.sqrt(math.fsum(value * value for value in vector)) for vector in vectors]
        bound = kappa * statistics.median(norms)
        for index, (vector, norm) in enumerate(zip(vectors, norms, strict=True)):
            factor = 1.0 if norm <= bound else bound / norm
            if factor != 1.0:
                clipped.add((contributions[index].label, group))
            offset = 0
            for name in names:
                size = contributions[index].deltas[name].numel()
                result[index][name] = [value * factor for value in vector[offset : offset + size]]
                offset += size
    return result, clipped


def assert_close(actual: Mapping[str, torch.Tensor], expected: Vector, names: Sequence[str]) -> None:
    values: Vector = []
    for name in names:
        assert actual[name].dtype == torch.float64, f"{name} left float64"
        values.extend(float(value) for value in actual[name].reshape(-1).tolist())
    assert len(values) == len(expected)
    for got, want in zip(values, expected, strict=True):
        assert got == pytest.approx(want, rel=1e-12, abs=1e-14)


# --- each rule against its reference ---------------------------------------------------------------


@pytest.mark.parametrize("shape_name", sorted(SHAPES))
@pytest.mark.parametrize("count", COUNTS)
def test_fedavg_is_the_weighted_mean(shape_name: str, count: int) -> None:
    contributions = random_contributions(count, SHAPES[shape_name], seed=count)
    vectors, names = coordinates(contributions)
    aggregate = FederatedAveraging().aggregate(contributions)
    assert aggregate.decisions == ()
    assert_close(
        aggregate.delta,
        reference_weighted_mean(vectors, [contribution.weight for contribution in contributions]),
        names,
    )


@pytest.mark.parametrize("shape_name", sorted(SHAPES))
@pytest.mark.parametrize("count", COUNTS)
def test_median_is_the_coordinate_wise_median(shape_name: str, count: int) -> None:
    contributions = random_contributions(count, SHAPES[shape_name], seed=10 + count)
    vectors, names = coordinates(contributions)
    aggregate = CoordinateMedian().aggregate(contributions)
    assert aggregate.decisions == ()
    assert_close(aggregate.delta, reference_median(vectors), names)


@pytest.mark.parametrize("beta", [0.0, 0.1, 0.2, 0.3, 0.45])
@pytest.mark.parametrize("shape_name", sorted(SHAPES))
@pytest.mark.parametrize("count", COUNTS)
def test_trimmed_mean_cuts_beta_at_each_end(beta: float, shape_name: str, count: int) -> None:
    contributions = random_contributions(count, SHAPES[shape_name], seed=20 + count)
    vectors, names = coordinates(contributions)
    aggregate = TrimmedMean(beta).aggregate(contributions)
    assert aggregate.decisions == ()
    assert_close(aggregate.delta, reference_trimmed_mean(vectors, beta), names)


@pytest.mark.parametrize(
    ("fraction", "selection"), [(0.3, None), (0.0, None), (0.45, None), (0.3, 1), (0.3, 2)]
)
@pytest.mark.parametrize("shape_name", sorted(SHAPES))
@pytest.mark.parametrize("count", COUNTS)
def test_multi_krum_selects_the_lowest_scores(
    fraction: float, selection: int | None, shape_name: str, count: int
) -> None:
    contributions = random_contributions(count, SHAPES[shape_name], seed=30 + count)
    vectors, names = coordinates(contributions)
    weights = [contribution.weight for contribution in contributions]
    selected, mean = reference_multi_krum(vectors, weights, fraction, selection)
    aggregate = MultiKrum(fraction, selection).aggregate(contributions)
    discarded = {decision.label for decision in aggregate.decisions}
    assert discarded == {contributions[i].label for i in range(count) if i not in selected}
    assert all(
        decision.action == "discarded" and decision.rule == "multi_krum" for decision in aggregate.decisions
    )
    assert_close(aggregate.delta, mean, names)


@pytest.mark.parametrize("kappa", [0.5, 1.0, 1.5, 3.0])
@pytest.mark.parametrize("shape_name", sorted(SHAPES))
@pytest.mark.parametrize("count", COUNTS)
def test_norm_bound_clips_each_group_to_kappa_times_the_median(
    kappa: float, shape_name: str, count: int
) -> None:
    generator = torch.Generator().manual_seed(40 + count)
    contributions = [
        Contribution(
            label=contribution.label,
            # norms spread over two orders of magnitude, so some are clipped at every kappa
            deltas={
                name: delta * float(10 ** (2 * torch.rand(1, generator=generator)))
                for name, delta in contribution.deltas.items()
            },
            weight=contribution.weight,
        )
        for contribution in random_contributions(count, SHAPES[shape_name], seed=40 + count)
    ]
    expected, expected_clipped = reference_norm_bound(contributions, kappa)
    clipped, decisions = bound_norms(contributions, kappa)
    assert [contribution.label for contribution in clipped] == [c.label for c in contributions]
    assert [contribution.weight for contribution in clipped] == [c.weight for c in contributions]
    reported = {(decision.label, decision.detail.split(" ")[0]) for decision in decisions}
    assert reported == expected_clipped
    assert all(decision.action == "clipped" and decision.rule == "norm_bound" for decision in decisions)
    for contribution, reference in zip(clipped, expected, strict=True):
        names = sorted(reference)
        assert_close(contribution.deltas, [value for name in names for value in reference[name]], names)


@pytest.mark.parametrize("count", COUNTS)
@pytest.mark.parametrize("policy", ["claimed", "median_capped", "equal"])
def test_sample_weights_follow_their_policy(policy: str, count: int) -> None:
    generator = torch.Generator().manual_seed(50 + count)
    claims = [int(claim) for claim in torch.randint(1, 10**6, (count,), generator=generator)]
    labels = [f"peer-{index}" for index in range(count)]
    weights, decisions = sample_weights(policy, claims, labels)
    if policy == "claimed":
        expected = [float(claim) for claim in claims]
    elif policy == "equal":
        expected = [1.0] * count
    else:
        cap = statistics.median(claims)
        expected = [float(min(claim, cap)) for claim in claims]
    assert weights == expected
    capped = {label for label, claim, weight in zip(labels, claims, weights, strict=True) if weight < claim}
    assert {decision.label for decision in decisions} == (capped if policy == "median_capped" else set())
    assert all(decision.action == "weight_capped" for decision in decisions)


# --- hand-computed cases ---------------------------------------------------------------------------


def scalar_contributions(
    values: Sequence[float], weights: Sequence[float] | None = None
) -> list[Contribution]:
    return [
        Contribution(
            label=f"peer-{index}",
            deltas={"stages.0.weight": torch.tensor([value], dtype=torch.float64)},
            weight=1.0 if weights is None else weights[index],
        )
        for index, value in enumerate(values)
    ]


def only_value(delta: Mapping[str, torch.Tensor]) -> float:
    return float(delta["stages.0.weight"][0])


def test_trimmed_mean_by_hand() -> None:
    # beta 0.2 of 5 cuts one value at each end: -50 and 100 go, (1 + 2 + 3) / 3 stays
    assert only_value(TrimmedMean(0.2).aggregate(scalar_contributions([1, 2, 3, 100, -50])).delta) == 2.0
    # beta 0.3 of 7 cuts two at each end: (3 + 4 + 5) / 3
    values = [-1000.0, 3.0, 1000.0, 4.0, -999.0, 5.0, 998.0]
    assert only_value(TrimmedMean(0.3).aggregate(scalar_contributions(values)).delta) == 4.0
    # beta 0.3 of 3 cuts nothing (floor(0.9) = 0): the plain mean
    assert only_value(TrimmedMean(0.3).aggregate(scalar_contributions([1, 2, 6])).delta) == 3.0
    # beta 0.45 of 2 would cut both values: at least one pair must stay, so nothing is cut
    assert only_value(TrimmedMean(0.45).aggregate(scalar_contributions([1, 3])).delta) == 2.0


def test_median_by_hand() -> None:
    assert only_value(CoordinateMedian().aggregate(scalar_contributions([1, 2, 3, 100, -50])).delta) == 2.0
    assert only_value(CoordinateMedian().aggregate(scalar_contributions([1, 2, 3, 100])).delta) == 2.5
    # weights do not move an order statistic
    weighted = scalar_contributions([1, 2, 3], weights=[1.0, 1.0, 10**6])
    assert only_value(CoordinateMedian().aggregate(weighted).delta) == 2.0
    # coordinate-wise: each coordinate's median may come from a different update
    mixed = [
        Contribution("a", {"w": torch.tensor([1.0, 30.0], dtype=torch.float64)}, 1.0),
        Contribution("b", {"w": torch.tensor([2.0, 10.0], dtype=torch.float64)}, 1.0),
        Contribution("c", {"w": torch.tensor([3.0, 20.0], dtype=torch.float64)}, 1.0),
    ]
    assert CoordinateMedian().aggregate(mixed).delta["w"].tolist() == [2.0, 20.0]


def cluster_and_outlier() -> list[Contribution]:
    points = [(1.0, 1.0), (1.1, 0.9), (0.9, 1.1), (1.0, 1.3), (100.0, -100.0)]
    return [
        Contribution(f"peer-{index}", {"w": torch.tensor(point, dtype=torch.float64)}, 1.0)
        for index, point in enumerate(points)
    ]


def test_multi_krum_picks_the_cluster() -> None:
    # n = 5, f = floor(1.5) = 1, m = n - f = 4: the four clustered updates, averaged
    aggregate = MultiKrum(0.3, None).aggregate(cluster_and_outlier())
    assert [decision.label for decision in aggregate.decisions] == ["peer-4"]
    assert "f=1" in aggregate.decisions[0].detail
    assert aggregate.delta["w"].tolist() == pytest.approx([1.0, 1.075])
    # m = 1 is Krum itself: the most central point, (1, 1), with score 0.02 + 0.02 (next: 0.02 + 0.05)
    krum = MultiKrum(0.3, 1).aggregate(cluster_and_outlier())
    assert len(krum.decisions) == 4 and "peer-4" in {decision.label for decision in krum.decisions}
    assert krum.delta["w"].tolist() == [1.0, 1.0]


def test_multi_krum_with_too_few_updates_for_its_f_assumes_fewer_attackers() -> None:
    # n = 4, fraction 0.45: floor(1.8) = 1 but Krum needs n > 2f + 2, so f = 0 and every update is kept
    four = cluster_and_outlier()[1:]
    aggregate = MultiKrum(0.45, None).aggregate(four)
    assert aggregate.decisions == ()
    assert aggregate.delta["w"].tolist() == pytest.approx(
        [(1.1 + 0.9 + 1.0 + 100.0) / 4, (0.9 + 1.1 + 1.3 - 100.0) / 4]
    )
    # n = 1 and n = 2: nothing to compare against, nothing discarded
    for count in (1, 2):
        assert MultiKrum(0.45, None).aggregate(four[:count]).decisions == ()
    # a selection above n keeps all n
    assert MultiKrum(0.3, 50).aggregate(four).decisions == ()


def test_norm_bound_clips_a_fifty_times_update_to_kappa_times_the_median() -> None:
    honest = [(1.0, 0.0), (0.0, 1.0), (0.6, 0.8), (-0.8, 0.6)]  # norm 1 each
    attacker = (0.6 * 50, -0.8 * 50)  # norm 50
    contributions = [
        Contribution(f"peer-{index}", {"stages.0.weight": torch.tensor(point, dtype=torch.float64)}, 1.0)
        for index, point in enumerate([*honest, attacker])
    ]
    clipped, decisions = bound_norms(contributions, 3.0)
    assert [decision.label for decision in decisions] == ["peer-4"]
    assert decisions[0].detail.startswith("stages.0 norm 50 > 3 x median 1")
    assert clipped[4].deltas["stages.0.weight"].tolist() == pytest.approx([0.6 * 3, -0.8 * 3])
    for before, after in zip(contributions[:4], clipped[:4], strict=True):
        assert after.deltas["stages.0.weight"] is before.deltas["stages.0.weight"]


def test_norm_bound_bounds_each_tensor_group_apart() -> None:
    # the attacker is huge in stages.1 only: its stages.0 stays untouched
    contributions = [
        Contribution(
            f"peer-{index}",
            {
                "stages.0.weight": torch.tensor([1.0], dtype=torch.float64),
                "stages.1.weight": torch.tensor([1.0], dtype=torch.float64),
                "stages.1.bias": torch.tensor([scale], dtype=torch.float64),
            },
            1.0,
        )
        for index, scale in enumerate([0.0, 0.0, 1000.0])
    ]
    clipped, decisions = bound_norms(contributions, 2.0)
    assert [(decision.label, decision.detail.split(" ")[0]) for decision in decisions] == [
        ("peer-2", "stages.1")
    ]
    assert clipped[2].deltas["stages.0.weight"].tolist() == [1.0]
    norm = math.hypot(
        float(clipped[2].deltas["stages.1.weight"][0]), float(clipped[2].deltas["stages.1.bias"][0])
    )
    assert norm == pytest.approx(2.0)  # 2 x the median norm, 1


def test_median_capped_weights_by_hand() -> None:
    labels = ["a", "b", "c", "d", "e"]
    weights, decisions = sample_weights("median_capped", [10, 20, 30, 10**6, 40], labels)
    assert weights == [10.0, 20.0, 30.0, 30.0, 30.0]
    assert sorted(decision.label for decision in decisions) == ["d", "e"]
    assert all(decision.rule == "sample_weighting" for decision in decisions)
    weights, _ = sample_weights("median_capped", [10, 20, 30, 1000], labels[:4])
    assert weights == [10.0, 20.0, 25.0, 25.0]  # even count: the mean of the middle two
    weights, decisions = sample_weights("median_capped", [7, 7, 7], labels[:3])
    assert weights == [7.0, 7.0, 7.0] and decisions == []


# --- edge cases ------------------------------------------------------------------------------------


def aggregate_with(
    rule_name: str, contributions: Sequence[Contribution]
) -> tuple[dict[str, torch.Tensor], tuple[Decision, ...]]:
    rule = build_rule(AggregationConfig(rule=rule_name))
    aggregate = rule.aggregate(contributions)
    return aggregate.delta, aggregate.decisions


def test_build_rule_builds_the_named_rule_with_its_parameters() -> None:
    assert isinstance(build_rule(AggregationConfig(rule="fedavg")), FederatedAveraging)
    assert isinstance(build_rule(AggregationConfig(rule="median")), CoordinateMedian)
    trimmed = build_rule(AggregationConfig(rule="trimmed_mean", trim_fraction=0.2))
    assert isinstance(trimmed, TrimmedMean) and trimmed.trim_fraction == 0.2
    krum = build_rule(AggregationConfig(rule="multi_krum", assumed_attacker_fraction=0.1, krum_selection=3))
    assert isinstance(krum, MultiKrum) and (krum.attacker_fraction, krum.selection) == (0.1, 3)


@pytest.mark.parametrize("rule_name", RULE_NAMES)
@pytest.mark.parametrize("count", COUNTS)
def test_all_equal_updates_give_that_update(rule_name: str, count: int) -> None:
    value = torch.tensor([0.1, -3.0e-7, 12345.678, 0.0], dtype=torch.float64)
    contributions = [
        Contribution(f"peer-{index}", {"w": value.clone()}, 1.0 + index) for index in range(count)
    ]
    delta, _ = aggregate_with(rule_name, contributions)
    if rule_name == "median":
        assert torch.equal(delta["w"], value)  # an order statistic is one of the values
    else:
        assert delta["w"].tolist() == pytest.approx(value.tolist(), rel=1e-15)
    _, decisions = bound_norms(contributions, 1.0)
    assert decisions == [], "equal norms are never above the median"


def sign_bits(tensor: torch.Tensor) -> list[bool]:
    return [math.copysign(1.0, value) < 0 for value in tensor.reshape(-1).tolist()]


@pytest.mark.parametrize("rule_name", ["median", "trimmed_mean"])
def test_signed_zeros_become_positive_zero_whatever_their_order(rule_name: str) -> None:
    # -0.0 == +0.0 for any comparison, so which one a sort puts first could differ between machines:
    # the sorting network makes every zero +0.0 before it compares, in every order of the inputs.
    for values in (
        [-0.0, 0.0, 0.0],
        [0.0, -0.0, -0.0],
        [-0.0, 0.0],
        [0.0, -0.0, 0.0, -0.0, -0.0],
        [-0.0] * 3,
    ):
        delta, _ = aggregate_with(rule_name, scalar_contributions(values))
        got = float(delta["stages.0.weight"][0])
        assert struct.pack("<d", got) == struct.pack("<d", 0.0), f"{values}: {got!r} is not +0.0"


@pytest.mark.parametrize("rule_name", RULE_NAMES)
def test_rules_do_not_mutate_their_inputs(rule_name: str) -> None:
    contributions = random_contributions(7, SHAPES["several-tensors"], seed=60)
    contributions[3] = Contribution(
        "peer-3", {name: delta * 1000 for name, delta in contributions[3].deltas.items()}, 10**6
    )
    copies = [{name: delta.clone() for name, delta in c.deltas.items()} for c in contributions]
    _, _ = aggregate_with(rule_name, contributions)
    clipped, _ = bound_norms(contributions, 1.0)
    clipped_rule = build_rule(AggregationConfig(rule=rule_name)).aggregate(clipped)
    for delta in clipped_rule.delta.values():
        delta.add_(1.0)  # a caller that changes the result in place must not reach back into the inputs
    for contribution, copy in zip(contributions, copies, strict=True):
        for name, delta in contribution.deltas.items():
            assert torch.equal(delta, copy[name]), f"{rule_name} changed {contribution.label}'s {name}"
    assert contributions[3].weight == 10**6


# --- the whole pipeline, as every peer runs it -----------------------------------------------------


def reference_pipeline(
    global_state: Mapping[str, torch.Tensor],
    updates: Sequence[tuple[str, int, dict[str, torch.Tensor]]],
    config: AggregationConfig,
) -> dict[str, Vector]:
    """Claims -> weights, then the norm bound, then the rule, each from its reference above."""
    claims = [claim for _, claim, _ in updates]
    if config.sample_weighting == "equal":
        weights = [1.0] * len(claims)
    elif config.sample_weighting == "claimed":
        weights = [float(claim) for claim in claims]
    else:
        weights = [float(min(claim, statistics.median(claims))) for claim in claims]
    contributions = [
        Contribution(label, {name: delta.double() for name, delta in deltas.items()}, weight)
        for (label, _, deltas), weight in zip(updates, weights, strict=True)
    ]
    if config.norm_bound is not None:
        clipped, _ = reference_norm_bound(contributions, config.norm_bound)
        contributions = [
            Contribution(
                c.label,
                {name: torch.tensor(values, dtype=torch.float64) for name, values in vectors.items()},
                c.weight,
            )
            for c, vectors in zip(contributions, clipped, strict=True)
        ]
    vectors, names = coordinates(contributions)
    if config.rule == "fedavg":
        delta = reference_weighted_mean(vectors, weights)
    elif config.rule == "median":
        delta = reference_median(vectors)
    elif config.rule == "trimmed_mean":
        delta = reference_trimmed_mean(vectors, config.trim_fraction)
    else:
        _, delta = reference_multi_krum(
            vectors, weights, config.assumed_attacker_fraction, config.krum_selection
        )
    result: dict[str, Vector] = {}
    offset = 0
    for name in names:
        size = global_state[name].numel()
        base = [float(value) for value in global_state[name].reshape(-1).tolist()]
        result[name] = [b + d for b, d in zip(base, delta[offset : offset + size], strict=True)]
        offset += size
    return result


@pytest.mark.parametrize("weighting", ["claimed", "median_capped", "equal"])
@pytest.mark.parametrize("norm_bound", [None, 2.0])
@pytest.mark.parametrize("rule", RULE_NAMES)
@pytest.mark.parametrize("count", [1, 4, 7])
def test_merge_round_is_weights_then_norm_bound_then_the_rule(
    rule: str, norm_bound: float | None, weighting: str, count: int
) -> None:
    config = AggregationConfig(rule=rule, norm_bound=norm_bound, sample_weighting=weighting)
    generator = torch.Generator().manual_seed(80 + count)
    shapes = SHAPES["several-tensors"]
    global_state = {name: torch.randn(shape, generator=generator) for name, shape in shapes.items()}
    updates = []
    for index in range(count):
        scale = 30.0 if index == count - 1 and count > 2 else 1.0  # one outlier, for the bound and Krum
        deltas = {name: torch.randn(shape, generator=generator) * scale for name, shape in shapes.items()}
        updates.append((f"peer-{index}", int(torch.randint(1, 1000, (1,), generator=generator)), deltas))
    merged = merge_round(
        global_state,
        [(label, ModelUpdate(TrainingMode.LAYER_WISE, 1, claim, deltas)) for label, claim, deltas in updates],
        config,
    ).state
    expected = reference_pipeline(global_state, updates, config)
    for name, values in expected.items():
        assert merged[name].dtype == torch.float32
        assert merged[name].reshape(-1).tolist() == pytest.approx(values, rel=1e-6, abs=1e-6), name
