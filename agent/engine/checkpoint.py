"""What a peer has done in the current round, kept on disk so a restart neither redoes nor loses work.

The chain is the source of truth for what the federation has seen (who submitted, what was attested);
the checkpoint remembers what only this device knows: the update it trained and pinned but may not have
recorded yet, the model it merged, and whether that model is pinned yet (a peer attests first and pins
after, since the attestation is what finalizes the round: see agent.engine.round_engine). It is written
atomically (temporary file, fsync, rename), so a power cut leaves either the old or the new checkpoint,
never half of one.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

from agent.atomic_file import write_atomically
from agent.errors import ConfigurationError

CHECKPOINT_FILE = "checkpoint.json"


@dataclass(frozen=True)
class Checkpoint:
    """Progress within one round; a new round starts from an empty checkpoint."""

    round_number: int = 0
    base_model_cid: str = ""
    update_cid: str = ""
    update_samples: int = 0
    merged_model_cid: str = ""
    attested: bool = False
    merged_model_pinned: bool = False  # False until the store confirmed the pin (so a restart pins it)

    def for_round(self, round_number: int, base_model_cid: str) -> Checkpoint:
        """This checkpoint if it is about the same round and base model, else a fresh one."""
        if self.round_number == round_number and self.base_model_cid == base_model_cid:
            return self
        return Checkpoint(round_number=round_number, base_model_cid=base_model_cid)

    def with_update(self, cid: str, samples: int) -> Checkpoint:
        return replace(self, update_cid=cid, update_samples=samples)

    def with_merged_model(self, cid: str) -> Checkpoint:
        return replace(self, merged_model_cid=cid)

    def with_attestation(self) -> Checkpoint:
        return replace(self, attested=True)

    def with_pinned_model(self) -> Checkpoint:
        return replace(self, merged_model_pinned=True)

    def without_merged_model(self) -> Checkpoint:
        """The merged model's bytes are lost and cannot be rebuilt: nothing of it is kept, nothing to pin."""
        return replace(self, merged_model_cid="", merged_model_pinned=False)

    @property
    def pin_pending(self) -> bool:
        """Whether the model this device merged and attested still waits for its pin."""
        return self.attested and bool(self.merged_model_cid) and not self.merged_model_pinned


class CheckpointFile:
    """Loads and atomically saves the checkpoint in a state directory."""

    def __init__(self, directory: Path) -> None:
        self.path = directory / CHECKPOINT_FILE
        directory.mkdir(parents=True, exist_ok=True)

    def load(self) -> Checkpoint:
        if not self.path.exists():
            return Checkpoint()
        try:
            values = json.loads(self.path.read_text())
            known = {field.name for field in fields(Checkpoint)}
            return Checkpoint(**{key: value for key, value in values.items() if key in known})
        except (ValueError, TypeError) as exc:
            raise ConfigurationError(
                f"checkpoint {self.path} is unreadable: {exc}; move it away to start over"
            ) from exc

    def save(self, checkpoint: Checkpoint) -> None:
        write_atomically(self.path, json.dumps(asdict(checkpoint), sort_keys=True).encode())
