"""Benchmarks (not tests): `python bench/fanout.py --help`."""
