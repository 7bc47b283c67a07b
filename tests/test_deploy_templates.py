"""The shipped configuration template parses and passes every check once its placeholders are real."""

from __future__ import annotations

from pathlib import Path

from agent.commands.agent_config import load_agent_config

TEMPLATE = Path(__file__).resolve().parent.parent / "deploy" / "agent.toml"


def test_the_agent_template_is_a_valid_configuration(tmp_path: Path) -> None:
    config = load_agent_config(TEMPLATE)
    assert config.store.kind == "ipfs"
    assert config.broker.protocol == "5"
    assert config.data.dataset == "image-folder"
    copy = tmp_path / "agent.toml"
    copy.write_text(
        TEMPLATE.read_text().replace("0x" + "0" * 40, "0x5FbDB2315678afecb367f032d93F642f64180aa3")
    )
    assert load_agent_config(copy).federation.contract == "0x5FbDB2315678afecb367f032d93F642f64180aa3"
