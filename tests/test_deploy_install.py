"""deploy/install.sh into a temporary --root, and the systemd unit it installs, checked by systemd-analyze.

The installer runs for real, except the pip install: ``--python-from`` links the prefix's ``venv`` to the
virtual environment running these tests (a real pip install of torch takes minutes and gigabytes; the
pip step is the one part this test does not cover). There is no systemd as PID 1 here, and ``--root`` is
set, so the installer must skip useradd and systemctl and say so. Ownership is checked against the user
that runs the tests, passed as ``--user``: as root the installer chowns to it, otherwise it must say that it
did not change owners.
"""

from __future__ import annotations

import hashlib
import os
import pwd
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from agent.cli import main
from agent.commands.agent_config import load_agent_config

ROOT = Path(__file__).resolve().parent.parent
INSTALLER = ROOT / "deploy" / "install.sh"
VENV = Path(sys.executable).parent.parent
USER = pwd.getpwuid(os.geteuid()).pw_name
PREFIX = "/opt/layerfed"


def install(root: Path, *options: str) -> subprocess.CompletedProcess[str]:
    completed = subprocess.run(
        ["bash", str(INSTALLER), "--root", str(root), "--python-from", str(VENV), "--user", USER, *options],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr
    return completed


def snapshot(root: Path) -> dict[str, tuple[int, int, str]]:
    """Every path under ``root``: mode, modification time (ns) and content hash (link target for links)."""
    found = {}
    for path in sorted(root.rglob("*")):
        status = path.lstat()
        if path.is_symlink():
            content = os.readlink(path)
        elif path.is_file():
            content = hashlib.sha256(path.read_bytes()).hexdigest()
        else:
            content = "directory"
        found[str(path.relative_to(root))] = (status.st_mode, status.st_mtime_ns, content)
    return found


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_install_creates_everything_with_the_right_modes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    output = install(tmp_path).stdout
    venv = tmp_path / PREFIX.lstrip("/") / "venv"
    assert venv.is_symlink() and venv.resolve() == VENV.resolve()
    config = tmp_path / "etc/layerfed/agent.toml"
    key = tmp_path / "var/lib/layerfed/key"
    password = tmp_path / "etc/layerfed/mqtt-password"
    unit = tmp_path / "etc/systemd/system/layerfed-agent.service"
    assert (mode(key), mode(config), mode(password), mode(unit)) == (0o600, 0o640, 0o640, 0o644)
    assert mode(tmp_path / "var/lib/layerfed") == 0o750 and mode(tmp_path / "etc/layerfed") == 0o750
    assert os.readlink(tmp_path / "usr/local/bin/layerfed") == f"{PREFIX}/venv/bin/layerfed"
    for path in (key, config, tmp_path / "var/lib/layerfed"):
        assert pwd.getpwuid(path.stat().st_uid).pw_name == USER
    if os.geteuid() != 0:
        assert "not changing owners: not running as root" in output
    assert "not calling systemctl" in output

    # The key is layerfed's own format, and its address is the broker username in the config.
    assert main(["agent", "init-key", "--key-file", str(key)]) == 0
    address = capsys.readouterr().out.strip().lower()
    assert f"device address {address}" in output.lower()
    text = config.read_text()
    assert f'username = "{address}"' in text and 'backend = "torch"' in text
    # Once the placeholder contract is replaced, the installed config passes every check of the agent.
    config.write_text(text.replace("0x" + "0" * 40, "0x5FbDB2315678afecb367f032d93F642f64180aa3"))
    loaded = load_agent_config(config)
    assert loaded.broker.username == address
    assert loaded.broker.password_file == "/etc/layerfed/mqtt-password"
    assert loaded.agent.backend == "torch"
    assert len(password.read_text().strip()) == 24

    unit_text = unit.read_text()
    command = f"{PREFIX}/venv/bin/layerfed --log-level INFO agent run --config /etc/layerfed/agent.toml"
    assert f"ExecStart={command}\n" in unit_text
    assert f"User={USER}\n" in unit_text


def test_a_second_run_changes_nothing_and_keeps_an_edited_config(tmp_path: Path) -> None:
    install(tmp_path)
    config = tmp_path / "etc/layerfed/agent.toml"
    config.write_text(config.read_text() + "\n# edited by the operator\n")
    before = snapshot(tmp_path)
    output = install(tmp_path).stdout
    assert snapshot(tmp_path) == before
    assert "write " not in output and "create " not in output


def test_memory_limit_becomes_a_drop_in_and_a_bad_one_is_refused(tmp_path: Path) -> None:
    install(tmp_path)
    config = tmp_path / "etc/layerfed/agent.toml"
    dropin = tmp_path / "etc/systemd/system/layerfed-agent.service.d/memory.conf"
    assert not dropin.exists()
    config.write_text(config.read_text().replace('# memory_limit = ""', 'memory_limit = "1500M"'))
    install(tmp_path)
    assert "\n[Service]\nMemoryMax=1500M\n" in dropin.read_text()
    config.write_text(config.read_text().replace('memory_limit = "1500M"', 'memory_limit = "1.5 GB"'))
    refused = subprocess.run(
        ["bash", str(INSTALLER), "--root", str(tmp_path), "--python-from", str(VENV), "--user", USER],
        capture_output=True,
        text=True,
        check=False,
    )
    assert refused.returncode == 78
    assert "agent.memory_limit" in refused.stderr and str(config) in refused.stderr


def test_dry_run_writes_nothing(tmp_path: Path) -> None:
    output = install(tmp_path, "--dry-run", "--architecture", "aarch64").stdout
    assert list(tmp_path.iterdir()) == []
    assert "would create the device key" in output
    assert "would write" in output and "etc/systemd/system/layerfed-agent.service" in output
    installed = tmp_path / "installed"
    install(installed)
    before = snapshot(installed)
    install(installed, "--dry-run")
    install(installed, "--uninstall", "--dry-run")
    assert snapshot(installed) == before


def test_the_architecture_picks_the_torch_wheels(tmp_path: Path) -> None:
    def planned(architecture: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["bash", str(INSTALLER), "--root", str(tmp_path), "--dry-run", "--architecture", architecture],
            capture_output=True,
            text=True,
            check=False,
        )

    assert "torch==2.9.1 torchvision==0.24.1" in planned("aarch64").stdout
    assert "torch==2.14.1 torchvision==0.29.1" in planned("x86_64").stdout
    refused = planned("armv7l")
    assert refused.returncode == 69 and "64-bit" in refused.stderr


def test_uninstall_keeps_state_and_key_unless_purged(tmp_path: Path) -> None:
    install(tmp_path)
    key = tmp_path / "var/lib/layerfed/key"
    checkpoint = tmp_path / "var/lib/layerfed/checkpoint.json"
    checkpoint.write_text("{}")
    key_bytes = key.read_bytes()
    install(tmp_path, "--uninstall")
    assert not (tmp_path / "etc/systemd/system/layerfed-agent.service").exists()
    assert not (tmp_path / PREFIX.lstrip("/")).exists()
    assert not (tmp_path / "usr/local/bin/layerfed").is_symlink()
    assert VENV.exists(), "uninstall must remove the link, never the environment it points to"
    assert key.read_bytes() == key_bytes and checkpoint.exists()
    assert (tmp_path / "etc/layerfed/agent.toml").exists()
    # Reinstalling finds the same key: the device keeps its identity.
    install(tmp_path)
    assert key.read_bytes() == key_bytes
    install(tmp_path, "--uninstall", "--purge")
    assert not (tmp_path / "var/lib/layerfed").exists() and not (tmp_path / "etc/layerfed").exists()


@pytest.fixture(scope="module")
def systemd_analyze() -> str:
    path = shutil.which("systemd-analyze")
    if path is None:
        pytest.fail("systemd-analyze is missing: apt-get install -y systemd (scripts/test installs it)")
    return path


def test_the_installed_unit_passes_systemd_analyze_verify(tmp_path: Path, systemd_analyze: str) -> None:
    """``systemd-analyze verify`` insists that ExecStart's program exists and is executable, and looks for it
    on this machine's file system (its ``--root`` would also move the system units it checks against). The
    installed unit names ``/opt/layerfed/...`` of the target system, so a copy is verified whose paths point
    into the temporary root, where the installer linked a real environment. The memory drop-in goes along.
    """
    root = tmp_path / "root"
    install(root)
    config = root / "etc/layerfed/agent.toml"
    config.write_text(config.read_text().replace('# memory_limit = ""', 'memory_limit = "1500M"'))
    install(root)
    installed = root / "etc/systemd/system"
    checked = tmp_path / "checked"
    shutil.copytree(installed, checked)
    unit = checked / "layerfed-agent.service"
    unit.write_text(unit.read_text().replace(f"{PREFIX}/", f"{root}{PREFIX}/"))
    assert (checked / "layerfed-agent.service.d" / "memory.conf").exists()
    verified = subprocess.run(
        [systemd_analyze, "verify", str(unit)], capture_output=True, text=True, timeout=60, check=False
    )
    assert verified.returncode == 0, verified.stderr
    assert verified.stdout + verified.stderr == "", "systemd-analyze warned:\n" + verified.stderr
    text = (installed / "layerfed-agent.service").read_text()
    for required in (
        "RestartPreventExitStatus=78 65 69",
        "Restart=on-failure",
        "KillSignal=SIGTERM",
        "ReadWritePaths=/var/lib/layerfed\n",
        "ProtectSystem=strict",
        "NoNewPrivileges=yes",
        "StandardOutput=journal",
    ):
        assert required in text


def test_systemd_analyze_catches_a_broken_unit(tmp_path: Path, systemd_analyze: str) -> None:
    """The check above can fail: a unit whose program is missing does not pass."""
    unit = tmp_path / "layerfed-agent.service"
    unit.write_text((ROOT / "deploy" / "layerfed-agent.service").read_text().replace(PREFIX, "/nonexistent"))
    verified = subprocess.run(
        [systemd_analyze, "verify", str(unit)], capture_output=True, text=True, check=False
    )
    assert verified.returncode != 0 and "/nonexistent" in verified.stderr


def test_the_unit_names_the_exit_codes_of_agent_errors() -> None:
    from agent.errors import BackendUnavailableError, ConfigurationError, DataError, NetworkError

    text = (ROOT / "deploy" / "layerfed-agent.service").read_text()
    line = next(line for line in text.splitlines() if line.startswith("RestartPreventExitStatus="))
    codes = {int(code) for code in line.split("=", 1)[1].split()}
    assert codes == {ConfigurationError.exit_code, DataError.exit_code, BackendUnavailableError.exit_code}
    assert NetworkError.exit_code not in codes  # transient: systemd restarts it
