"""``scripts/apt-install``, the README's first command: apt-get as root, through sudo as a user.

Run against stand-ins for ``id``, ``dpkg-query``, ``sudo`` and ``apt-get`` on a PATH of their own, which
record how they were called: nothing is installed.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "apt-install"


def stand_in(directory: Path, name: str, body: str) -> None:
    path = directory / name
    path.write_text(f"#!/bin/bash\n{body}\n")
    path.chmod(0o755)


def run(
    tmp_path: Path, *, uid: int, sudo: bool, installed: bool
) -> tuple[subprocess.CompletedProcess[str], str]:
    bin_directory = tmp_path / "bin"
    bin_directory.mkdir()
    calls = tmp_path / "calls"
    for tool in ("grep", "env"):
        found = shutil.which(tool)
        assert found is not None
        (bin_directory / tool).symlink_to(found)
    stand_in(bin_directory, "id", f"echo {uid}")
    stand_in(bin_directory, "dpkg-query", 'echo -n "install ok installed"' if installed else "exit 1")
    stand_in(bin_directory, "apt-get", f'echo "apt-get $*" >> {calls}')
    if sudo:
        stand_in(bin_directory, "sudo", f'echo "sudo $1" >> {calls}; "$@"')
    completed = subprocess.run(
        ["/bin/bash", str(SCRIPT), "dataset-fashion-mnist"],
        capture_output=True,
        text=True,
        env={**os.environ, "PATH": str(bin_directory)},
        check=False,
    )
    return completed, calls.read_text() if calls.exists() else ""


def test_as_root_it_runs_apt_get_itself(tmp_path: Path) -> None:
    completed, calls = run(tmp_path, uid=0, sudo=False, installed=False)
    assert completed.returncode == 0, completed.stderr
    assert calls.splitlines() == ["apt-get update -qq", "apt-get install -y -qq dataset-fashion-mnist"]


def test_as_a_user_it_goes_through_sudo(tmp_path: Path) -> None:
    completed, calls = run(tmp_path, uid=1000, sudo=True, installed=False)
    assert completed.returncode == 0, completed.stderr
    assert calls.splitlines() == [
        "sudo apt-get",
        "apt-get update -qq",
        "sudo env",
        "apt-get install -y -qq dataset-fashion-mnist",
    ]


@pytest.mark.parametrize("uid", [0, 1000])
def test_what_is_installed_is_left_alone(tmp_path: Path, uid: int) -> None:
    completed, calls = run(tmp_path, uid=uid, sudo=False, installed=True)
    assert completed.returncode == 0 and calls == ""


def test_a_user_without_sudo_is_told_what_to_do(tmp_path: Path) -> None:
    completed, calls = run(tmp_path, uid=1000, sudo=False, installed=False)
    assert completed.returncode == 77 and calls == ""
    assert "run this as root" in completed.stderr
