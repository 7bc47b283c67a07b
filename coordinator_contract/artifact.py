"""The compiled Coordinator contract, read from the artifact that ships inside the package.

The artifact is committed (``coordinator_contract/build.py`` writes it), so that an edge device can deploy or
talk to the contract without Node.js or a Solidity compiler. A test recompiles the source and fails when the
artifact no longer matches it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources
from typing import Any

__all__ = ["ContractArtifact", "load_artifact"]

ARTIFACT_PATH = "artifacts/Coordinator.json"
SOURCE_PATH = "Coordinator.sol"


@dataclass(frozen=True)
class ContractArtifact:
    """What deploying and calling the contract needs, and what it was built from."""

    abi: list[dict[str, Any]]
    bytecode: str  # 0x-prefixed creation code
    solc_version: str
    source_sha256: str  # of Coordinator.sol when the artifact was built


def load_artifact() -> ContractArtifact:
    """Read the packaged artifact (a fresh copy each call: callers may not share mutable ABI lists)."""
    text = resources.files("coordinator_contract").joinpath(ARTIFACT_PATH).read_text(encoding="utf-8")
    data = json.loads(text)
    return ContractArtifact(
        abi=data["abi"],
        bytecode=data["bytecode"],
        solc_version=data["solc_version"],
        source_sha256=data["source_sha256"],
    )
