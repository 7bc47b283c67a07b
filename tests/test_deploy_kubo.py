"""The kubo templates: swarm key format, the configuration the script applies, the unit systemd accepts.

There is no kubo on this machine (nor in Debian), so the script runs against a stand-in ``ipfs`` on PATH
that records its arguments: this checks what the script asks kubo to do (API on loopback, public bootstrap
peers removed, the federation's added, the swarm key installed with mode 0600), not kubo's reaction.
"""

from __future__ import annotations

import re
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

KUBO = Path(__file__).resolve().parent.parent / "deploy" / "kubo"
SCRIPT = KUBO / "configure-private-node.sh"


def test_a_generated_swarm_key_has_kubos_format_and_is_random() -> None:
    keys = [
        subprocess.run(
            [str(SCRIPT), "--generate-swarm-key"], capture_output=True, text=True, check=True
        ).stdout
        for _ in range(2)
    ]
    for key in keys:
        assert re.fullmatch(r"/key/swarm/psk/1\.0\.0/\n/base16/\n[0-9a-f]{64}\n", key), key
    assert keys[0] != keys[1]


def test_the_script_configures_a_private_loopback_node(tmp_path: Path) -> None:
    bin_directory, repository = tmp_path / "bin", tmp_path / "repository"
    bin_directory.mkdir()
    calls = tmp_path / "calls"
    fake = bin_directory / "ipfs"
    fake.write_text(
        "#!/bin/sh\n"
        f'echo "$*" >> {calls}\n'
        f'if [ "$1" = init ]; then mkdir -p "$IPFS_PATH" && touch "$IPFS_PATH/config"; fi\n'
        'if [ "$*" = "config Identity.PeerID" ]; then echo 12D3KooWTestPeer; fi\n'
    )
    fake.chmod(0o755)
    swarm_key = tmp_path / "swarm.key"
    swarm_key.write_text(
        subprocess.run(
            [str(SCRIPT), "--generate-swarm-key"], capture_output=True, text=True, check=True
        ).stdout
    )
    peer = "/ip4/192.0.2.10/tcp/4001/p2p/12D3KooWOther"
    environment = {
        "PATH": f"{bin_directory}:/usr/bin:/bin",
        "IPFS_PATH": str(repository),
        "HOME": str(tmp_path),
    }
    completed = subprocess.run(
        [str(SCRIPT), "--swarm-key", str(swarm_key), "--bootstrap", peer],
        capture_output=True,
        text=True,
        env=environment,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    commands = calls.read_text().splitlines()
    assert commands[0] == "init --empty-repo"
    assert "config Addresses.API /ip4/127.0.0.1/tcp/5001" in commands
    assert "config Addresses.Gateway /ip4/127.0.0.1/tcp/8080" in commands
    assert commands.index("bootstrap rm --all") < commands.index(f"bootstrap add {peer}")
    assert "config --json AutoConf.Enabled false" in commands
    installed = repository / "swarm.key"
    assert installed.read_text() == swarm_key.read_text()
    assert stat.S_IMODE(installed.stat().st_mode) == 0o600
    assert "/p2p/12D3KooWTestPeer" in completed.stdout
    # Run again: nothing is initialised twice.
    subprocess.run(
        [str(SCRIPT), "--swarm-key", str(swarm_key)], env=environment, check=True, capture_output=True
    )
    assert calls.read_text().count("init --empty-repo") == 1


def test_the_ipfs_unit_forces_the_private_network_and_passes_verify(tmp_path: Path) -> None:
    """As for the agent's unit, verify a copy whose ExecStart names a stand-in binary that exists."""
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.fail("systemd-analyze is missing: apt-get install -y systemd")
    text = (KUBO / "ipfs.service").read_text()
    assert "Environment=LIBP2P_FORCE_PNET=1\n" in text
    stand_in = tmp_path / "ipfs"
    stand_in.write_text("#!/bin/sh\n")
    stand_in.chmod(0o755)
    unit = tmp_path / "ipfs.service"
    unit.write_text(text.replace("/usr/local/bin/ipfs", str(stand_in)))
    verified = subprocess.run([analyze, "verify", str(unit)], capture_output=True, text=True, check=False)
    assert verified.returncode == 0 and verified.stderr == "", verified.stderr
