"""Compile Coordinator.sol and write ``coordinator_contract/artifacts/Coordinator.json``.

Run from the repository root after changing the contract, then commit the artifact with the source::

    python -m coordinator_contract.build

It needs Node.js and the pinned npm ``solc`` (``npm ci`` at the repository root): ``compile.js`` calls the
compiler's standard-JSON interface with fixed settings, so every machine writes the same bytes.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

__all__ = ["CompilationError", "compile_contract", "render_artifact", "write_artifact"]

PACKAGE_DIRECTORY = Path(__file__).resolve().parent
SOURCE_FILE = PACKAGE_DIRECTORY / "Coordinator.sol"
COMPILE_SCRIPT = PACKAGE_DIRECTORY / "compile.js"
ARTIFACT_FILE = PACKAGE_DIRECTORY / "artifacts" / "Coordinator.json"
COMPILE_TIMEOUT_SECONDS = 300


class CompilationError(RuntimeError):
    """Node.js or the pinned compiler is missing, or the source does not compile cleanly."""


def compile_contract() -> dict[str, Any]:
    """Compile the current source; return the artifact's content (``abi``, ``bytecode``, versions, digest)."""
    try:
        completed = subprocess.run(
            ["node", str(COMPILE_SCRIPT)],
            capture_output=True,
            text=True,
            timeout=COMPILE_TIMEOUT_SECONDS,
            check=False,
        )
    except FileNotFoundError as error:
        raise CompilationError("node is not installed: the contract is compiled with npm solc") from error
    if completed.returncode != 0:
        raise CompilationError(f"compile.js failed (run npm ci at the repository root?):\n{completed.stderr}")
    artifact: dict[str, Any] = json.loads(completed.stdout)
    artifact["source_sha256"] = hashlib.sha256(SOURCE_FILE.read_bytes()).hexdigest()
    return artifact


def render_artifact(artifact: dict[str, Any]) -> str:
    """The artifact as committed: sorted keys, indented, so that a diff shows what changed."""
    return json.dumps(artifact, indent=2, sort_keys=True) + "\n"


def write_artifact() -> Path:
    """Compile and write the artifact; return its path."""
    ARTIFACT_FILE.parent.mkdir(parents=True, exist_ok=True)
    ARTIFACT_FILE.write_text(render_artifact(compile_contract()), encoding="utf-8")
    return ARTIFACT_FILE


def main() -> int:
    try:
        path = write_artifact()
    except CompilationError as error:
        print(error, file=sys.stderr)
        return 1
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
