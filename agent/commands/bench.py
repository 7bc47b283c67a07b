"""``layerfed bench``: the benchmark, which parses its own arguments (``layerfed bench --help``).

The command line reaches every command through this package; the benchmark's runner lives in
``agent.benchmark`` because ``scripts/benchmark.py`` runs the same code.
"""

from __future__ import annotations

from collections.abc import Sequence


def run_bench(arguments: Sequence[str]) -> int:
    """Run the benchmark with ``arguments``; its exit code (imported here so other commands skip torch)."""
    from agent.benchmark import runner

    return runner.main(arguments, prog="layerfed bench")
