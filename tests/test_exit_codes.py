"""Every exit code the README documents, produced through ``agent.cli.main`` by a real path to it.

The table in the README, :data:`agent.errors.EXIT_CODES` and the codes these tests produce are the same
set; a code that nothing produces, or one produced but not documented, fails here.
"""

from __future__ import annotations

import json
import logging
import re
import threading
from pathlib import Path

import pytest

import agent.commands.agent_config
import agent.commands.demo
from agent.benchmark.presets import preset_config
from agent.benchmark.runner import run_worker
from agent.cli import main
from agent.commands.demo import DemoReport, PeerReport
from agent.engine.round_engine import RoundEngine
from agent.engine.statistics import EngineStatistics
from agent.errors import (
    EXIT_BUG,
    EXIT_CODES,
    EXIT_CONFIGURATION,
    EXIT_INTERRUPTED,
    EXIT_NOT_RUNNING,
    EXIT_REJECTED,
    EXIT_SUCCESS,
    EXIT_TRANSIENT,
    EXIT_UNAVAILABLE,
    ContentMismatchError,
    ContractRevertError,
    LedgerError,
    NetworkError,
    RejectedInputError,
    WorkerFailedError,
)
from tests.services.loopback import CONTRACT, closed_port, write_config

ROOT = Path(__file__).resolve().parent.parent


def demo_report(*cids: str) -> DemoReport:
    statistics = EngineStatistics().snapshot()
    return DemoReport(
        peers=[PeerReport(f"0x{index:040x}", cid, statistics) for index, cid in enumerate(cids)],
        rounds_finalized=[],
        linear_probe_accuracy=0.5,
        knn_accuracy=0.5,
        training_seconds=1.0,
        protocol_seconds=0.1,
        wall_seconds=1.1,
        contract_address=CONTRACT,
    )


def test_the_readme_table_is_the_documented_set() -> None:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("Exit codes, and what systemd does with them", 1)[1].split("\n\n", 2)[1]
    codes = {int(match) for match in re.findall(r"^\| (\d+) \|", section, flags=re.MULTILINE)}
    assert codes == set(EXIT_CODES)
    assert set(PRODUCED) == set(EXIT_CODES)


# ------------------------------------------------------------------------------------------ 0 and 3


def test_success_is_zero(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["agent", "init-key", "--key-file", str(tmp_path / "key")]) == EXIT_SUCCESS
    assert capsys.readouterr().out.startswith("0x")


def test_status_of_a_stopped_agent_is_not_running(tmp_path: Path) -> None:
    assert main(["status", "--config", str(write_config(tmp_path))]) == EXIT_NOT_RUNNING


# ---------------------------------------------------------------------------------------------- 65


def test_a_corrupt_data_set_is_rejected_data(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "train-images-idx3-ubyte.gz").write_bytes(b"not gzip")
    (tmp_path / "train-labels-idx1-ubyte.gz").write_bytes(b"not gzip")
    assert main(["demo", "--preset", "smoke", "--data", str(tmp_path)]) == EXIT_REJECTED
    assert str(tmp_path) in capsys.readouterr().err


def test_permanent_failures_are_not_network_errors() -> None:
    """What retry loops catch (NetworkError) never includes what trying again cannot fix."""
    for permanent in (ContentMismatchError, ContractRevertError):
        assert issubclass(permanent, RejectedInputError) and not issubclass(permanent, NetworkError)
        assert permanent.exit_code == EXIT_REJECTED
    assert LedgerError.exit_code == EXIT_TRANSIENT


# ---------------------------------------------------------------------------------------------- 69


def test_an_uninstalled_backend_is_unavailable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(
        agent.commands.agent_config, "unavailable_reason", lambda name: f"{name} is not installed here"
    )
    config = write_config(tmp_path, 'backend = "ort"')
    assert main(["agent", "run", "--config", str(config)]) == EXIT_UNAVAILABLE
    assert "agent.backend" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------- 70


def test_an_unexpected_exception_is_a_bug_with_its_traceback(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(**_arguments: object) -> DemoReport:
        raise RuntimeError("an unforeseen state")

    monkeypatch.setattr(agent.commands.demo, "run_demo", broken)
    with caplog.at_level(logging.ERROR):
        assert main(["demo"]) == EXIT_BUG
    (record,) = [record for record in caplog.records if record.name == "layerfed"]
    assert record.exc_info is not None and "an unforeseen state" in str(record.exc_info[1])


def test_demo_peers_that_disagree_are_a_bug(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(agent.commands.demo, "run_demo", lambda **_arguments: demo_report("bafyA", "bafyB"))
    assert main(["demo"]) == EXIT_BUG
    captured = capsys.readouterr()
    assert "all peers ended with the same model: NO" in captured.out
    assert "different models" in captured.err
    monkeypatch.setattr(agent.commands.demo, "run_demo", lambda **_arguments: demo_report("bafyA", "bafyA"))
    assert main(["demo"]) == EXIT_SUCCESS


def test_a_crashed_demo_peer_ends_the_demo_with_its_own_code(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Not 78 (a configuration mistake): the peer's error decides, here a chain that went away (75)."""

    def chain_gone(self: RoundEngine, stop: threading.Event | None = None) -> str:
        raise LedgerError("the chain went away")

    monkeypatch.setattr(RoundEngine, "run", chain_gone)
    assert main(["demo", "--preset", "smoke", "--peers", "2"]) == EXIT_TRANSIENT
    assert "peer 0 failed: the chain went away" in capsys.readouterr().err


def test_a_worker_keeps_its_documented_code_and_anything_else_is_a_bug() -> None:
    assert WorkerFailedError("job", EXIT_CONFIGURATION).exit_code == EXIT_CONFIGURATION
    assert WorkerFailedError("job", EXIT_UNAVAILABLE).exit_code == EXIT_UNAVAILABLE
    for undocumented in (1, 2, -9, 137, EXIT_SUCCESS, EXIT_NOT_RUNNING):
        assert WorkerFailedError("job", undocumented).exit_code == EXIT_BUG


def test_a_benchmark_worker_code_reaches_the_benchmark(tmp_path: Path) -> None:
    """The worker refuses an unknown job with 78; the runner ends with 78 too, not 70."""
    config = tmp_path / "config.json"
    config.write_text(json.dumps(preset_config("resnet", "smoke").to_dict()))
    with pytest.raises(WorkerFailedError) as failed:
        run_worker(config, "no-such-mode", tmp_path / "out.json")
    assert failed.value.exit_code == EXIT_CONFIGURATION


# ---------------------------------------------------------------------------------------------- 75


def test_an_unreachable_chain_is_transient(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    arguments = ["contract", "deploy", "--chain-url", f"http://127.0.0.1:{closed_port()}", "--quorum", "1"]
    arguments += ["--key-file", str(tmp_path / "key"), "--store-directory", str(tmp_path / "content")]
    assert main(arguments) == EXIT_TRANSIENT
    assert "unreachable" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------- 78


def test_a_chain_url_without_a_scheme_is_a_configuration_mistake(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(tmp_path, chain_url="127.0.0.1:8545")
    assert main(["agent", "run", "--config", str(config)]) == EXIT_CONFIGURATION
    error = capsys.readouterr().err
    assert str(config) in error and "federation.chain_url" in error


def test_a_deploy_chain_url_without_a_scheme_is_a_configuration_mistake(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    arguments = ["contract", "deploy", "--chain-url", "localhost:8545", "--quorum", "1"]
    arguments += ["--key-file", str(tmp_path / "key"), "--store-directory", str(tmp_path / "content")]
    assert main(arguments) == EXIT_CONFIGURATION
    assert "'localhost:8545' is not an http:// or https:// URL" in capsys.readouterr().err


def test_a_bad_command_line_is_a_configuration_mistake(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--peers", "many"]) == EXIT_CONFIGURATION
    assert "invalid int value" in capsys.readouterr().err
    assert main(["no-such-command"]) == EXIT_CONFIGURATION


# --------------------------------------------------------------------------------------------- 130


def test_ctrl_c_is_an_interruption(monkeypatch: pytest.MonkeyPatch) -> None:
    def interrupted(**_arguments: object) -> DemoReport:
        raise KeyboardInterrupt

    monkeypatch.setattr(agent.commands.demo, "run_demo", interrupted)
    assert main(["demo"]) == EXIT_INTERRUPTED


PRODUCED = {
    EXIT_SUCCESS: test_success_is_zero,
    EXIT_NOT_RUNNING: test_status_of_a_stopped_agent_is_not_running,
    EXIT_REJECTED: test_a_corrupt_data_set_is_rejected_data,
    EXIT_UNAVAILABLE: test_an_uninstalled_backend_is_unavailable,
    EXIT_BUG: test_an_unexpected_exception_is_a_bug_with_its_traceback,
    EXIT_TRANSIENT: test_an_unreachable_chain_is_transient,
    EXIT_CONFIGURATION: test_a_chain_url_without_a_scheme_is_a_configuration_mistake,
    EXIT_INTERRUPTED: test_ctrl_c_is_an_interruption,
}
"""Which test above produces each documented code through ``main``."""
