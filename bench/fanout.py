#!/usr/bin/env python
"""Fan-out benchmark entry point: `python bench/fanout.py --help` (the Makefile and the
README run it by this path), or `python -m bench.fanout` from the repository root.

The benchmark itself is the `bench` package, one module per role: cli (command line and
run loop), processes, seed, observe, profiling, jobs (all use of the Django app),
verify and report.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HERE = Path(__file__).resolve().parent
# Run by path, Python puts bench/ itself first on sys.path, where its modules would also
# be importable by bare names (`jobs`, `report`) that other packages might use. The
# package is imported as bench.* from the repository root instead.
sys.path[:] = [entry for entry in sys.path if Path(entry or ".").resolve() != HERE]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.cli import main  # noqa: E402  (needs the repository root on sys.path)

if __name__ == "__main__":
    sys.exit(main())
