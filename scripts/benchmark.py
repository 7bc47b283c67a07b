#!/usr/bin/env python3
"""Compare lw, prog and e2e: the same entry point as ``layerfed bench`` (see agent/benchmark/README.md).

python scripts/benchmark.py --model vit --preset paper --out runs/vit-paper
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from agent.benchmark.runner import main

if __name__ == "__main__":
    raise SystemExit(main())
