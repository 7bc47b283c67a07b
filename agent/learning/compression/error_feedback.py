"""Error feedback for top-k: what a device did not send is added to its next update.

Top-k alone drops the same small coordinates round after round, and their sum never reaches the model;
keeping the residual ``corrected - decoded`` and adding it to the next delta makes every coordinate
arrive eventually (Stich, Cordonnier and Jaggi, 2018, "Sparsified SGD with memory"). The residual is the
device's own progress: the engine keeps it in the state directory across restarts
(:mod:`agent.engine.error_feedback_file`); here it is plain tensors and arithmetic.

A residual entry is used only for a tensor of the same name and shape: when the stage changes, the
layer-wise mode exchanges other tensors, and what was left of the finished stage is dropped with it.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

Residual = dict[str, torch.Tensor]


def corrected_deltas(deltas: Mapping[str, torch.Tensor], residual: Mapping[str, torch.Tensor]) -> Residual:
    """``delta + residual`` per tensor (float32), where the residual has a matching tensor."""
    corrected: Residual = {}
    for name, delta in deltas.items():
        carried = residual.get(name)
        if carried is not None and carried.shape == delta.shape and carried.dtype == torch.float32:
            corrected[name] = delta.to(torch.float32) + carried
        else:
            corrected[name] = delta.to(torch.float32)
    return corrected


def next_residual(corrected: Mapping[str, torch.Tensor], decoded: Mapping[str, torch.Tensor]) -> Residual:
    """What the payload did not carry: ``corrected - decoded``, per tensor."""
    return {name: corrected[name] - decoded[name] for name in sorted(corrected)}
