"""NT-Xent as wired into training, checked against a reference written from the SimCLR paper."""

from __future__ import annotations

import math

import pytest
import torch
from torch.nn import functional

from agent.learning.training import contrastive_loss


def naive_nt_xent(first: torch.Tensor, second: torch.Tensor, temperature: float) -> float:
    """Algorithm 1 of Chen et al. (2020), loop by loop: l(i, j) averaged over all 2N anchors."""
    views = [functional.normalize(row, dim=0) for row in torch.cat([first, second])]
    count = len(first)
    total = 0.0
    for anchor in range(2 * count):
        positive = (anchor + count) % (2 * count)
        numerator = math.exp(float(views[anchor] @ views[positive]) / temperature)
        denominator = sum(
            math.exp(float(views[anchor] @ views[other]) / temperature)
            for other in range(2 * count)
            if other != anchor
        )
        total += -math.log(numerator / denominator)
    return total / (2 * count)


@pytest.mark.parametrize(("batch", "dimension", "temperature"), [(2, 3, 0.5), (8, 16, 0.1), (5, 128, 1.0)])
def test_loss_matches_the_papers_definition(batch: int, dimension: int, temperature: float) -> None:
    generator = torch.Generator().manual_seed(batch * dimension)
    first = torch.randn(batch, dimension, generator=generator, dtype=torch.float64)
    second = torch.randn(batch, dimension, generator=generator, dtype=torch.float64)
    loss = contrastive_loss(temperature)(first, second)
    assert float(loss) == pytest.approx(naive_nt_xent(first, second, temperature), rel=1e-6)


def test_identical_orthogonal_views_reach_the_analytic_minimum() -> None:
    # Positive similarity 1, all negatives 0 except the anchor's own copy is excluded:
    # loss = -log(e^(1/T) / (e^(1/T) + (2N - 2) * e^0)).
    temperature, batch = 0.5, 4
    views = torch.eye(batch, 8, dtype=torch.float64)
    expected = -math.log(math.exp(1 / temperature) / (math.exp(1 / temperature) + 2 * batch - 2))
    assert float(contrastive_loss(temperature)(views, views)) == pytest.approx(expected, rel=1e-9)
