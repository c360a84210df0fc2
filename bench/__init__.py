"""Benchmarks (not tests): `python bench/fanout.py --help`."""

from __future__ import annotations
