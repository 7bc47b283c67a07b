"""Dependencies point one way: CLI -> commands -> engine -> {learning, data, ports}; adapters -> ports.

Read from the source with ``ast`` (imports inside functions included), so a shortcut such as the engine
importing an adapter, or the learning core importing the network, fails here instead of in review.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("agent", "models", "coordinator_contract")

# module prefix -> project prefixes it may import (besides itself, the standard library and third parties)
ALLOWED: dict[str, tuple[str, ...]] = {
    "agent.cli": ("agent",),
    "agent.commands": ("agent", "models", "coordinator_contract"),
    "agent.benchmark": ("agent.benchmark", "agent.learning", "agent.data", "agent.errors", "models"),
    "agent.engine": (
        "agent.engine",
        "agent.learning",
        "agent.data",
        "agent.ports",
        "agent.protocol",
        "agent.errors",
        "models",
    ),
    "agent.learning": ("agent.learning", "agent.errors", "models"),
    "agent.data": ("agent.data", "agent.errors"),
    "agent.ports": ("agent.ports", "agent.errors"),
    "agent.protocol": ("agent.protocol", "agent.errors"),
    "agent.adapters": (
        "agent.adapters",
        "agent.ports",
        "agent.errors",
        "agent.content_id",
        "coordinator_contract",
    ),
    "agent.content_id": ("agent.errors",),
    "agent.identity": ("agent.errors",),
    "agent.errors": (),
    "agent": ("agent",),  # agent/__init__.py
    "models": ("models", "agent.errors"),
    "coordinator_contract": ("coordinator_contract",),
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def project_imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return {name for name in found if name.split(".")[0] in PACKAGES}


def rule_for(module: str) -> tuple[str, tuple[str, ...]]:
    matches = [prefix for prefix in ALLOWED if module == prefix or module.startswith(prefix + ".")]
    assert matches, f"{module} has no dependency rule: add one to tests/test_architecture.py"
    prefix = max(matches, key=len)
    return prefix, ALLOWED[prefix]


def within(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name == prefix or name.startswith(prefix + ".") for prefix in prefixes)


SOURCES = sorted(path for package in PACKAGES for path in (ROOT / package).rglob("*.py"))


@pytest.mark.parametrize("path", SOURCES, ids=lambda path: str(path.relative_to(ROOT)))
def test_imports_follow_the_layers(path: Path) -> None:
    module = module_name(path)
    _prefix, allowed = rule_for(module)
    # "from agent import content_id" names agent.content_id: judge the most specific name.
    names = project_imports(path)
    specific = {name for name in names if not any(other.startswith(name + ".") for other in names)}
    forbidden = sorted(name for name in specific if not within(name, allowed) and name != "agent")
    assert not forbidden, f"{module} may not import {forbidden}"


def test_nothing_imports_the_cli() -> None:
    offenders = [
        module_name(path)
        for path in SOURCES
        if "agent.cli" in project_imports(path) and module_name(path) != "agent.cli"
    ]
    assert offenders == []


def test_the_rules_catch_a_violation(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("from agent.adapters.mqtt_bus import MqttMessageBus\n")
    assert not within("agent.adapters.mqtt_bus", ALLOWED["agent.engine"])
    assert project_imports(bad) == {"agent.adapters.mqtt_bus", "agent.adapters.mqtt_bus.MqttMessageBus"}
