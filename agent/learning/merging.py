"""Sample-weighted FedAvg (McMahan et al., 2017) of updates, deterministic bit for bit.

Every peer merges on its own and must end with identical bytes, whatever order the updates arrived in
and whatever machine it runs on. So: updates are put in a canonical order (by the SHA-256 of their
serialised bytes, which does not depend on who sent them or when), every product and sum is a separate
element-wise float64 operation (no fused multiply-add, no reductions whose order a library may change),
and the result is rounded to float32 once.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence

import torch

from agent.errors import UpdateRejectedError
from agent.learning.model_state import ModelState
from agent.learning.update import ModelUpdate


def canonical_order(updates: Sequence[ModelUpdate]) -> list[ModelUpdate]:
    """Updates sorted by the digest of their bytes: the same set gives the same order everywhere."""
    return sorted(updates, key=lambda update: hashlib.sha256(update.to_bytes()).digest())


def merge_updates(global_state: Mapping[str, torch.Tensor], updates: Sequence[ModelUpdate]) -> ModelState:
    """New global state: ``global + sum(samples_i * delta_i) / sum(samples_i)`` on the exchanged tensors.

    Tensors no update touches are returned unchanged (the same values, bit for bit). All updates must
    hold the same tensor names; validate each against the model first.
    """
    if not updates:
        raise UpdateRejectedError("nothing to merge: no updates")
    ordered = canonical_order(updates)
    names = sorted(ordered[0].deltas)
    for update in ordered[1:]:
        if sorted(update.deltas) != names:
            raise UpdateRejectedError("updates to merge hold different tensors")
    total_samples = float(sum(update.samples for update in ordered))
    merged: ModelState = {name: tensor.clone() for name, tensor in global_state.items()}
    for name in names:
        accumulated = torch.zeros(global_state[name].shape, dtype=torch.float64)
        for update in ordered:
            weighted = update.deltas[name].to(torch.float64) * float(update.samples)
            accumulated = accumulated + weighted
        average = accumulated / total_samples
        merged[name] = (global_state[name].to(torch.float64) + average).to(torch.float32)
    return merged
