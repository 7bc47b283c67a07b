"""The ``layerfed`` command: the README's demo command and the error-to-exit-code contract."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from agent.cli import main

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_demo_smoke_every_peer_ends_with_the_same_model(tmp_path: Path) -> None:
    report_file = tmp_path / "demo.json"
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "agent.cli",
            "demo",
            "--preset",
            "smoke",
            "--peers",
            "3",
            "--json",
            str(report_file),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=ROOT,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert "all peers ended with the same model: yes" in completed.stdout
    report = json.loads(report_file.read_text())
    cids = {peer["final_model_cid"] for peer in report["peers"]}
    assert len(report["peers"]) == 3 and len(cids) == 1
    assert [entry["stage"] for entry in report["rounds_finalized"]] == [1, 2]
    assert report["rounds_finalized"][-1]["model_cid"] in cids
    assert 0.0 <= report["linear_probe_accuracy"] <= 1.0
    assert report["training_seconds"] > 0 and report["protocol_seconds"] > 0


def test_a_configuration_mistake_exits_with_the_configuration_code(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "agent.toml"
    config.write_text("[federation]\ncontract = 42\n")
    assert main(["agent", "run", "--config", str(config)]) == 78
    error = capsys.readouterr().err
    assert str(config) in error and "federation.contract" in error


def test_unknown_demo_preset_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--preset", "huge"]) == 78
    assert "unknown demo preset 'huge'" in capsys.readouterr().err


def test_help_lists_every_command(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["--help"])
    assert exited.value.code == 0
    output = capsys.readouterr().out
    for command in ("demo", "bench", "agent", "contract"):
        assert command in output


def _final_cids(stdout: str) -> set[str]:
    return {line.rsplit(" ", 1)[1] for line in stdout.splitlines() if ": final model " in line}


@pytest.mark.slow
def test_two_demo_runs_with_the_same_seed_print_the_same_final_model(tmp_path: Path) -> None:
    """Peer keys, hence training seeds and the contract's address, derive from the federation seed."""
    outputs = []
    for run in range(2):
        completed = subprocess.run(
            [sys.executable, "-m", "agent.cli", "demo", "--seed", "0", "--preset", "smoke", "--peers", "2"],
            capture_output=True,
            text=True,
            timeout=600,
            cwd=ROOT,
            check=False,
        )
        assert completed.returncode == 0, f"run {run}: {completed.stderr[-3000:]}"
        outputs.append(completed.stdout)
    first, second = (_final_cids(output) for output in outputs)
    assert len(first) == 1 and first == second
    probe = [line for line in outputs[0].splitlines() if line.startswith("linear-probe accuracy")]
    assert probe and probe == [line for line in outputs[1].splitlines() if line.startswith("linear-probe")]
