"""Dependencies point one way: CLI -> commands -> engine -> {learning, data, ports}; adapters -> ports.

Read from the source with ``ast``: imports inside functions, relative imports (resolved against the
importing module) and ``importlib.import_module``/``__import__`` with a literal name all count, and a
dynamic import whose name is not a literal is refused, because nothing could check it. Network and
signing libraries (web3, eth_account, paho, ipfshttpclient, amqtt, ...) may be imported by adapters only,
so the engine and the commands stay testable without them and each technology is one adapter module.
Every module must match a rule of its own package: there is no catch-all.

The self-test runs the same check over a scratch tree holding each kind of forbidden import.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("agent", "models", "coordinator_contract")

# Imported by adapters only (and by tests and scripts, which this file does not judge).
NETWORK_LIBRARIES = (
    "web3",
    "eth_account",
    "eth_keys",
    "eth_abi",
    "eth_utils",
    "eth_tester",
    "hexbytes",
    "paho",
    "ipfshttpclient",
    "amqtt",
    "requests",
)


@dataclass(frozen=True)
class Rule:
    """What a module may import from the project: whole packages, and single modules."""

    packages: tuple[str, ...] = ()
    modules: tuple[str, ...] = ()
    network: bool = False  # may import NETWORK_LIBRARIES


# Package prefix -> rule; a module takes the rule of its longest matching prefix.
PACKAGE_RULES: dict[str, Rule] = {
    "agent.commands": Rule(
        packages=(
            "agent.commands",
            "agent.adapters",
            "agent.engine",
            "agent.learning",
            "agent.data",
            "agent.ports",
            "agent.protocol",
            "agent.benchmark",
            "agent.errors",
            "models",
        ),
        modules=("agent.atomic_file", "agent.retry_policy"),
    ),
    "agent.benchmark": Rule(
        packages=("agent.benchmark", "agent.learning", "agent.data", "agent.errors", "models")
    ),
    "agent.engine": Rule(
        packages=(
            "agent.engine",
            "agent.learning",
            "agent.data",
            "agent.ports",
            "agent.protocol",
            "agent.errors",
            "models",
        ),
        # content_id: a verifying peer computes its merge's CID without pinning it
        modules=("agent.atomic_file", "agent.retry_policy", "agent.content_id"),
    ),
    "agent.learning": Rule(packages=("agent.learning", "agent.errors", "models")),
    "agent.data": Rule(packages=("agent.data", "agent.errors")),
    "agent.ports": Rule(packages=("agent.ports", "agent.errors")),
    "agent.protocol": Rule(packages=("agent.protocol", "agent.ports", "agent.errors")),
    "agent.adapters": Rule(
        packages=(
            "agent.adapters",
            "agent.ports",
            "agent.errors",
            "agent.content_id",
            "coordinator_contract",
        ),
        modules=("agent.atomic_file", "agent.retry_policy"),
        network=True,
    ),
    "models": Rule(packages=("models",)),
    "coordinator_contract": Rule(packages=("coordinator_contract",)),
}

# Single modules outside those packages: exact names, so that ``agent`` is no catch-all for ``agent.*``.
MODULE_RULES: dict[str, Rule] = {
    "agent": Rule(),  # agent/__init__.py: the version
    "agent.cli": Rule(packages=("agent.commands", "agent.errors"), modules=("agent",)),
    "agent.content_id": Rule(packages=("agent.errors",)),
    "agent.errors": Rule(),
    "agent.atomic_file": Rule(),
    "agent.retry_policy": Rule(),
}


def module_name(root: Path, path: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def sources(root: Path) -> list[Path]:
    return sorted(path for package in PACKAGES for path in (root / package).rglob("*.py"))


def is_package(root: Path, path: Path) -> bool:
    return path.name == "__init__.py"


def _absolute(root: Path, path: Path, node: ast.ImportFrom) -> str:
    """The absolute module an ``import from`` names, relative levels resolved against ``path``."""
    if node.level == 0:
        return node.module or ""
    base = module_name(root, path).split(".")
    # "from . import x" in a package's __init__ is relative to the package itself, elsewhere to the parent.
    drop = node.level - 1 if is_package(root, path) else node.level
    anchor = base[: len(base) - drop] if drop else base
    return ".".join([*anchor, *([node.module] if node.module else [])])


def _literal_import(node: ast.Call) -> str | None:
    """The name in ``importlib.import_module("x")`` or ``__import__("x")``; "" when not a literal."""
    function = node.func
    named = (isinstance(function, ast.Attribute) and function.attr == "import_module") or (
        isinstance(function, ast.Name) and function.id in ("__import__", "import_module")
    )
    if not named:
        return None
    if node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str):
        return node.args[0].value
    return ""


def imported_names(root: Path, path: Path) -> set[str]:
    """Every module name ``path`` imports, "from a import b" giving ``a.b`` when that is a module of the
    tree and ``a`` when ``b`` is an attribute; a dynamic import without a literal name gives "<dynamic>"."""
    tree = ast.parse(path.read_text(), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            module = _absolute(root, path, node)
            for alias in node.names:
                candidate = f"{module}.{alias.name}"
                relative = Path(*candidate.split("."))
                is_module = (root / relative).with_suffix(".py").exists() or (root / relative).is_dir()
                found.add(candidate if is_module else module)
        elif isinstance(node, ast.Call):
            name = _literal_import(node)
            if name is not None:
                found.add(name or "<dynamic>")
    return found


def rule_for(module: str) -> Rule | None:
    if module in MODULE_RULES:
        return MODULE_RULES[module]
    matches = [prefix for prefix in PACKAGE_RULES if module == prefix or module.startswith(prefix + ".")]
    return PACKAGE_RULES[max(matches, key=len)] if matches else None


def within(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name == prefix or name.startswith(prefix + ".") for prefix in prefixes)


def violations(root: Path, path: Path) -> list[str]:
    """What ``path`` (a module of the tree at ``root``) imports against its rule; empty when nothing."""
    module = module_name(root, path)
    rule = rule_for(module)
    if rule is None:
        return [f"{module} has no dependency rule: add one to tests/test_architecture.py"]
    problems = []
    for name in sorted(imported_names(root, path)):
        top = name.split(".")[0]
        if name == "<dynamic>":
            problems.append(f"{module} imports a module whose name is not a literal")
        elif top in PACKAGES:
            allowed = within(name, rule.packages) or name in rule.modules or within(name, (module,))
            if not allowed:
                problems.append(f"{module} may not import {name}")
        elif top in NETWORK_LIBRARIES and not rule.network:
            problems.append(f"{module} may not import {name}: network libraries belong in agent.adapters")
    return problems


SOURCES = sources(ROOT)


def test_the_check_found_the_sources() -> None:
    """A path mistake must not turn every check below into zero checks."""
    names = {module_name(ROOT, path) for path in SOURCES}
    for expected in ("agent.cli", "agent.engine.round_engine", "agent.adapters.mqtt_bus", "models.spec"):
        assert expected in names
    assert len(SOURCES) > 50


@pytest.mark.parametrize("path", SOURCES, ids=lambda path: str(path.relative_to(ROOT)))
def test_imports_follow_the_layers(path: Path) -> None:
    assert violations(ROOT, path) == []


def test_nothing_imports_the_cli() -> None:
    offenders = [
        module_name(ROOT, path)
        for path in SOURCES
        if "agent.cli" in imported_names(ROOT, path) and module_name(ROOT, path) != "agent.cli"
    ]
    assert offenders == []


# Each entry: a module of the scratch tree, a forbidden source for it, and what the check must say.
FORBIDDEN = [
    ("agent/engine/absolute.py", "from agent.adapters.mqtt_bus import MqttMessageBus\n", "agent.adapters"),
    ("agent/engine/relative.py", "from ..adapters import mqtt_bus\n", "agent.adapters.mqtt_bus"),
    ("agent/engine/parent.py", "from .. import adapters\n", "agent.adapters"),
    (
        "agent/engine/inside.py",
        "def later():\n    import agent.adapters.mqtt_bus\n",
        "agent.adapters.mqtt_bus",
    ),
    (
        "agent/engine/dynamic.py",
        "import importlib\nbus = importlib.import_module('agent.adapters.mqtt_bus')\n",
        "agent.adapters.mqtt_bus",
    ),
    ("agent/engine/builtin.py", "bus = __import__('agent.commands')\n", "agent.commands"),
    (
        "agent/engine/computed.py",
        "import importlib\nname = 'agent.' + 'adapters'\nimportlib.import_module(name)\n",
        "not a literal",
    ),
    ("agent/engine/signing.py", "from eth_account import Account\n", "eth_account"),
    ("agent/commands/chain.py", "import web3\n", "web3"),
    ("agent/protocol/broker.py", "import paho.mqtt.client\n", "paho"),
    ("agent/learning/ipfs.py", "import ipfshttpclient\n", "ipfshttpclient"),
    ("agent/commands/embedded.py", "from amqtt.broker import Broker\n", "amqtt"),
    ("agent/cli.py", "from agent.engine.round_engine import RoundEngine\n", "agent.engine"),
    ("agent/cli.py", "from agent.adapters import local_store\n", "agent.adapters.local_store"),
    ("models/spec.py", "from agent.errors import ConfigurationError\n", "agent.errors"),
    ("agent/adapters/wiring.py", "from agent.engine import round_engine\n", "agent.engine"),
    ("agent/unruled.py", "x = 1\n", "no dependency rule"),
]


@pytest.mark.parametrize(("relative", "source", "said"), FORBIDDEN, ids=[entry[0] for entry in FORBIDDEN])
def test_the_check_fails_on_a_tree_with_a_forbidden_import(
    tmp_path: Path, relative: str, source: str, said: str
) -> None:
    for package in ("agent", "agent/engine", "agent/adapters", "agent/commands", "agent/protocol"):
        (tmp_path / package).mkdir(parents=True, exist_ok=True)
        (tmp_path / package / "__init__.py").write_text("")
    (tmp_path / "agent/learning").mkdir()
    (tmp_path / "models").mkdir()
    (tmp_path / "agent/adapters/mqtt_bus.py").write_text("class MqttMessageBus: ...\n")
    (tmp_path / "agent/adapters/local_store.py").write_text("")
    bad = tmp_path / relative
    bad.write_text(source)
    scratch_sources = sources(tmp_path)
    assert bad in scratch_sources
    found = [problem for path in scratch_sources for problem in violations(tmp_path, path)]
    assert len(found) == 1 and said in found[0], found


def test_the_check_passes_a_tree_that_follows_the_layers(tmp_path: Path) -> None:
    (tmp_path / "agent/engine").mkdir(parents=True)
    (tmp_path / "agent/ports").mkdir()
    (tmp_path / "agent/engine/fine.py").write_text(
        "from . import inbox\nfrom ..ports import ledger\n"
        "from agent.errors import LayerfedError\nimport torch\n"
    )
    (tmp_path / "agent/engine/inbox.py").write_text("")
    (tmp_path / "agent/ports/ledger.py").write_text("")
    assert [problem for path in sources(tmp_path) for problem in violations(tmp_path, path)] == []
