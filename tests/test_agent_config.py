"""The agent's configuration file: good files load, mistakes name the file and the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.commands.agent_config import load_agent_config
from agent.errors import ConfigurationError

GOOD = """
[federation]
contract = "0x5FbDB2315678afecb367f032d93F642f64180aa3"
chain_url = "http://127.0.0.1:8545"

[store]
kind = "ipfs"
address = "/ip4/127.0.0.1/tcp/5001/http"

[broker]
host = "broker.example"
port = 8883
protocol = "5"

[data]
dataset = "fashion-mnist"
shards = 4
shard = 2

[agent]
state_directory = "/var/lib/layerfed"
poll_seconds = 1.5
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "agent.toml"
    path.write_text(text)
    return path


def test_a_good_file_loads_with_defaults_for_what_it_leaves_out(tmp_path: Path) -> None:
    config = load_agent_config(write(tmp_path, GOOD))
    assert config.federation.contract.endswith("0aa3")
    assert (config.broker.host, config.broker.port, config.broker.protocol) == ("broker.example", 8883, "5")
    assert (config.data.shard, config.data.shards) == (2, 4)
    assert config.agent.poll_seconds == 1.5
    assert config.agent.key_file == "/var/lib/layerfed/key"
    assert config.agent.fetch_workers == 4


def test_fetch_workers_is_read_from_the_file(tmp_path: Path) -> None:
    config = load_agent_config(
        write(tmp_path, GOOD.replace("poll_seconds = 1.5", "poll_seconds = 1.5\nfetch_workers = 2"))
    )
    assert config.agent.fetch_workers == 2


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (("port = 8883", 'port = "8883"'), "broker.port must be int"),
        (("port = 8883", "port = 70000"), "broker.port 70000"),
        (("poll_seconds = 1.5", "pol_seconds = 1.5"), "unknown key agent.pol_seconds"),
        (('kind = "ipfs"', 'kind = "s3"'), "store.kind"),
        (('protocol = "5"', 'protocol = "4"'), "broker.protocol"),
        (("shard = 2", "shard = 4"), "data.shard"),
        (
            ('contract = "0x5FbDB2315678afecb367f032d93F642f64180aa3"', 'contract = "nope"'),
            "federation.contract",
        ),
        (('chain_url = "http://127.0.0.1:8545"', ""), "missing key federation.chain_url"),
        (("[data]", "[dataa]"), "unknown section [dataa]"),
        (("[broker]", "[broker"), "not valid TOML"),
        (("port = 8883", "port = true"), "broker.port must be int, not bool True"),
        (("port = 8883", "port = 8883.0"), "broker.port must be int, not float 8883.0"),
        (("poll_seconds = 1.5", 'poll_seconds = "1.5"'), "agent.poll_seconds must be float, not str '1.5'"),
        (("shard = 2", "shard = [2]"), "data.shard must be int, not list [2]"),
        (
            ("poll_seconds = 1.5", "poll_seconds = 1.5\nfetch_workers = 0"),
            "agent.fetch_workers must be at least 1",
        ),
    ],
)
def test_a_mistake_names_the_file_and_the_key(tmp_path: Path, change: tuple[str, str], message: str) -> None:
    path = write(tmp_path, GOOD.replace(*change))
    with pytest.raises(ConfigurationError) as raised:
        load_agent_config(path)
    assert str(path) in str(raised.value)
    assert message in str(raised.value)
    assert raised.value.exit_code == 78


def test_a_missing_file_is_a_configuration_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="cannot read"):
        load_agent_config(tmp_path / "absent.toml")
