"""Shared pytest configuration. Service fixtures live in ``tests/services/`` and are registered here."""

from __future__ import annotations

import os

import torch

# Each helper module under tests/services registers its fixtures here.
pytest_plugins: list[str] = ["tests.services.ipfs_node", "tests.services.mosquitto", "tests.services.anvil"]

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
