"""Ethereum chains for the ledger tests: anvil on 127.0.0.1, and the embedded (in-process) chain.

Fixtures:

* ``anvil_url``: one anvil process for the session (``node_modules/.bin/anvil``, from the npm package
  ``@foundry-rs/anvil``), its JSON-RPC URL. A missing binary fails the test, never skips it: ``.ci/run``
  installs it with ``npm ci``.
* ``chain``: a :class:`TestChain`, parametrized over ``embedded`` and ``anvil`` (the latter marked
  ``integration``), so that each contract and adapter test runs against both. Chains are shared per
  session: each test deploys its own contract and makes its own funded accounts, so tests stay independent.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from eth_account import Account
from eth_account.signers.local import LocalAccount
from web3 import Web3

from agent.adapters.ethereum_ledger import connect_rpc, create_embedded_chain, fund_embedded_accounts

ANVIL_BINARY = Path(__file__).resolve().parents[2] / "node_modules" / ".bin" / "anvil"
_START_TIMEOUT_SECONDS = 30.0
_STOP_TIMEOUT_SECONDS = 10.0
_FUNDING_WEI = 10**21


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _signal_group(process: subprocess.Popen[bytes], signal_number: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal_number)


def rpc(url: str, method: str, params: list[Any]) -> Any:
    """One JSON-RPC call with the standard library (for readiness checks and anvil's own methods)."""
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": params}).encode()
    request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=5) as response:
        answer = json.loads(response.read())
    if "error" in answer:
        raise RuntimeError(f"{method} failed: {answer['error']}")
    return answer["result"]


class ServiceError(RuntimeError):
    """A service could not be started (the fixtures turn this into a test failure)."""


class AnvilService:
    """One anvil process on a free loopback port; usable from fixtures and from measurement scripts."""

    def __init__(self) -> None:
        if not ANVIL_BINARY.exists():
            raise ServiceError(
                f"anvil is not installed at {ANVIL_BINARY}; `.ci/run` installs it (npm ci at the repository "
                "root installs the npm package @foundry-rs/anvil)"
            )
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start anvil and return once it answers ``eth_chainId``."""
        process = subprocess.Popen(
            [str(ANVIL_BINARY), "--host", "127.0.0.1", "--port", str(self.port), "--silent"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            # The npm command is a node wrapper that spawns the binary: its own group lets stop() end both.
            start_new_session=True,
        )
        self._process = process
        deadline = time.monotonic() + _START_TIMEOUT_SECONDS
        while True:
            if process.poll() is not None:
                error = process.stderr.read().decode(errors="replace") if process.stderr else ""
                self.stop()
                raise ServiceError(f"anvil exited with code {process.returncode}: {error}")
            try:
                rpc(self.url, "eth_chainId", [])
                return
            except (OSError, urllib.error.URLError) as error:
                if time.monotonic() > deadline:
                    self.stop()
                    message = f"anvil did not answer at {self.url} within {_START_TIMEOUT_SECONDS} s"
                    raise ServiceError(message) from error
                time.sleep(0.05)

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        _signal_group(process, signal.SIGTERM)
        try:
            process.wait(timeout=_STOP_TIMEOUT_SECONDS)
        except subprocess.TimeoutExpired:
            _signal_group(process, signal.SIGKILL)
            process.wait()
        if process.stderr is not None:
            process.stderr.close()


@pytest.fixture(scope="session")
def anvil_url() -> Iterator[str]:
    """Start anvil on a free loopback port; yield its URL once it answers ``eth_chainId``."""
    try:
        service = AnvilService()
        service.start()
    except ServiceError as error:
        pytest.fail(str(error))
    try:
        yield service.url
    finally:
        service.stop()


@pytest.fixture
def embedded_web3() -> Web3:
    """A fresh in-process chain per test (0.7 s): eth-tester slows down as its chain grows, so a chain
    shared by a whole session made its later tests minutes long."""
    return create_embedded_chain()


@pytest.fixture(scope="session")
def anvil_web3(anvil_url: str) -> Web3:
    return connect_rpc(anvil_url)


@dataclass
class TestChain:
    """A chain a test can fund accounts on and move the clock of."""

    __test__ = False  # not a test class, whatever its name

    kind: str  # "embedded" or "anvil"
    web3: Web3
    url: str | None = None  # the JSON-RPC URL (anvil only)

    def new_account(self) -> LocalAccount:
        """A fresh account with enough ether for any test."""
        account: LocalAccount = Account.create()
        if self.url is None:
            fund_embedded_accounts(self.web3, [account.address], _FUNDING_WEI)
        else:
            rpc(self.url, "anvil_setBalance", [account.address, hex(_FUNDING_WEI)])
        return account

    def advance_time(self, seconds: int) -> None:
        """Move the chain's clock forward and mine a block there, so that deadlines can pass."""
        if self.url is None:
            tester = self.web3.provider.ethereum_tester  # type: ignore[attr-defined]
            tester.time_travel(tester.get_block_by_number("pending")["timestamp"] + seconds)
        else:
            rpc(self.url, "evm_increaseTime", [seconds])
            rpc(self.url, "evm_mine", [])

    def now(self) -> int:
        """The latest block's timestamp."""
        return int(self.web3.eth.get_block("latest")["timestamp"])


@pytest.fixture(params=["embedded", pytest.param("anvil", marks=pytest.mark.integration)])
def chain(request: pytest.FixtureRequest) -> TestChain:
    if request.param == "embedded":
        return TestChain("embedded", request.getfixturevalue("embedded_web3"))
    return TestChain("anvil", request.getfixturevalue("anvil_web3"), request.getfixturevalue("anvil_url"))
