"""How good are the learned features: linear-probe and kNN accuracy on frozen features.

Both are the standard SSL protocols (SimCLR's linear evaluation; the weighted kNN monitor of Wu et al.,
2018). Labels are used here and in partitioning only, never in training.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch.nn import functional

from models.augmentation import prepare_for_evaluation
from models.spec import EncoderSpec
from models.staged_model import StagedModel


@dataclass(frozen=True)
class Evaluation:
    linear_probe_accuracy: float
    knn_accuracy: float


@torch.no_grad()
def extract_features(
    model: StagedModel, images: torch.Tensor, through_stage: int, batch_size: int = 512
) -> torch.Tensor:
    """Pooled features [N, D] of uint8 images, model in eval mode."""
    model.eval()
    chunks = [
        model.features(
            prepare_for_evaluation(images[start : start + batch_size]),
            through_stage,
        )
        for start in range(0, len(images), batch_size)
    ]
    return torch.cat(chunks)


def usable_features(features: torch.Tensor) -> torch.Tensor:
    """float64 features with NaN and infinities set to 0.

    A federation an attacker destroyed yields NaN or astronomically large features; evaluating them must
    report the damage (chance-level accuracy), not crash the benchmark: float64 keeps huge finite values
    from overflowing in the probe's standardisation, and zeros carry no class information.
    """
    return torch.nan_to_num(features.to(torch.float64), nan=0.0, posinf=0.0, neginf=0.0)


def linear_probe_accuracy(
    train_features: torch.Tensor,
    train_labels: torch.Tensor,
    test_features: torch.Tensor,
    test_labels: torch.Tensor,
    iterations: int = 100,
    weight_decay: float = 1e-4,
) -> float:
    """Multinomial logistic regression on standardised features, fitted with L-BFGS; test accuracy."""
    train_features, test_features = usable_features(train_features), usable_features(test_features)
    mean = train_features.mean(dim=0, keepdim=True)
    scale = train_features.std(dim=0, keepdim=True).clamp_min(1e-6)
    train_standard = ((train_features - mean) / scale).to(torch.float32)
    test_standard = ((test_features - mean) / scale).to(torch.float32)
    classes = int(max(train_labels.max(), test_labels.max())) + 1
    weights = torch.zeros(train_standard.shape[1], classes, requires_grad=True)
    bias = torch.zeros(classes, requires_grad=True)
    optimizer = torch.optim.LBFGS([weights, bias], max_iter=iterations, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        logits = train_standard @ weights + bias
        loss = functional.cross_entropy(logits, train_labels) + weight_decay * weights.square().sum()
        loss.backward()  # type: ignore[no-untyped-call]
        return loss

    optimizer.step(closure)  # type: ignore[no-untyped-call]
    with torch.no_grad():
        predictions = (test_standard @ weights + bias).argmax(dim=1)
    return float((predictions == test_labels).float().mean())


def knn_accuracy(
    train_features: torch.Tensor,
    train_labels: torch.Tensor,
    test_features: torch.Tensor,
    test_labels: torch.Tensor,
    neighbours: int = 20,
    temperature: float = 0.07,
) -> float:
    """Weighted kNN on cosine similarity: each of the k nearest votes with weight exp(similarity / T)."""
    train_normal = functional.normalize(usable_features(train_features), dim=1).to(torch.float32)
    test_normal = functional.normalize(usable_features(test_features), dim=1).to(torch.float32)
    classes = int(max(train_labels.max(), test_labels.max())) + 1
    correct = 0
    for start in range(0, len(test_normal), 1024):
        similarity = test_normal[start : start + 1024] @ train_normal.T  # [b, N_train]
        top_similarity, top_index = similarity.topk(min(neighbours, len(train_normal)), dim=1)
        votes = torch.zeros(len(top_index), classes)
        votes.scatter_add_(1, train_labels[top_index], (top_similarity / temperature).exp())
        correct += int((votes.argmax(dim=1) == test_labels[start : start + 1024]).sum())
    return correct / len(test_normal)


def evaluate(
    state: Mapping[str, torch.Tensor],
    spec: EncoderSpec,
    federation_seed: int,
    through_stage: int,
    train_images: torch.Tensor,
    train_labels: torch.Tensor,
    test_images: torch.Tensor,
    test_labels: torch.Tensor,
) -> Evaluation:
    """Linear-probe and kNN test accuracy of the encoder in ``state`` read out after ``through_stage``."""
    model = StagedModel(spec, federation_seed)
    model.load_state_dict(dict(state), strict=False)
    train_features = extract_features(model, train_images, through_stage)
    test_features = extract_features(model, test_images, through_stage)
    return Evaluation(
        linear_probe_accuracy=linear_probe_accuracy(train_features, train_labels, test_features, test_labels),
        knn_accuracy=knn_accuracy(train_features, train_labels, test_features, test_labels),
    )
