"""A real IPFS node on 127.0.0.1 for integration tests: fixtures ``ipfs_node`` and ``ipfs_address``.

No kubo binary installs on these machines, so the node is js-ipfs (npm ``ipfs@0.66.1``, installed at the
repository root by ``.ci/run`` through ``npm ci``), which serves the same ``/api/v0`` RPC API. What it
needs, as measured in shared/ENVIRONMENT.md: on Node 20 the ``Promise.withResolvers`` polyfill next to
this file, loaded with ``NODE_OPTIONS=--require``; and ``Addresses.Swarm = []``, without which the API
never comes up.

The node runs once per test session in a temporary ``IPFS_PATH`` and talks to nobody: no swarm listeners,
bootstrap peers, MDNS or preload nodes; its gateway and gRPC listeners are off. ``jsipfs init`` takes
about 2.5 s and the daemon answers about 2.5 s after it starts.
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

REPOSITORY_ROOT = Path(__file__).resolve().parents[2]
JSIPFS = REPOSITORY_ROOT / "node_modules" / ".bin" / "jsipfs"
POLYFILL = Path(__file__).with_name("promise_with_resolvers.js")
START_TIMEOUT_SECONDS = 60.0
STOP_TIMEOUT_SECONDS = 15.0


class IpfsNode:
    """One js-ipfs daemon over one repository; tests may stop and start it again (same port, same data)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.repository = directory / "repository"
        self.port = _free_port()
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        """The RPC API multiaddr, as ``IpfsContentStore`` takes it."""
        return f"/ip4/127.0.0.1/tcp/{self.port}/http"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def initialise(self) -> None:
        config = {
            "Addresses": {
                "API": f"/ip4/127.0.0.1/tcp/{self.port}",
                "Gateway": "",
                "RPC": "",
                "Swarm": [],
                "Delegates": [],
            },
            "Bootstrap": [],
            "Discovery": {"MDNS": {"Enabled": False}, "webRTCStar": {"Enabled": False}},
            "Swarm": {"DisableNatPortMap": True},
        }
        config_file = self.directory / "config.json"
        config_file.write_text(json.dumps(config))
        command = [str(JSIPFS), "init", "--emptyRepo", "--defaultConfig", str(config_file)]
        result = subprocess.run(
            command, env=self._environment(), capture_output=True, timeout=120, check=False
        )
        if result.returncode != 0:
            pytest.fail(f"jsipfs init failed ({result.returncode}):\n{result.stdout!r}\n{result.stderr!r}")

    def start(self) -> None:
        log = (self.directory / "daemon.log").open("ab")
        self._process = subprocess.Popen(
            [str(JSIPFS), "daemon", "--enable-preload=false"],
            env=self._environment(),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()  # the child holds its own copy
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while not self._answers():
            if self._process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                pytest.fail(f"jsipfs daemon did not come up:\n{self._log_tail()}")
            time.sleep(0.1)

    def stop(self) -> None:
        if self._process is None:
            return
        self._process.terminate()
        try:
            self._process.wait(timeout=STOP_TIMEOUT_SECONDS)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        self._process = None

    def _answers(self) -> bool:
        request = urllib.request.Request(f"http://127.0.0.1:{self.port}/api/v0/id", method="POST")
        try:
            with urllib.request.urlopen(request, timeout=2) as response:
                return bool(response.status == 200)
        except (OSError, http.client.HTTPException):  # refused, reset, or not yet speaking HTTP
            return False

    def _environment(self) -> dict[str, str]:
        node_options = f"{os.environ.get('NODE_OPTIONS', '')} --require {POLYFILL}".strip()
        return {**os.environ, "IPFS_PATH": str(self.repository), "NODE_OPTIONS": node_options}

    def _log_tail(self) -> str:
        return (self.directory / "daemon.log").read_text(errors="replace")[-4000:]


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@pytest.fixture(scope="session")
def ipfs_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[IpfsNode]:
    """Start one js-ipfs daemon for the session; fail (never skip) when it is not installed."""
    if not JSIPFS.exists() or shutil.which("node") is None:
        pytest.fail(
            f"js-ipfs is not installed ({JSIPFS} or `node` missing): run .ci/run, whose `npm ci` at the "
            f"repository root installs it from package.json"
        )
    node = IpfsNode(tmp_path_factory.mktemp("ipfs"))
    node.initialise()
    node.start()
    yield node
    node.stop()


@pytest.fixture
def ipfs_address(ipfs_node: IpfsNode) -> str:
    """The RPC multiaddr of the session's node, started again first if a test left it stopped."""
    if not ipfs_node.running:
        ipfs_node.start()
    return ipfs_node.address
