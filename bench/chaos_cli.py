"""Chaos benchmark: publish one alert through the production topology (a worker on every
queue, Celery beat, the fake Mailgun, PostgreSQL and Redis), inject one fault, and
measure whether every reader is still handed off once, and how soon after recovery.

    .venv/bin/python bench/chaos.py --scenario kill-child-send
    .venv/bin/python bench/chaos.py --scenario provider-outage --outage-seconds 600
    .venv/bin/python bench/chaos.py --scenario all --subscribers 20000 --json bench/results/chaos.json

Scenarios: {scenarios}.

It is a benchmark, not a test: it reports each scenario's figures and which of the
issue's targets it missed, and exits 0 unless it could not run (or --strict and a
target was missed). It uses the fan-out benchmark's database (stoppress_bench) and
Redis databases 10 and 11, or a throwaway redis-server or PostgreSQL cluster of its own
on a spare port for the scenarios that restart one.

This module is the command line and the run of one scenario; `--scenario all` runs
each scenario in a process of its own (each sets up Django for its own servers).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from bench.chaos_report import print_report, print_summary, reproduce_command
from bench.chaos_run import ChaosRun
from bench.constants import BROKER_DB, CACHE_DB, PG_SERVER, REDIS_SERVER, RESULTS, ROOT
from bench.faults import SCENARIOS, Fault
from bench.jobs import AlertJob, digest_hour_now, warm_up
from bench.observe import background_load
from bench.processes import Processes, backend_env, base_env
from bench.report import code_version, machine, write_json
from bench.seed import Seed, clear_run_tables, ensure_database, foreign_migrations, migrate, seed_subscribers
from bench.stores import PrivatePostgres, PrivateRedis
from bench.topology import CONCURRENCY, Topology

if TYPE_CHECKING:
    import redis

ENTRY = Path(__file__).resolve().parent / "chaos.py"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    doc = __doc__.format(scenarios=", ".join(SCENARIOS))
    parser = argparse.ArgumentParser(prog="python bench/chaos.py", description=doc.split("\n\n")[0],
                                     epilog="\n\n".join(doc.split("\n\n")[1:3]), allow_abbrev=False,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scenario", default="all", choices=[*SCENARIOS, "all"],
                        help="the fault to inject, or all of them one after another (default all)")
    parser.add_argument("--subscribers", type=int, default=0, metavar="N",
                        help="eligible readers (default: 200000 for the kills and restarts, 20000 for"
                             " the provider faults and timeout-after-accept)")
    parser.add_argument("--json", metavar="FILE", help="also write the results, keyed by scenario")
    parser.add_argument("--strict", action="store_true", help="exit 1 if a scenario missed a target")
    parser.add_argument("--timeout", type=float, default=300, metavar="S",
                        help="give up S seconds after the fault cleared (default 300)")
    parser.add_argument("--lease-seconds", type=int, default=0, metavar="S",
                        help="BATCH_LEASE_SECONDS for the worker (default: the app's own, 120)")
    parser.add_argument("--respawn-after", type=float, default=5, metavar="S",
                        help="start the worker or beat again S seconds after it exits by itself, as a"
                             " supervisor would (default 5); the exit is reported")
    faults = parser.add_argument_group("faults")
    faults.add_argument("--fault-at", type=float, default=0.3, metavar="SHARE",
                        help="mid-send faults strike once this share of readers is handed off and a"
                             " batch is SENDING (default 0.3)")
    faults.add_argument("--cut-batches", type=int, default=0, metavar="K",
                        help="kill-child-cut: kill once K batches are cut (default: as soon as a chunk"
                             " of several batches appears at once, while the cut is queueing them)")
    faults.add_argument("--restart-after", type=float, default=5, metavar="S",
                        help="kill-worker: start the worker again S seconds after the kill (default 5)")
    faults.add_argument("--down-seconds", type=float, default=5, metavar="S",
                        help="redis-restart, postgres-restart: seconds down (default 5)")
    faults.add_argument("--pg-stop-mode", choices=("fast", "immediate"), default="fast",
                        help="postgres-restart: pg_ctl stop mode (default fast)")
    faults.add_argument("--outage-seconds", type=float, default=150, metavar="S",
                        help="provider-outage: seconds of 503 from publishing (default 150; the issue's"
                             " target is for 600)")
    faults.add_argument("--backoff-cap", type=float, default=300, metavar="S",
                        help="provider-outage: the longest backoff step the calls-per-batch target"
                             " allows for (default 300, the engine's MAX_RETRY_DELAY)")
    faults.add_argument("--rate-limit", type=int, default=2, metavar="N",
                        help="provider-rate-limit: calls per second let through (default 2)")
    faults.add_argument("--retry-after", type=int, default=1, metavar="S",
                        help="provider-rate-limit: Retry-After of a 429 (default 1)")
    faults.add_argument("--slow-seconds", type=float, default=3, metavar="S",
                        help="provider-slow: seconds each call takes (default 3)")
    faults.add_argument("--timeouts", type=int, default=30, metavar="N",
                        help="timeout-after-accept: the first N calls are accepted and then answered too"
                             " late (default 30: more than the 20 batches of 20,000 readers, so that"
                             " retries time out too)")
    faults.add_argument("--hang-seconds", type=float, default=4, metavar="S",
                        help="timeout-after-accept: how long the fake holds those answers (default 4)")
    faults.add_argument("--client-timeout", type=float, default=2, metavar="S",
                        help="timeout-after-accept: the workers' ANYMAIL_REQUESTS_TIMEOUT (default 2)")
    faults.add_argument("--redis-port", type=int, default=6390, metavar="PORT",
                        help="redis-restart: first spare port to try (default 6390)")
    faults.add_argument("--pg-port", type=int, default=5440, metavar="PORT",
                        help="postgres-restart: first spare port to try (default 5440)")
    setup = parser.add_argument_group("setup")
    setup.add_argument("--settings", default="config.settings", metavar="MODULE",
                       help="DJANGO_SETTINGS_MODULE for the harness, worker and beat")
    setup.add_argument("--private-servers", action="store_true",
                       help="run every scenario on a throwaway PostgreSQL cluster and redis-server of its"
                            " own (as postgres-restart and redis-restart always do), e.g. while someone"
                            " else uses stoppress_bench or Redis databases 10-11, or migrated them for"
                            " other code")
    setup.add_argument("--reseed", action="store_true", help="seed again even if the seed matches")
    setup.add_argument("--keep-db", action="store_true",
                       help="keep the run's alert, batches, ledger and the fake's record file")
    setup.add_argument("--quiet-below", type=float, default=25, metavar="PCT",
                       help="before publishing, wait until the machine is less busy than this (default 25%%)")
    setup.add_argument("--max-quiet-wait", type=float, default=20, metavar="S",
                       help="but publish anyway after this many seconds (default 20)")
    args = parser.parse_args(argv)
    if args.subscribers < 0 or not 0 <= args.fault_at < 1 or args.rate_limit < 1 or args.cut_batches < 0:
        parser.error("--subscribers and --cut-batches must be >= 0, --fault-at in [0, 1), --rate-limit >= 1")
    return args


# -- one scenario ---------------------------------------------------------------------

@dataclass
class Servers:
    """The PostgreSQL and Redis a scenario runs on: the shared ones, or its own."""

    pg_server: str = PG_SERVER
    redis_url: str = REDIS_SERVER
    redis: PrivateRedis | None = None
    postgres: PrivatePostgres | None = None

    def remove(self) -> None:
        if self.redis:
            self.redis.remove()
        if self.postgres:
            self.postgres.remove()


def run_scenario(args: argparse.Namespace, procs: Processes) -> dict:
    fault = SCENARIOS[args.scenario](args)
    readers = args.subscribers or fault.default_subscribers
    run_dir = RESULTS / f"{datetime.now():%Y%m%d-%H%M%S}-chaos-{fault.name}-{readers}"
    run_dir.mkdir(parents=True, exist_ok=True)
    print(f"Scenario {fault.name}: {fault.about}", flush=True)
    servers = Servers()
    try:
        if fault.private_redis or args.private_servers:
            servers.redis = PrivateRedis(procs, run_dir, args.redis_port)
            servers.redis.start()
            servers.redis_url = servers.redis.url
            print(f"  private broker: redis-server pid {servers.redis.proc.pid} on :{servers.redis.port},"
                  f" no persistence, files in {servers.redis.dir}", flush=True)
        if fault.private_postgres or args.private_servers:
            servers.postgres = PrivatePostgres(run_dir, args.pg_port)
            servers.postgres.start()
            servers.pg_server = servers.postgres.server
            print(f"  private database: PostgreSQL pid {servers.postgres.postmaster_pid()} on"
                  f" :{servers.postgres.port}, cluster in {servers.postgres.dir}", flush=True)
        return _run(args, fault, readers, run_dir, procs, servers)
    finally:
        procs.stop_all()
        servers.remove()


def _run(args: argparse.Namespace, fault: Fault, readers: int, run_dir: Path, procs: Processes,
         servers: Servers) -> dict:
    os.environ.update(base_env(args.settings, pg_server=servers.pg_server, redis_server=servers.redis_url))
    code = code_version()  # before the worker imports it
    import django
    import redis

    django.setup()
    env = worker_env(args, fault)
    seed = _prepare_data(args, env, readers, servers, run_dir)
    broker = redis.Redis.from_url(f"{servers.redis_url}/{BROKER_DB}")
    broker.flushdb()  # our broker database only: no stale tasks from an earlier run
    redis.Redis.from_url(f"{servers.redis_url}/{CACHE_DB}").flushdb()
    topology = _start_topology(procs, env, run_dir, broker)
    job = AlertJob()
    job.prepare()
    background = background_load(args.quiet_below, args.max_quiet_wait)
    aligned = topology.wait_for_beat_tick()
    print(f"  publishing an alert to {seed.eligible:,} readers", flush=True)
    run = ChaosRun(args, fault, topology, job, seed.eligible, broker, servers.redis, servers.postgres)
    run.publish()
    ended = run.watch()
    print(f"  stopped watching: {ended}", flush=True)
    run.stop_senders()
    figures = run.figures(ended)
    run.tail.close()
    figures.update({
        "command": reproduce_command(args, fault, readers),
        "run_dir": str(run_dir.relative_to(ROOT)),
        "ineligible": seed.total - seed.eligible,
        "lease_seconds": int(topology.env.get("BATCH_LEASE_SECONDS", 0)) or "app default",
        "worker_env_overrides": fault.worker_env(),
        "published_after_beat_tick": aligned,
        "background_before_publish": background,
        "machine": machine(),
        "code": code,
        "private_servers": {"redis": servers.redis_url if servers.redis else None,
                            "postgres": servers.pg_server if servers.postgres else None},
    })
    if not args.keep_db:
        if not servers.postgres:
            clear_run_tables("alert", servers.pg_server)
        topology.record.unlink()
    return figures


def _prepare_data(args: argparse.Namespace, env: dict[str, str], readers: int, servers: Servers,
                  run_dir: Path) -> Seed:
    """The benchmark database on the scenario's server: created, migrated, seeded and
    cleared of earlier runs, as the fan-out benchmark does."""
    ensure_database(servers.pg_server)
    foreign = foreign_migrations(servers.pg_server)
    if foreign:
        raise RuntimeError(f"{servers.pg_server}/stoppress_bench has migrations this checkout does not"
                           f" ({', '.join(foreign)}): other code uses it; run with --private-servers")
    migrate(env, run_dir / "migrate.log")
    print(f"  seeding {readers:,} eligible subscribers ...", flush=True)
    seed = seed_subscribers(readers, "alert", force=args.reseed, server=servers.pg_server)
    clear_run_tables("alert", servers.pg_server)
    return seed


def _start_topology(procs: Processes, env: dict[str, str], run_dir: Path, broker: redis.Redis) -> Topology:
    """The fake, beat and the worker, the worker answering pings and warmed up."""
    from config.celery import app

    topology = Topology(procs, env, run_dir)
    port = topology.start_fake()
    topology.env = {**env, **backend_env("mailgun", port)}
    topology.start_beat()
    topology.start_worker()
    topology.wait_for_worker(app)
    warm_up(broker, rounds=2 * CONCURRENCY)
    return topology


def worker_env(args: argparse.Namespace, fault: Fault) -> dict[str, str]:
    """What the worker and beat run with: production's defaults, logging at INFO as in
    production, no daily digest due (it would mail the seeded digest readers through the
    same fake), and the scenario's own overrides."""
    env = dict(os.environ)
    for name in ("BATCH_LEASE_SECONDS", "ANYMAIL_REQUESTS_TIMEOUT"):
        if env.pop(name, None) is not None:
            print(f"  ignoring {name} from the environment: the worker runs with the app's default")
    env["LOG_LEVEL"] = "INFO"
    # Eleven hours ahead, the last daily digest fell due 13 hours ago: past the
    # 12-hour catch-up, so beat's digest tick finds nothing to send.
    env["DIGEST_HOUR"] = str((digest_hour_now() + 11) % 24)
    if args.lease_seconds:
        env["BATCH_LEASE_SECONDS"] = str(args.lease_seconds)
    env.update(fault.worker_env())
    return env


# -- every scenario, each in a process of its own -----------------------------------

def run_all(args: argparse.Namespace, argv: list[str]) -> dict:
    results: dict[str, dict] = {}
    stamp = f"{datetime.now():%Y%m%d-%H%M%S}"
    base = _without_options(argv, {"--scenario", "--json", "--strict"})
    for name in SCENARIOS:
        out = RESULTS / f"{stamp}-chaos-all-{name}.json"
        out.parent.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, str(ENTRY), "--scenario", name, "--json", str(out), *base]
        print(f"\n=== {name} ===", flush=True)
        child = subprocess.Popen(cmd, cwd=ROOT)
        try:
            code = child.wait()
        except BaseException:
            _stop_child(child)
            raise
        if code == 130:
            raise KeyboardInterrupt
        if out.exists():
            results.update(json.loads(out.read_text()))
            out.unlink()
        else:
            results[name] = {"scenario": name, "outcome": f"did not run (exit {code}); see the output above"}
    return results


def _stop_child(child: subprocess.Popen) -> None:
    """Let a scenario interrupted with us stop its own processes and servers."""
    if child.poll() is None:
        child.send_signal(signal.SIGTERM)
    try:
        child.wait(timeout=60)
    except subprocess.TimeoutExpired:
        child.kill()
        child.wait(timeout=10)


def _without_options(argv: list[str], names: set[str]) -> list[str]:
    """argv without the given options (as `--name value` or `--name=value`, or a flag)."""
    flags = {"--strict"}
    kept, skip = [], False
    for item in argv:
        if skip:
            skip = False
        elif item.split("=", 1)[0] in names:
            skip = "=" not in item and item not in flags
        else:
            kept.append(item)
    return kept


def _raise_on_signal(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    # Explicitly: a shell starting us in the background may have left SIGINT ignored.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _raise_on_signal)
    signal.signal(signal.SIGHUP, _raise_on_signal)
    started = time.time()
    procs = Processes()
    try:
        if args.scenario == "all":
            results = run_all(args, argv)
        else:
            results = {args.scenario: run_scenario(args, procs)}
            print_report(results[args.scenario])
    except KeyboardInterrupt:
        print("\nInterrupted: stopped the worker, beat, the fake and any private server", file=sys.stderr)
        return 130
    except RuntimeError as error:  # could not run: a server or process did not start
        print(f"\nchaos: {error}", file=sys.stderr)
        return 2
    finally:
        procs.stop_all()
    if args.scenario == "all":
        print_summary(results, time.time() - started)
    if args.json:
        write_json(results, args.json)
    missed = [name for name, result in results.items() if result.get("outcome") != "ok"]
    return 1 if args.strict and missed else 0
