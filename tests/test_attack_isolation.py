"""Attack code is a measurement tool: nothing ``layerfed agent run`` loads may reach it.

:mod:`agent.benchmark.attacks` builds malicious updates for the robustness benchmark. A device must never
be one import away from it, so the agent's layers may not import it, and the transitive imports of
:mod:`agent.commands.run_agent` (read from the source with ``ast``, imports inside functions and
``TYPE_CHECKING`` blocks included, and every package ``__init__`` an import runs) must not contain it.
The checks hold whether or not the module exists yet.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
ATTACKS = "agent.benchmark.attacks"
AGENT_LAYERS = (
    "agent.engine",
    "agent.learning",
    "agent.adapters",
    "agent.ports",
    "agent.protocol",
    "agent.commands",
)
ENTRY_POINT = "agent.commands.run_agent"


def module_name(path: Path, root: Path = ROOT) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def module_path(name: str, root: Path = ROOT) -> Path | None:
    """The file that defines module ``name`` under ``root``, if it is a project module."""
    base = root.joinpath(*name.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def is_package(path: Path) -> bool:
    return path.name == "__init__.py"


def imported_names(path: Path, root: Path = ROOT) -> set[str]:
    """Every module name ``path`` may import: ``import a.b``, ``from a import b`` (a, and a.b in case b
    is a module), relative imports resolved, and ``importlib.import_module("...")`` with a literal."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = module_name(path, root).split(".")
    if not is_package(path):
        package = package[:-1]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                anchor = package[: len(package) - node.level + 1]
                base = ".".join([*anchor, *([node.module] if node.module else [])])
            else:
                base = node.module or ""
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
        elif (
            isinstance(node, ast.Call)
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
            and (
                (isinstance(node.func, ast.Attribute) and node.func.attr == "import_module")
                or (isinstance(node.func, ast.Name) and node.func.id in ("import_module", "__import__"))
            )
        ):
            found.add(node.args[0].value)
    return {name for name in found if name}


def with_parents(name: str) -> list[str]:
    """``a.b.c`` runs ``a``, ``a.b`` and ``a.b.c`` when imported."""
    parts = name.split(".")
    return [".".join(parts[: index + 1]) for index in range(len(parts))]


def reachable_modules(entry: str, root: Path = ROOT) -> set[str]:
    """Project modules that importing ``entry`` may load, transitively."""
    seen: set[str] = set()
    pending = with_parents(entry)
    while pending:
        name = pending.pop()
        if name in seen:
            continue
        path = module_path(name, root)
        if path is None:
            continue  # a third-party or standard module, or a name imported from a module
        seen.add(name)
        for imported in imported_names(path, root):
            pending.extend(with_parents(imported))
    return seen


def names_attacks(name: str) -> bool:
    return name == ATTACKS or name.startswith(ATTACKS + ".")


LAYER_SOURCES = sorted(
    path for layer in AGENT_LAYERS for path in ROOT.joinpath(*layer.split(".")).rglob("*.py")
)


@pytest.mark.parametrize("path", LAYER_SOURCES, ids=lambda path: str(path.relative_to(ROOT)))
def test_no_agent_layer_imports_the_attacks(path: Path) -> None:
    offending = sorted(name for name in imported_names(path) if names_attacks(name))
    # "from agent.benchmark import attacks" names agent.benchmark.attacks too
    assert not offending, f"{module_name(path)} imports {offending}: attack code must stay out of the agent"


def test_the_agent_run_command_cannot_reach_the_attacks() -> None:
    reachable = reachable_modules(ENTRY_POINT)
    assert ENTRY_POINT in reachable and "agent.engine.round_engine" in reachable, "the walk found too little"
    assert "agent.learning.merging" in reachable
    offending = sorted(name for name in reachable if names_attacks(name))
    assert not offending, f"layerfed agent run reaches {offending}"
    # agent/benchmark/__init__.py runs on any agent.benchmark import: it must not pull the attacks in
    benchmark_init = module_path("agent.benchmark")
    if benchmark_init is not None and "agent.benchmark" in reachable:
        assert not any(names_attacks(name) for name in imported_names(benchmark_init))


def write(root: Path, name: str, source: str) -> None:
    path = root.joinpath(*name.split(".")).with_suffix(".py")
    path.parent.mkdir(parents=True, exist_ok=True)
    for parent in path.relative_to(root).parents:
        if parent != Path("."):
            (root / parent / "__init__.py").touch()
    path.write_text(source)


@pytest.mark.parametrize(
    "violation",
    [
        "from agent.benchmark.attacks import SignFlip\n",
        "from agent.benchmark import attacks\n",
        "import agent.benchmark.attacks as attacks\n",
        "def later():\n    from ..benchmark import attacks\n",
        "import importlib\nimportlib.import_module('agent.benchmark.attacks')\n",
    ],
)
def test_the_walk_catches_a_hidden_path_to_the_attacks(tmp_path: Path, violation: str) -> None:
    # run_agent -> engine.round_engine -> learning.helpers -> (the violation)
    write(tmp_path, "agent.commands.run_agent", "from agent.engine import round_engine\n")
    write(tmp_path, "agent.engine.round_engine", "from ..learning.helpers import helper\n")
    write(tmp_path, "agent.learning.helpers", violation)
    write(tmp_path, "agent.benchmark.attacks", "class SignFlip: ...\n")
    reachable = reachable_modules("agent.commands.run_agent", tmp_path)
    assert ATTACKS in reachable, violation
    direct = imported_names(tmp_path / "agent" / "learning" / "helpers.py", tmp_path)
    assert any(names_attacks(name) for name in direct)


def test_a_package_init_that_imports_the_attacks_is_caught(tmp_path: Path) -> None:
    write(tmp_path, "agent.commands.run_agent", "from agent.benchmark.presets import PRESETS\n")
    write(tmp_path, "agent.benchmark.presets", "PRESETS = {}\n")
    write(tmp_path, "agent.benchmark.attacks", "class SignFlip: ...\n")
    (tmp_path / "agent" / "benchmark" / "__init__.py").write_text("from . import attacks\n")
    assert ATTACKS in reachable_modules("agent.commands.run_agent", tmp_path)
