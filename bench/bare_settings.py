"""The production settings with the bare yardstick view as the only URL (bench/bare.py)."""

from __future__ import annotations

from config.settings import *  # noqa: F403

ROOT_URLCONF = "bench.bare"
