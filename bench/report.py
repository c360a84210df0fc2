"""The report of a run: the printed summary, the JSON file, and what it takes to
compare runs later (the machine, the code under test, the command to reproduce it)."""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import re
import shlex
from pathlib import Path

from bench.constants import CACHE_DB, REDIS_SERVER, ROOT
from bench.profiling import print_profile


def machine() -> dict:
    cpuinfo = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    model = re.search(r"^model name\s*:\s*(.+)$", cpuinfo, re.MULTILINE)
    meminfo = Path("/proc/meminfo").read_text() if Path("/proc/meminfo").exists() else ""
    mem = re.search(r"^MemTotal:\s*(\d+) kB", meminfo, re.MULTILINE)
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SHOW server_version")
        pg_version = cursor.fetchone()[0]
    import celery
    import django
    import redis

    redis_version = redis.Redis.from_url(f"{REDIS_SERVER}/{CACHE_DB}").info("server").get("redis_version")
    return {
        "nproc": os.cpu_count(),
        "cpu_model": model[1].strip() if model else platform.processor(),
        "ram_gb": round(int(mem[1]) / 1024 / 1024, 1) if mem else None,
        "python": platform.python_version(),
        "postgresql": pg_version,
        "redis": redis_version,
        "django": django.get_version(),
        "celery": celery.__version__,
        "kernel": platform.release(),
    }


def code_version() -> dict[str, str]:
    """Short hashes of the code under test, since it changes between runs (no VCS call)."""
    files = sorted([*ROOT.glob("alerts/**/*.py"), *ROOT.glob("config/*.py")])
    combined = hashlib.sha1()
    for path in files:
        combined.update(path.read_bytes())
    key = ("alerts/sending/batches.py", "alerts/sending/ledger.py", "alerts/sending/provider.py",
           "alerts/publishing/fanout.py", "alerts/digests/send.py", "config/settings.py")
    return {"alerts+config": combined.hexdigest()[:12],
            **{name: hashlib.sha1((ROOT / name).read_bytes()).hexdigest()[:12]
               for name in key if (ROOT / name).exists()}}


def reproduce_command(args: argparse.Namespace) -> str:
    parts = [".venv/bin/python", "bench/fanout.py", "--subscribers", str(args.subscribers),
             "--mode", args.mode, "--backend", args.backend, "--workers", str(args.workers),
             "--concurrency", str(args.concurrency)]
    if args.batch_size:
        parts += ["--batch-size", str(args.batch_size)]
    if not args.warmup:
        parts.append("--no-warmup")
    if args.settings != "config.settings":
        parts += ["--settings", args.settings]
    if args.runs > 1:
        parts += ["--runs", str(args.runs)]
    if args.fail_rate:
        parts += ["--fail-rate", str(args.fail_rate)]
    if args.kill_child_at is not None:
        parts += ["--kill-child-at", str(args.kill_child_at)]
    if args.py_spy:
        parts.append("--py-spy")
    if args.fallback:
        parts += ["--fallback", args.fallback]
    if args.primary_fails_after is not None:
        parts += ["--primary-fails-after", str(args.primary_fails_after)]
    if args.failover_after is not None:
        parts += ["--failover-after", str(args.failover_after)]
    if args.send_rate:
        parts += ["--send-rate", str(args.send_rate)]
    return shlex.join(parts)


def fmt_s(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f} s"


def print_report(result: dict) -> None:
    v, a, m, c = result["verification"], result["alert"], result["machine"], result["cpu_seconds"]
    bg = result["background_before_publish"]
    # Digest runs have no hand-off columns: their times come from the batches' sent_at.
    row = "alert row:" if result["mode"] == "alert" else "digest runs:"
    rows = [
        ("subscribers (eligible)", f"{result['subscribers']:,}  (+{result['ineligible']:,} ineligible seeded)"),
        ("mode / backend / workers", (f"{result['mode']}, {result['backend']}, {result['workers']} worker(s) x concurrency"
                               f" {result['concurrency']}, batch size {result['batch_size'] or 'provider default'}")),
        ("outcome", result["ended_because"]),
        ("first hand-off", fmt_s(result["first_handoff_s"])),
        ("last hand-off", fmt_s(result["last_handoff_s"])),
        ("recipients / s", f"{result['recipients_per_s']:,.0f}" if result["recipients_per_s"] else "-"),
        ("provider calls", f"{result['provider_calls']:,}" + (
            f" accepted, {result['provider_stats']['rejected']:,} answered with an error"
            if result["provider_stats"].get("rejected") else "")),
        ("duplicates", f"{result['duplicates']:,}"),
        ("missing", f"{result['missing']:,}"),
        ("unexpected (ineligible mailed)", f"{v['unexpected']:,}"),
        ("ledger rows 'sent' / not at provider", f"{v['ledger_sent']:,} / {v['ledger_not_at_provider']:,}"),
        ("worker peak RSS, one process", f"{result['worker_peak_rss_mb']:.0f} MB"),
        ("worker peak RSS, all processes", (f"{result['worker_peak_rss_sum_mb']:.0f} MB"
                                            f" ({result['worker_processes']} processes)")),
        ("CPU s: workers / fake / machine", (f"{c['workers']} / {c['fake_provider']} / {c['whole_machine']}"
                                             f" over {c['elapsed']} s on {m['nproc']} CPUs")),
        ("CPU s: PostgreSQL / Redis", f"{c.get('postgres', 0)} / {c.get('redis', 0)}"),
        ("machine busy before publish", (f"{bg['cpu_percent']}% (load {bg['loadavg_1m']}"
                                         f"{', NOT QUIET: figures are pessimistic' if not bg['quiet'] else ''})")),
        ("reference loop (host speed)", f"{bg['reference_s']:.3f} s (lower is faster; see bench/README.md)"),
        (f"{row} status", a["status"]),
        (f"{row} fanned_out_at", fmt_s(a["fanned_out_at_s"])),
        (f"{row} first_handoff_at", fmt_s(a["first_handoff_at_s"])),
        (f"{row} last_handoff_at", fmt_s(a["last_handoff_at_s"])),
        (f"{row} finished_at", fmt_s(a["finished_at_s"])),
        ("batches", ", ".join(f"{k} {x['n']} (max attempts {x['max_attempts']})" for k, x in a["batches"].items())),
    ]
    if result.get("failover"):
        f = result["failover"]
        rows[3:3] = [("failover: primary / fallback", (
            f"{f['primary_recipients'] or 0:,} / {f['fallback_recipients']:,} recipients"
            f" ({f['primary_rejected_calls'] or 0:,} primary calls refused, {f['fallback_calls']:,} fallback calls)")),
            ("failover: first failure to last hand-off", fmt_s(f["first_failure_to_last_handoff_s"]))]
    if result.get("send_rate"):
        r = result["send_rate"]
        rows[3:3] = [("send rate: limit / measured", (
            f"{r['limit']:,.0f} / {r['measured']:,.1f} a second ({r['off_by_percent']:+.2f}%;"
            f" {r['overall']:,.1f} counting the first second's burst)"))]
    if len(result["runs"]) > 1:
        rows[2:2] = [("runs (median shown)", "; ".join(
            f"#{r['run']} {fmt_s(r['first_handoff_s'])} / {fmt_s(r['last_handoff_s'])}"
            f" ({r['background_before_publish']['cpu_percent']:.0f}% busy before,"
            f" reference {r['background_before_publish']['reference_s']:.2f} s)" for r in result["runs"]))]
        rows.append(("all runs: duplicates / missing / unexpected",
                     " / ".join(str(sum(r[k] for r in result["runs"])) for k in ("duplicates", "missing", "unexpected"))))
    width = max(len(label) for label, _ in rows)
    start = "alert_publish was called" if result["mode"] == "alert" else "the digest tick was queued"
    print(f"\nResults of run {result['run']} (times are seconds after {start})")
    for label, value in rows:
        print(f"  {label:<{width}}  {value}")
    for kind, sample in v["samples"].items():
        if sample:
            print(f"  e.g. {kind}: {', '.join(sample)}")
    if a["batch_errors"]:
        print("  last batch errors: " + " | ".join(" ".join(e.split())[:150] for e in a["batch_errors"]))
    if result["log_problems"]:
        print(f"  {len(result['log_problems'])} error lines in logs ({result['run_dir']}), first:")
        for line in result["log_problems"][:8]:
            print(f"    {line}")
    print_profile(result.get("profile"))
    print(f"\nMachine: {m['nproc']} CPUs, {m['cpu_model']}, {m['ram_gb']} GB RAM, Python {m['python']},"
          f" PostgreSQL {m['postgresql']}, Redis {m['redis']}, Django {m['django']}, Celery {m['celery']}")
    print(f"Code under test: {result['code']['alerts+config']} (sha1 of alerts/**/*.py and config/*.py)")
    print(f"Reproduce: {result['command']}")
    print(f"Logs: {result['run_dir']}")


def write_json(result: dict, path: str) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(result, indent=2, default=str) + "\n")
    print(f"Wrote {path}")
