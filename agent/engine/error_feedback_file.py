"""The device's error-feedback residual, kept in the state directory across stops and power cuts.

With top-k compression (:mod:`agent.learning.compression`) a device keeps what it did not send and adds
it to its next update: that residual is its own progress, so losing it on a restart would silently drop
training. ``error-feedback.safetensors`` holds, for the last round the device compressed an update in,
the residual it started from (``input/NAME``) and the one it left (``output/NAME``), with the round
number. Compressing round r again after a crash (before the update was recorded) starts from round r's
input and so gives the same bytes; a later round starts from the output. The file is written atomically
before the update is pinned, so a power cut leaves the previous residual or the new one, never part.
"""

from __future__ import annotations

import logging
from pathlib import Path

from agent.atomic_file import write_atomically
from agent.errors import UpdateRejectedError
from agent.learning.compression import CompressionConfig, compress_update
from agent.learning.compression.error_feedback import Residual
from agent.learning.model_state import decode_tensors, encode_tensors
from agent.learning.update import ModelUpdate

logger = logging.getLogger(__name__)

ERROR_FEEDBACK_FILE = "error-feedback.safetensors"
INPUT_PREFIX = "input/"
OUTPUT_PREFIX = "output/"


class ErrorFeedbackFile:
    """Compresses the device's updates as the recipe says, keeping the residual in ``directory``."""

    def __init__(self, directory: Path) -> None:
        self.path = directory / ERROR_FEEDBACK_FILE
        directory.mkdir(parents=True, exist_ok=True)

    def compress(self, round_number: int, update: ModelUpdate, config: CompressionConfig) -> bytes:
        """The payload to pin for ``round_number``; the residual is saved first (top-k with feedback)."""
        if not config.keeps_residual:
            return compress_update(update, config).payload
        residual = self._residual_for(round_number)
        compressed = compress_update(update, config, residual)
        tensors = {INPUT_PREFIX + name: tensor for name, tensor in residual.items()}
        tensors |= {OUTPUT_PREFIX + name: tensor for name, tensor in compressed.residual.items()}
        write_atomically(self.path, encode_tensors(tensors, {"round": str(round_number)}))
        return compressed.payload

    def _residual_for(self, round_number: int) -> Residual:
        try:
            payload = self.path.read_bytes()
        except FileNotFoundError:
            return {}
        try:
            tensors, metadata = decode_tensors(payload)
            saved_round = int(metadata["round"])
        except (UpdateRejectedError, KeyError, ValueError) as error:
            # Losing the residual costs a little progress, never correctness: start again from zero.
            logger.warning("ignoring the unreadable error-feedback residual %s: %s", self.path, error)
            return {}
        if saved_round > round_number:
            logger.warning(
                "error-feedback residual is from round %d, after round %d: starting from zero",
                saved_round,
                round_number,
            )
            return {}
        prefix = INPUT_PREFIX if saved_round == round_number else OUTPUT_PREFIX
        return {
            name.removeprefix(prefix): tensor for name, tensor in tensors.items() if name.startswith(prefix)
        }
