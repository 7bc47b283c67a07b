"""Loopback ports for tests that need a service to be absent."""

from __future__ import annotations

import socket
from pathlib import Path


def closed_port() -> int:
    """A loopback port nothing listens on (bound, read, released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


CONTRACT = "0x5FbDB2315678afecb367f032d93F642f64180aa3"
"""A contract address for configurations whose chain is never reached."""


def write_config(directory: Path, extra_agent_lines: str = "", chain_url: str = "") -> Path:
    """An agent configuration in ``directory`` whose chain and broker are closed loopback ports."""
    path = directory / "agent.toml"
    path.write_text(
        f"""
[federation]
contract = "{CONTRACT}"
chain_url = "{chain_url or f"http://127.0.0.1:{closed_port()}"}"

[broker]
port = {closed_port()}

[agent]
key_file = "{directory / "key"}"
state_directory = "{directory / "state"}"
{extra_agent_lines}
"""
    )
    (directory / "state").mkdir(exist_ok=True)
    return path
