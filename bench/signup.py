#!/usr/bin/env python
"""Signup benchmark entry point: `python bench/signup.py --help` (`make bench-signup`).

The benchmark is bench/signup_run.py; this file only puts the repository root on
sys.path, as bench/fanout.py does.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HERE = Path(__file__).resolve().parent
sys.path[:] = [entry for entry in sys.path if Path(entry or ".").resolve() != HERE]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.signup_run import main  # noqa: E402  (needs the repository root on sys.path)

if __name__ == "__main__":
    sys.exit(main())
