"""Split one data set across simulated clients, IID or label-skewed (non-IID).

Federated learning is evaluated on both: an IID split is the easy baseline, and a Dirichlet split
(Hsu, Qi and Brown, 2019, "Measuring the Effects of Non-Identical Data Distribution for Federated Visual
Classification") gives each client its own mix of classes, as real devices have. A small ``alpha``
(0.1) gives most clients only a few classes; a large one (100) approaches the IID split.

Every function is deterministic from its ``seed``, so all peers of a simulated federation can compute the
same split independently and each keep only its own shard. The shards are disjoint, cover every
sample, and are returned as sorted ``int64`` index tensors ready for :meth:`ImageDataset.subset`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
import torch

from agent.errors import ConfigurationError

DEFAULT_MAXIMUM_ATTEMPTS = 1000
"""Dirichlet draws to try before concluding the minimum per client is out of reach for this alpha."""


def _require_integer(value: object, name: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
        raise ConfigurationError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _to_index_tensors(shards: Sequence[npt.NDArray[np.int64]]) -> list[torch.Tensor]:
    return [torch.from_numpy(np.sort(shard).astype(np.int64)) for shard in shards]


def partition_iid(sample_count: int, clients: int, seed: int) -> list[torch.Tensor]:
    """Shuffle the sample indices and deal them out in ``clients`` shards whose sizes differ by at most 1.

    Raises:
        ConfigurationError: ``clients`` < 1, ``sample_count`` < ``clients``, or ``seed`` < 0.
    """
    clients = _require_integer(clients, "clients", 1)
    sample_count = _require_integer(sample_count, "sample_count", 0)
    seed = _require_integer(seed, "seed", 0)
    if sample_count < clients:
        raise ConfigurationError(
            f"cannot give {clients} clients at least one sample each from {sample_count} samples"
        )
    permutation = np.random.default_rng(seed).permutation(sample_count).astype(np.int64)
    return _to_index_tensors(np.array_split(permutation, clients))


def partition_dirichlet(
    labels: torch.Tensor | npt.NDArray[np.integer] | Sequence[int],
    clients: int,
    alpha: float,
    seed: int,
    minimum_per_client: int = 1,
    maximum_attempts: int = DEFAULT_MAXIMUM_ATTEMPTS,
) -> list[torch.Tensor]:
    """Give each class's samples to clients in proportions drawn from ``Dirichlet(alpha, ..., alpha)``.

    For every class independently, a proportion vector over the clients is drawn and that class's
    (shuffled) samples are cut accordingly. If some client ends up with fewer than
    ``minimum_per_client`` samples, which small alphas make likely, all proportions are drawn again, up
    to ``maximum_attempts`` times: a client with no data cannot train, and forcing samples onto it would
    bias the distribution that alpha is meant to control.

    Args:
        labels: the class of every sample, shape ``[N]``; used only to decide who gets what.
        clients: number of shards to produce.
        alpha: concentration; smaller is more skewed. Must be positive and finite.
        seed: seeds the one generator behind every draw.
        minimum_per_client: the fewest samples a client may receive.
        maximum_attempts: how many full sets of proportions to draw before giving up.

    Raises:
        ConfigurationError: a bad argument (``clients`` < 1, ``alpha`` <= 0, more clients than samples,
            a minimum that ``clients`` shards cannot all reach), or no draw met the minimum within
            ``maximum_attempts`` (the message suggests what to change).
    """
    clients = _require_integer(clients, "clients", 1)
    seed = _require_integer(seed, "seed", 0)
    minimum_per_client = _require_integer(minimum_per_client, "minimum_per_client", 0)
    maximum_attempts = _require_integer(maximum_attempts, "maximum_attempts", 1)
    if (
        isinstance(alpha, bool)
        or not isinstance(alpha, int | float)
        or not math.isfinite(alpha)
        or alpha <= 0
    ):
        raise ConfigurationError(f"alpha must be a positive finite number, got {alpha!r}")
    label_array = np.asarray(labels.numpy() if isinstance(labels, torch.Tensor) else labels)
    if label_array.ndim != 1 or (label_array.size > 0 and not np.issubdtype(label_array.dtype, np.integer)):
        raise ConfigurationError(f"labels must be a 1-D integer sequence, got shape {label_array.shape}")
    sample_count = int(label_array.shape[0])
    if sample_count < clients:
        raise ConfigurationError(
            f"cannot give {clients} clients at least one sample each from {sample_count} samples"
        )
    if minimum_per_client * clients > sample_count:
        raise ConfigurationError(
            f"minimum_per_client={minimum_per_client} for {clients} clients needs "
            f"{minimum_per_client * clients} samples, only {sample_count} exist"
        )

    generator = np.random.default_rng(seed)
    # Shuffle each class once: which samples of a class a client receives is then random, and each
    # attempt below only redraws how many.
    class_members = [
        generator.permutation(np.flatnonzero(label_array == label)) for label in np.unique(label_array)
    ]
    for _ in range(maximum_attempts):
        counts = np.stack(
            [_dirichlet_counts(generator, members.size, clients, alpha) for members in class_members]
        )
        if int(counts.sum(axis=0).min()) >= minimum_per_client:
            shards: list[list[npt.NDArray[np.int64]]] = [[] for _ in range(clients)]
            for members, class_counts in zip(class_members, counts, strict=True):
                for client, piece in enumerate(np.split(members, np.cumsum(class_counts)[:-1])):
                    shards[client].append(piece)
            return _to_index_tensors([np.concatenate(pieces).astype(np.int64) for pieces in shards])
    raise ConfigurationError(
        f"no Dirichlet(alpha={alpha}) split of {sample_count} samples over {clients} clients gave every "
        f"client at least {minimum_per_client} samples in {maximum_attempts} attempts; raise alpha, lower "
        "minimum_per_client or use fewer clients"
    )


def _dirichlet_counts(
    generator: np.random.Generator, class_size: int, clients: int, alpha: float
) -> npt.NDArray[np.int64]:
    """How many of one class's ``class_size`` samples each client gets, summing to ``class_size``.

    Cut points are the floored cumulative proportions, so rounding never creates or loses a sample.
    """
    proportions = generator.dirichlet(np.full(clients, alpha))
    if not np.all(np.isfinite(proportions)):
        # Extremely small alphas can underflow; fall back to one client taking the whole class.
        proportions = np.zeros(clients)
        proportions[generator.integers(clients)] = 1.0
    cuts = np.floor(np.cumsum(proportions)[:-1] * class_size).astype(np.int64)
    cuts = np.clip(cuts, 0, class_size)
    return np.diff(np.concatenate(([0], cuts, [class_size]))).astype(np.int64)
