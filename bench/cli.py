"""Fan-out benchmark: publish one alert to N subscribers through real Celery workers
and a fake email provider, and measure how fast every eligible reader is handed off.

    .venv/bin/python bench/fanout.py                      # 100,000 subscribers, Mailgun
    .venv/bin/python bench/fanout.py --backend smtp --subscribers 20000
    .venv/bin/python bench/fanout.py --subscribers 1000000 --json bench/results/1m.json
    .venv/bin/python bench/fanout.py --mode digest         # one daily-digest tick instead

It uses its own PostgreSQL database (stoppress_bench) and its own Redis databases
(broker 10, cache 11), so it can run while others run the test suite. The seeded
subscribers are kept and reused by the next run with the same --subscribers; only the
run's alert, batches and ledger are removed (unless --keep-db).

This is a benchmark, not a test: it reports duplicates and missing recipients rather
than asserting, and always exits 0 unless it could not run at all (or --strict).

This module is the command line and the run loop (runs, the median run, signals);
bench/fanout.py is the file to run, and the other modules of bench/ each do one job.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path

from bench.constants import BROKER_DB, CACHE_DB, REDIS_SERVER, RESULTS, ROOT
from bench.jobs import AlertJob, DigestJob, digest_hour_now, warm_up
from bench.observe import ProcessSampler, background_load, machine_busy, service_pids, watch
from bench.processes import (
    FAKES,
    Processes,
    backend_env,
    base_env,
    mailgun_control,
    mailgun_stats,
    start_fake,
    start_workers,
    wait_for_workers,
)
from bench.profiling import start_profilers, stop_profilers, summarise_profile
from bench.report import code_version, fmt_s, machine, print_report, reproduce_command, write_json
from bench.seed import Seed, clear_run_tables, ensure_database, migrate, seed_subscribers
from bench.verify import log_problems, verify

# Three pool processes on 2 cores: each spends about half its time waiting for
# PostgreSQL or the provider, and a third keeps both cores busy meanwhile.
DEFAULT_WORKERS, DEFAULT_CONCURRENCY = 1, 3


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python bench/fanout.py", description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--subscribers", type=int, default=100_000, metavar="N",
                        help="eligible subscribers (ineligible ones are added on top; default 100000)")
    parser.add_argument("--mode", choices=("alert", "digest"), default="alert",
                        help="publish one breaking alert (default), or run one daily digest tick"
                             " for subscribers who take digests")
    parser.add_argument("--backend", choices=sorted(FAKES), default="mailgun",
                        help="the provider whose fake (tests/fakes/) the workers send to (default mailgun)")
    parser.add_argument("--workers", type=int, default=DEFAULT_WORKERS, metavar="K",
                        help=f"celery worker processes (default {DEFAULT_WORKERS})")
    parser.add_argument("--concurrency", type=int, default=DEFAULT_CONCURRENCY, metavar="C",
                        help=f"prefork children per worker (default {DEFAULT_CONCURRENCY})")
    parser.add_argument("--batch-size", type=int, default=0, metavar="N",
                        help="FANOUT_BATCH_SIZE for the workers (default: the provider's limit)")
    parser.add_argument("--runs", type=int, default=1, metavar="R",
                        help="publish R alerts one after another with the same workers and report"
                             " the median run (default 1)")
    parser.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    parser.add_argument("--timeout", type=float, default=600, metavar="S",
                        help="give up waiting after this many seconds (default 600)")
    parser.add_argument("--stall", type=float, default=30, metavar="S",
                        help="stop early when nothing was handed off and the alert did not change"
                             " for this many seconds (default 30)")
    parser.add_argument("--keep-db", action="store_true",
                        help="keep the run's alert, batches and ledger, and the fake's record"
                             " file, afterwards (for inspection)")
    parser.add_argument("--reseed", action="store_true",
                        help="seed the subscribers again even if the existing seed matches")
    parser.add_argument("--no-warmup", dest="warmup", action="store_false",
                        help="publish to workers that have not run a task yet")
    parser.add_argument("--quiet-below", type=float, default=25, metavar="PCT",
                        help="before publishing, wait until the machine is less busy than this (default 25%%)")
    parser.add_argument("--max-quiet-wait", type=float, default=120, metavar="S",
                        help="but publish anyway after this many seconds (default 120)")
    parser.add_argument("--fail-rate", type=float, default=0.0, metavar="P",
                        help="Mailgun only: answer this share of API calls with HTTP 500, to"
                             " exercise retries (duplicates and missing must stay 0)")
    parser.add_argument("--fallback", choices=sorted(set(FAKES) - {"smtp", "smtp-aiosmtpd"}), default=None,
                        help="EMAIL_BACKEND_FALLBACK: a second provider's fake (failover)")
    parser.add_argument("--primary-fails-after", type=float, default=None, metavar="SHARE",
                        help="with --fallback: the primary's fake answers 503 to every call once it"
                             " has accepted this share of the audience (e.g. 0.3)")
    parser.add_argument("--failover-after", type=float, default=None, metavar="S",
                        help="FAILOVER_AFTER_SECONDS for the workers (default: the setting's default)")
    parser.add_argument("--send-rate", type=float, default=0, metavar="N",
                        help="EMAIL_SEND_RATE for the workers, recipients a second (default: no limit)")
    parser.add_argument("--kill-child-at", type=float, default=None, metavar="S",
                        help="SIGKILL one worker pool child S seconds after publishing, to exercise"
                             " crash recovery (sets BATCH_LEASE_SECONDS=10 unless it is set)")
    parser.add_argument("--settings", default="config.settings", metavar="MODULE",
                        help="DJANGO_SETTINGS_MODULE for the benchmark and workers, e.g. an overlay"
                             " that tries a configuration change (default config.settings)")
    parser.add_argument("--py-spy", dest="py_spy", action="store_true",
                        help="sample the workers with py-spy (pip install py-spy) and print where"
                             " batch_send spends its wall time")
    parser.add_argument("--strict", action="store_true",
                        help="exit 1 if there are duplicates, missing or unexpected recipients")
    args = parser.parse_args(argv)
    if min(args.subscribers, args.workers, args.concurrency, args.runs) < 1:
        parser.error("--subscribers, --workers, --concurrency and --runs must be at least 1")
    if args.fail_rate and args.backend != "mailgun":
        parser.error("--fail-rate needs --backend mailgun")
    if args.primary_fails_after is not None and (not args.fallback or args.backend.startswith("smtp")):
        parser.error("--primary-fails-after needs --fallback and an API provider as --backend")
    if args.fallback and (args.fallback == args.backend or args.backend.startswith("smtp")):
        parser.error("--fallback needs an API provider as --backend, and another one as itself")
    return args

def run(args: argparse.Namespace, procs: Processes) -> dict:
    os.environ.update(base_env(args.settings))
    if args.kill_child_at is not None:
        # A killed child's batch is taken over once its lease expires (default 120 s).
        os.environ.setdefault("BATCH_LEASE_SECONDS", "10")
    if args.batch_size:
        os.environ["FANOUT_BATCH_SIZE"] = str(args.batch_size)
    if args.send_rate:
        os.environ["EMAIL_SEND_RATE"] = str(args.send_rate)
    if args.failover_after is not None:
        os.environ["FAILOVER_AFTER_SECONDS"] = str(args.failover_after)
    env = dict(os.environ)
    run_dir = RESULTS / f"{datetime.now():%Y%m%d-%H%M%S}-{args.mode}-{args.backend}-{args.subscribers}"
    run_dir.mkdir(parents=True, exist_ok=True)

    code = code_version()  # before the workers import it
    import django

    django.setup()  # connects to nothing yet
    ensure_database()
    migrate(env, run_dir / "migrate.log")
    print(f"Seeding {args.subscribers:,} eligible subscribers ...", flush=True)
    seed = seed_subscribers(args.subscribers, args.mode, force=args.reseed)
    print("  reused the existing seed" if seed.reused else f"  seeded {seed.total:,} rows in {seed.seconds:.1f} s",
          flush=True)
    clear_run_tables(args.mode)
    if args.mode == "digest":
        env["DIGEST_HOUR"] = os.environ["DIGEST_HOUR"] = str(digest_hour_now())

    import redis

    from config.celery import app

    broker = redis.Redis.from_url(f"{REDIS_SERVER}/{BROKER_DB}")
    broker.flushdb()  # our broker database only: no stale tasks from an earlier run
    redis.Redis.from_url(f"{REDIS_SERVER}/{CACHE_DB}").flushdb()

    port, record, fake = start_fake(procs, args.backend, run_dir)
    worker_env = {**env, **backend_env(args.backend, port)}
    fallback_port = fallback_pid = None
    if args.fallback:
        # The fallback's fake appends to the same record file: one list of who got it.
        fallback_port, _, fallback_fake = start_fake(procs, args.fallback, run_dir, record=record,
                                                     log_name="fake-fallback.log")
        fallback_pid = fallback_fake.pid
        fallback = backend_env(args.fallback, fallback_port)
        worker_env.update(fallback, EMAIL_BACKEND=worker_env["EMAIL_BACKEND"],
                          EMAIL_BACKEND_FALLBACK=fallback["EMAIL_BACKEND"])
    workers = start_workers(procs, args, worker_env, run_dir)
    wait_for_workers(app, workers, procs)
    if args.warmup:
        warm_up(broker, rounds=2 * args.workers * args.concurrency)
    if args.fail_rate:
        mailgun_control(port, {"failure_rate": args.fail_rate, "status": 500, "seed": 1})
    profilers = start_profilers(procs, workers, run_dir) if args.py_spy else []
    setup = Setup(args, seed, record, port, [proc.pid for _, proc in workers], fake.pid, procs,
                  fallback_port, fallback_pid)
    runs = []
    for number in range(1, args.runs + 1):
        if number > 1:
            clear_run_tables(args.mode)
        runs.append(measure_once(setup, number))
        if runs[-1]["ended_because"] != "done":
            break  # a run that failed would only poison the next one
    stop_profilers(profilers)
    procs.stop_all()

    result = dict(median_run(runs))
    result.update({
        "subscribers": seed.eligible,
        "ineligible": seed.total - seed.eligible,
        "seed": asdict(seed),
        "mode": args.mode,
        "backend": args.backend,
        "workers": args.workers,
        "concurrency": args.concurrency,
        "batch_size": args.batch_size,
        "warmup": args.warmup,
        "settings": args.settings,
        "fail_rate": args.fail_rate,
        "kill_child_at": args.kill_child_at,
        "fallback": args.fallback,
        "primary_fails_after": args.primary_fails_after,
        "send_rate_limit": args.send_rate,
        "runs": runs,
        "best_last_handoff_s": min((r["last_handoff_s"] for r in runs if r["last_handoff_s"]), default=None),
        "best_first_handoff_s": min((r["first_handoff_s"] for r in runs if r["first_handoff_s"]), default=None),
        "log_problems": log_problems(run_dir),
        "profile": summarise_profile([out for _, out in profilers], sum(r["batches"] for r in runs),
                                     "batch_send" if args.mode == "alert" else "digest_batch_send")
                   if profilers else None,
        "machine": machine(),
        "code": code,
        "command": reproduce_command(args),
        "run_dir": str(run_dir.relative_to(ROOT)),
    })
    if not args.keep_db:
        clear_run_tables(args.mode)
        record.unlink()  # 60 MB a million recipients; the figures are in the result
    return result


@dataclass
class Setup:
    args: argparse.Namespace
    seed: Seed
    record: Path
    port: int
    worker_pids: list[int]
    fake_pid: int
    procs: Processes
    fallback_port: int | None = None
    fallback_pid: int | None = None


def measure_once(setup: Setup, number: int) -> dict:
    """Publish one alert and measure it; returns this run's figures."""
    args, expected = setup.args, setup.seed.eligible
    background = background_load(args.quiet_below, args.max_quiet_wait)
    fakes = [setup.fake_pid] + ([setup.fallback_pid] if setup.fallback_pid else [])
    sampler = ProcessSampler({"workers": setup.worker_pids, "fake": fakes, **service_pids()})
    sampler.sample()
    idle_rss = sampler.peak_single
    offset = setup.record.stat().st_size
    before = mailgun_stats(setup.port) if not args.backend.startswith("smtp") else {}
    before_fallback = mailgun_stats(setup.fallback_port) if setup.fallback_port else {}
    if args.primary_fails_after is not None:
        clear_failover_record()
        mailgun_control(setup.port, {"fail_after_recipients":
                                     before.get("recipients", 0) + int(expected * args.primary_fails_after)})
    job = AlertJob() if args.mode == "alert" else DigestJob()
    job.prepare()
    what = "publishing an alert" if args.mode == "alert" else "ticking daily digests"
    print(f"Run {number}/{args.runs}: {what} for {expected:,} readers via {args.backend}"
          f" ({args.workers} worker(s) x {args.concurrency}) ...", flush=True)

    busy_before = machine_busy()
    t0 = time.time()
    job.start()
    seen = watch(setup.record, offset, expected, t0, job, sampler, setup.procs, args.timeout, args.stall,
                 args.kill_child_at)
    busy = machine_busy() - busy_before

    stats = mailgun_stats(setup.port) if not args.backend.startswith("smtp") else {}
    # The fake counts from its start; this run's share is the difference.
    # (Its unique/duplicate counts span all runs, so they are left out.)
    stats = {k: stats[k] - before.get(k, 0) for k in ("calls", "recipients", "rejected") if k in stats}
    failover = None
    if setup.fallback_port:
        primary_last = mailgun_stats(setup.port).get("last_accepted_at")
        after = mailgun_stats(setup.fallback_port)
        if args.primary_fails_after is not None:
            mailgun_control(setup.port, {"fail_after_recipients": None})
        last_handoff_epoch = t0 + seen.last_handoff_s if seen.last_handoff_s else None
        failover = {
            "primary_recipients": stats.get("recipients"),
            "fallback_recipients": after.get("recipients", 0) - before_fallback.get("recipients", 0),
            "fallback_calls": after.get("calls", 0) - before_fallback.get("calls", 0),
            "primary_rejected_calls": stats.get("rejected"),
            # The primary's first refusal comes right after its last acceptance.
            "first_failure_s": _round(primary_last - t0) if primary_last else None,
            "first_failure_to_last_handoff_s": _round(last_handoff_epoch - primary_last)
            if primary_last and last_handoff_epoch and args.primary_fails_after is not None else None,
        }
    checked = verify(job, args.mode, setup.record, offset, args.backend)
    summary = job.summary(t0)
    complete = checked["missing"] == 0 and seen.last_handoff_s
    figures = {
        "run": number,
        "failover": failover,
        "send_rate": _send_rate(args.send_rate, checked["unique_recorded"], seen),
        "ended_because": seen.ended_because,
        "killed_pool_child": seen.killed,
        "first_handoff_s": _round(seen.first_handoff_s),
        "last_handoff_s": _round(seen.last_handoff_s) if complete else None,
        "last_seen_handoff_s": _round(seen.last_handoff_s),
        "recipients_per_s": round(checked["unique_recorded"] / seen.last_handoff_s) if seen.last_handoff_s else 0,
        "provider_calls": stats.get("calls", checked["provider_calls"]),
        "duplicates": checked["duplicates"],
        "missing": checked["missing"],
        "unexpected": checked["unexpected"],
        "worker_peak_rss_mb": round(sampler.peak_single / 2**20, 1),
        "worker_peak_rss_sum_mb": round(sampler.peak_sum / 2**20, 1),
        "worker_idle_rss_mb": round(idle_rss / 2**20, 1),
        "worker_peak_rss_by_pid_mb": {str(k): round(v / 2**20, 1) for k, v in sampler.per_pid.items()},
        "worker_processes": len(sampler.per_pid),
        "rss_samples": sampler.samples,
        "cpu_seconds": {
            "workers": sampler.cpu_seconds("workers"),
            "fake_provider": sampler.cpu_seconds("fake"),
            "postgres": sampler.cpu_seconds("postgres"),
            "redis": sampler.cpu_seconds("redis"),
            "whole_machine": round(busy, 2),
            "elapsed": round(seen.waited_s, 2),
        },
        "background_before_publish": background,
        "batches": sum(v["n"] for v in summary["batches"].values()),
        "verification": checked,
        "provider_stats": stats,
        "alert": summary,
    }
    print(f"  first hand-off {fmt_s(figures['first_handoff_s'])}, last {fmt_s(figures['last_seen_handoff_s'])},"
          f" duplicates {figures['duplicates']}, missing {figures['missing']}, unexpected {figures['unexpected']},"
          f" machine busy before {background['cpu_percent']}%: {seen.ended_because}", flush=True)
    return figures


def clear_failover_record() -> None:
    """Forget the primary's health (alerts/sending/failover.py) before a run that breaks it."""
    import redis

    client = redis.Redis.from_url(f"{REDIS_SERVER}/{CACHE_DB}")
    for key in client.scan_iter("stoppress:failover:*"):
        client.delete(key)


def _send_rate(limit: float, recorded: int, seen) -> dict | None:
    """With EMAIL_SEND_RATE: the rate measured between the first hand-off and the last,
    leaving out the bucket's one-second burst at the start (it is full when a send
    begins), and how far that is from the limit."""
    if not limit or not seen.last_handoff_s or seen.last_handoff_s <= seen.first_handoff_s:
        return None
    steady = max(recorded - limit, 0) / (seen.last_handoff_s - seen.first_handoff_s)
    return {"limit": limit, "measured": round(steady, 1), "off_by_percent": round(100 * (steady - limit) / limit, 2),
            "overall": round(recorded / seen.last_handoff_s, 1)}


def median_run(runs: list[dict]) -> dict:
    """The run whose last hand-off is the median (a failed run counts as slowest)."""
    ordered = sorted(runs, key=lambda r: r["last_handoff_s"] or float("inf"))
    return ordered[(len(ordered) - 1) // 2]


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def _raise_on_signal(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # Explicitly: a shell starting us in the background may have left SIGINT ignored.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _raise_on_signal)
    signal.signal(signal.SIGHUP, _raise_on_signal)
    procs = Processes()
    try:
        result = run(args, procs)
    except KeyboardInterrupt:
        print("\nInterrupted: stopping workers and fakes", file=sys.stderr)
        return 130
    finally:
        procs.stop_all()
    print_report(result)
    if args.json:
        write_json(result, args.json)
    bad = any(r["duplicates"] or r["missing"] or r["unexpected"] for r in result["runs"])
    return 1 if args.strict and bad else 0
