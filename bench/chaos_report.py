"""The chaos benchmark's report: one scenario's figures and targets as printed, the
summary table of `--scenario all`, and the command that reproduces a scenario."""

from __future__ import annotations

import argparse
import shlex

from bench.faults import Fault
from bench.report import fmt_s


def reproduce_command(args: argparse.Namespace, fault: Fault, readers: int) -> str:
    parts = [".venv/bin/python", "bench/chaos.py", "--scenario", fault.name, "--subscribers", str(readers),
             *fault.flags()]
    if args.lease_seconds:
        parts += ["--lease-seconds", str(args.lease_seconds)]
    if args.timeout != 300:
        parts += ["--timeout", f"{args.timeout:g}"]
    if args.settings != "config.settings":
        parts += ["--settings", args.settings]
    if args.private_servers:
        parts.append("--private-servers")
    if args.respawn_after != 5:
        parts += ["--respawn-after", f"{args.respawn_after:g}"]
    return shlex.join(parts)


def _seconds(value: float | None, after: str) -> str:
    return "-" if value is None else f"{value:.2f} s after {after}"


def print_report(f: dict) -> None:
    fault, calls, v = f["fault"], f["calls"], f["verification"]
    batches = ", ".join(f"{status} {row['n']} (max attempts {row['max_attempts']})"
                        for status, row in f["batches_by_status"].items())
    cleared = "lasts the whole run" if fault["lasting"] else fmt_s(fault["cleared_s"])
    rows = [
        ("subscribers (eligible)", f"{f['subscribers']:,}  (+{f['ineligible']:,} ineligible seeded)"),
        ("fault", fault["about"]),
        ("struck / cleared", f"{fmt_s(fault['struck_s'])} / {cleared} (after publishing)"),
        ("readers in flight at the fault", "-" if f["in_flight_at_fault"] is None else f"{f['in_flight_at_fault']:,}"),
        ("provider calls during the fault", f"{f['provider_calls_during_fault']:,}  "
                                            f"{calls['during_fault_by_status'] or ''}"),
        ("last hand-off", _seconds(f["seconds_to_last_handoff"], "publishing")),
        ("  after the fault cleared", _seconds(f["seconds_to_last_handoff_after_fault_cleared"],
                                              "the fault cleared" if not fault["lasting"] else "it struck")),
        ("every reader had a copy", _seconds(f["seconds_to_every_reader"], "publishing")),
        ("duplicates / missing / ineligible", f"{f['duplicates']:,} / {f['missing']:,} / {f['unexpected']:,}"),
        ("provider calls", f"{calls['total']:,}  {calls['by_status']}"),
        ("ledger rows 'sent' / not at provider", f"{v['ledger_sent']:,} / {v['ledger_not_at_provider']:,}"),
        ("batches", batches or "-"),
        ("alert", f"{f['alert']['status']}, fanned out {fmt_s(f['alert']['fanned_out_at_s'])},"
                  f" finished {fmt_s(f['alert']['finished_at_s'])}"),
        ("stopped watching", f["ended_because"]),
    ]
    width = max(len(label) for label, _ in rows)
    print(f"\nScenario {f['scenario']} (times are seconds after alert_publish was called)")
    for label, value in rows:
        print(f"  {label:<{width}}  {value}")
    for exit_ in f["unexpected_exits"]:
        print(f"  WARNING: the {exit_['process']} exited by itself at {exit_['at_s']:.2f} s"
              f" (code {exit_['exit_code']}) and was started again: {exit_['last_error']}")
    if f["batch_errors"]:
        print("  last batch errors: " + " | ".join(" ".join(e.split())[:150] for e in f["batch_errors"]))
    print("  evidence:")
    for line in f["evidence"]:
        print(f"    {line}")
    print("  targets:")
    for target in f["targets"]:
        print(f"    [{'ok' if target['met'] else 'MISSED'}] {target['target']}: {target['measured']}")
    print(f"  outcome: {f['outcome']}")
    print(f"Reproduce: {f['command']}")
    print(f"Logs: {f['run_dir']}")


def print_summary(results: dict[str, dict], elapsed: float) -> None:
    """One line per scenario, as in the issue's closing note."""
    header = ("scenario", "readers", "in flight", "calls in fault", "missing", "dupl.", "last (s)",
              "after clear (s)", "outcome")
    rows = [header]
    for name, f in results.items():
        if "missing" not in f:
            rows.append((name, "-", "-", "-", "-", "-", "-", "-", f.get("outcome", "?")))
            continue
        rows.append((name, f"{f['subscribers']:,}", _n(f["in_flight_at_fault"]), _n(f["provider_calls_during_fault"]),
                     _n(f["missing"]), _n(f["duplicates"]), _n(f["seconds_to_last_handoff"]),
                     _n(f["seconds_to_last_handoff_after_fault_cleared"]), f["outcome"]))
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(header) - 1)]
    print(f"\nChaos benchmark: {len(results)} scenarios in {elapsed / 60:.1f} min")
    for row in rows:
        print("  " + "  ".join(f"{cell:<{w}}" for cell, w in zip(row, widths, strict=False)) + "  " + row[-1])


def _n(value: float | int | None) -> str:
    if value is None:
        return "-"
    return f"{value:,.1f}" if isinstance(value, float) else f"{value:,}"
