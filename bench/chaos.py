#!/usr/bin/env python
"""Chaos benchmark entry point: `python bench/chaos.py --help` (the Makefile and the
README run it by this path), or `python -m bench.chaos` from the repository root.

It shares the `bench` package with the fan-out benchmark (processes, seed, observe, jobs,
verify, report) and adds its own modules: chaos_cli (command line, one scenario's
setup), chaos_run (the watch loop and the figures), faults (one class per scenario),
topology (worker, beat, fake), stores (private redis-server and PostgreSQL), targets
(the issue's targets as checks) and chaos_report. See bench/README.md.
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

from bench.chaos_cli import main  # noqa: E402  (needs the repository root on sys.path)

if __name__ == "__main__":
    sys.exit(main())
