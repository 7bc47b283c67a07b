"""The ``torch`` backend: today's :func:`agent.learning.training.train_client`, unchanged.

It stays the default because it runs wherever torch does (x86_64 and aarch64: Raspberry Pi, Jetson),
supports every resume guarantee the engine relies on, and is the reference the ``ort`` backend is tested
against.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from agent.learning.backends import TORCH_BACKEND
from agent.learning.training import ClientResult, TrainingConfig, train_client
from agent.learning.training_progress import TrainingHooks


class TorchBackend:
    """Trains with torch eager mode and ``torch.optim.AdamW``."""

    @property
    def name(self) -> str:
        return TORCH_BACKEND

    # Deliberate repetition: the TrainingBackend.train signature, repeated by every backend.
    def train(
        self,
        global_state: Mapping[str, torch.Tensor],
        stage: int,
        images: torch.Tensor,
        config: TrainingConfig,
        seed: int,
        *,
        hooks: TrainingHooks | None = None,
    ) -> ClientResult:
        return train_client(global_state, stage, images, config, seed, hooks=hooks)

    def prepare(self, config: TrainingConfig, stage: int) -> None:
        """Nothing to build: torch runs the model as it is."""
