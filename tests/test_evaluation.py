"""The evaluation protocols against references: kNN against lightly's ``knn_predict`` and a naive loop
written from Wu et al. (2018), the linear probe on synthetic data whose answer is known."""

from __future__ import annotations

import math

import pytest
import torch
from lightly.utils.benchmarking import knn_predict
from torch.nn import functional

from agent.learning.evaluation import evaluate, extract_features, knn_accuracy, linear_probe_accuracy
from models.spec import EncoderSpec
from models.staged_model import StagedModel


def clustered(
    classes: int, per_class: int, dimension: int, spread: float, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Gaussian clusters around random centres: features [classes * per_class, dimension] and labels."""
    generator = torch.Generator().manual_seed(seed)
    centres = torch.randn(classes, dimension, generator=generator) * 3
    labels = torch.arange(classes).repeat_interleave(per_class)
    features = centres[labels] + spread * torch.randn(len(labels), dimension, generator=generator)
    return features, labels


def naive_knn_accuracy(
    train: torch.Tensor,
    train_labels: torch.Tensor,
    test: torch.Tensor,
    test_labels: torch.Tensor,
    k: int,
    t: float,
) -> float:
    """One test sample at a time: the k most cosine-similar training samples vote exp(similarity / t)."""
    correct = 0
    for feature, label in zip(test.tolist(), test_labels.tolist(), strict=True):
        similarities = []
        for index, other in enumerate(train.tolist()):
            dot = sum(a * b for a, b in zip(feature, other, strict=True))
            norms = math.sqrt(sum(a * a for a in feature)) * math.sqrt(sum(b * b for b in other))
            similarities.append((dot / norms, index))
        nearest = sorted(similarities, key=lambda item: -item[0])[:k]
        votes: dict[int, float] = {}
        for similarity, index in nearest:
            neighbour_label = int(train_labels[index])
            votes[neighbour_label] = votes.get(neighbour_label, 0.0) + math.exp(similarity / t)
        correct += max(votes, key=lambda key: votes[key]) == label
    return correct / len(test_labels)


@pytest.mark.parametrize(
    ("neighbours", "temperature", "spread"), [(1, 0.07, 2.0), (5, 0.1, 3.0), (20, 0.5, 4.0)]
)
def test_knn_matches_a_naive_loop(neighbours: int, temperature: float, spread: float) -> None:
    train, train_labels = clustered(4, 20, 6, spread, seed=1)
    test, test_labels = clustered(4, 8, 6, spread, seed=1)  # same centres, fresh noise below
    test = test + spread * torch.randn(test.shape, generator=torch.Generator().manual_seed(2))
    expected = naive_knn_accuracy(train, train_labels, test, test_labels, neighbours, temperature)
    measured = knn_accuracy(train, train_labels, test, test_labels, neighbours, temperature)
    assert measured == pytest.approx(expected)
    assert 0.25 < measured < 1.0  # overlapping clusters: the vote decides, neither chance nor trivial


def test_knn_agrees_with_lightly_knn_predict() -> None:
    train, train_labels = clustered(10, 30, 16, 3.0, seed=3)
    test, test_labels = clustered(10, 10, 16, 3.0, seed=3)
    test = test + 3.0 * torch.randn(test.shape, generator=torch.Generator().manual_seed(4))
    predicted = knn_predict(
        functional.normalize(test, dim=1),
        functional.normalize(train, dim=1).T,
        train_labels,
        num_classes=10,
        knn_k=20,
        knn_t=0.07,
    )[:, 0]
    expected = float((predicted == test_labels).float().mean())
    assert knn_accuracy(
        train, train_labels, test, test_labels, neighbours=20, temperature=0.07
    ) == pytest.approx(expected)


def test_the_linear_probe_separates_separable_classes_and_not_random_labels() -> None:
    features, labels = clustered(5, 60, 8, 0.3, seed=5)
    permutation = torch.randperm(len(labels), generator=torch.Generator().manual_seed(6))
    features, labels = features[permutation], labels[permutation]
    train, test = slice(0, 200), slice(200, 300)
    assert linear_probe_accuracy(features[train], labels[train], features[test], labels[test]) == 1.0
    shuffled = labels[torch.randperm(len(labels), generator=torch.Generator().manual_seed(7))]
    chance = linear_probe_accuracy(features[train], shuffled[train], features[test], shuffled[test])
    assert chance < 0.45  # 5 classes: 0.2 expected; 100 test samples put 0.45 far in the tail


def test_the_linear_probe_finds_a_linear_rule_that_no_single_feature_shows() -> None:
    """Label = sign of a random direction in 20 dimensions: linear, but spread over every feature."""
    generator = torch.Generator().manual_seed(8)
    features = torch.randn(600, 20, generator=generator)
    direction = torch.randn(20, generator=generator)
    labels = (features @ direction > 0).long()
    accuracy = linear_probe_accuracy(features[:400], labels[:400], features[400:], labels[400:])
    assert accuracy > 0.95


def test_broken_features_give_chance_not_a_crash() -> None:
    features, labels = clustered(3, 20, 4, 0.1, seed=9)
    broken = torch.full_like(features, float("nan"))
    assert linear_probe_accuracy(broken, labels, broken, labels) <= 0.5
    assert knn_accuracy(broken, labels, broken, labels) <= 0.5


def test_evaluate_reads_features_out_after_the_requested_stage() -> None:
    spec = EncoderSpec(architecture="resnet", stages=2, widths=(4, 8))
    model = StagedModel(spec, 0)
    images = torch.randint(
        0, 256, (12, 1, 28, 28), dtype=torch.uint8, generator=torch.Generator().manual_seed(1)
    )
    assert extract_features(model, images, 1).shape == (12, 4)
    assert extract_features(model, images, 2, batch_size=5).shape == (12, 8)
    labels = torch.arange(12) % 2
    result = evaluate(
        {name: tensor for name, tensor in model.state_dict().items() if tensor.is_floating_point()},
        spec,
        0,
        2,
        images,
        labels,
        images,
        labels,
    )
    assert 0.0 <= result.linear_probe_accuracy <= 1.0
    assert 0.0 <= result.knn_accuracy <= 1.0
