#!/usr/bin/env python
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
"""

from __future__ import annotations

import argparse
import collections
import ctypes
import hashlib
import hmac
import json
import os
import platform
import random
import re
import select
import shlex
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

DB_NAME = "stoppress_bench"
PG_SERVER = "postgres://postgres@127.0.0.1:5432"
REDIS_SERVER = "redis://127.0.0.1:6379"
BROKER_DB, CACHE_DB = 10, 11  # ours alone; the test suite uses 12-15
API_KEY = "bench-api-key"
SENDER_DOMAIN = "mg.news.example.com"
EMAIL_HASH_KEY = "bench-email-hash-key"
SECRET_KEY = "bench-secret-key-not-for-production-" + "b" * 24
RESULTS = ROOT / "bench" / "results"

# Bump when the shape of the seeded data changes, so an old seed is not reused.
SEED_VERSION = 3
# Share of rows in each category other than "eligible". "lifted" rows are eligible: their
# suppression was lifted, so they must be mailed. "other_frequency" rows take digests in
# the alert benchmark and alerts as they happen in the digest benchmark.
MIX = (("unsubscribed", 0.01), ("pending", 0.01), ("suppressed", 0.005), ("other_frequency", 0.01),
       ("lifted", 0.002))
# What the eligible subscribers of each --mode receive.
FREQUENCY = {"alert": ("immediate", "daily"), "digest": ("daily", "immediate")}
DOMAINS = ("example.com", "example.net", "example.org", "mail.example.com", "news-readers.example")

RSS_EVERY = 0.05  # seconds between worker memory samples
# Three pool processes on 2 cores: each spends about half its time waiting for
# PostgreSQL or the provider, and a third keeps both cores busy meanwhile.
DEFAULT_WORKERS, DEFAULT_CONCURRENCY = 1, 3


# --- Command line and environment -----------------------------------------------------

def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python bench/fanout.py", description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--subscribers", type=int, default=100_000, metavar="N",
                        help="eligible subscribers (ineligible ones are added on top; default 100000)")
    parser.add_argument("--mode", choices=("alert", "digest"), default="alert",
                        help="publish one breaking alert (default), or run one daily digest tick"
                             " for subscribers who take digests")
    parser.add_argument("--backend", choices=("mailgun", "smtp"), default="mailgun")
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
    return args


def base_env(settings_module: str = "config.settings") -> dict[str, str]:
    """What the benchmark, migrate and the workers all run with."""
    return {
        "DJANGO_SETTINGS_MODULE": settings_module,
        "SECRET_KEY": SECRET_KEY,
        "EMAIL_HASH_KEY": EMAIL_HASH_KEY,
        "DEBUG": "0",
        "SECURE_SSL_REDIRECT": "0",
        "ALLOWED_HOSTS": "news.example.com,127.0.0.1,localhost",
        "SITE_URL": "https://news.example.com",
        "DATABASE_URL": f"{PG_SERVER}/{DB_NAME}",
        "CELERY_BROKER_URL": f"{REDIS_SERVER}/{BROKER_DB}",
        "CACHE_REDIS_URL": f"{REDIS_SERVER}/{CACHE_DB}",
        "LOG_LEVEL": "WARNING",
        "DEFAULT_FROM_EMAIL": "The Daily Courier <alerts@news.example.com>",
        "PUBLICATION_NAME": "The Daily Courier",
        # With DEBUG off, system checks (run by migrate and the worker) refuse to start
        # without webhook secrets; the benchmark never receives webhooks.
        "ANYMAIL_WEBHOOK_SECRET": "bench:bench",
        "MAILGUN_WEBHOOK_SIGNING_KEY": "bench-signing-key",
        "PYTHONUNBUFFERED": "1",
    }


def backend_env(backend: str, port: int) -> dict[str, str]:
    if backend == "mailgun":
        return {
            "EMAIL_BACKEND": "anymail.backends.mailgun.EmailBackend",
            "MAILGUN_API_KEY": API_KEY,
            "MAILGUN_SENDER_DOMAIN": SENDER_DOMAIN,
            "MAILGUN_API_URL": f"http://127.0.0.1:{port}/v3",
        }
    return {
        "EMAIL_BACKEND": "django.core.mail.backends.smtp.EmailBackend",
        "EMAIL_HOST": "127.0.0.1",
        "EMAIL_PORT": str(port),
    }


# --- Subprocesses ---------------------------------------------------------------------

def _die_with_parent() -> None:
    # If the benchmark is SIGKILLed, its children still get SIGTERM (Linux only).
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


class Processes:
    """Every subprocess the benchmark starts, each in its own process group, so that
    stopping one also stops its children (Celery's prefork pool)."""

    def __init__(self) -> None:
        self.started: list[tuple[str, subprocess.Popen]] = []

    def start(self, name: str, cmd: list[str], env: dict[str, str], log: Path,
              stdout_pipe: bool = False) -> subprocess.Popen:
        log_file = open(log, "ab")  # noqa: SIM115  (the child keeps it)
        proc = subprocess.Popen(
            # preexec_fn is safe here: the benchmark starts no threads of its own.
            cmd, cwd=ROOT, env=env, start_new_session=True, preexec_fn=_die_with_parent,  # noqa: PLW1509
            stdout=subprocess.PIPE if stdout_pipe else log_file, stderr=log_file,
        )
        log_file.close()
        self.started.append((name, proc))
        return proc

    def dead(self) -> list[str]:
        return [f"{name} (exit {proc.returncode})" for name, proc in self.started
                if proc.poll() is not None]

    def stop_all(self, grace: float = 10.0) -> None:
        """SIGTERM every group (warm shutdown), then SIGKILL whatever is left."""
        running = [(name, proc) for name, proc in self.started if proc.poll() is None]
        for _, proc in running:
            _signal_group(proc, signal.SIGTERM)
        deadline = time.monotonic() + grace
        for _, proc in running:
            try:
                proc.wait(timeout=max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                pass
        for _, proc in self.started:
            # The group may outlive its leader (pool children): kill it regardless.
            _signal_group(proc, signal.SIGKILL)
            if proc.poll() is None:
                proc.wait(timeout=5)
        self.started.clear()


def _signal_group(proc: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)  # our child's own group: start_new_session=True
    except (ProcessLookupError, PermissionError):
        pass


def start_fake(procs: Processes, backend: str, run_dir: Path) -> tuple[int, Path, subprocess.Popen]:
    """Start the fake provider on a free port; return (port, record file, process)."""
    record = run_dir / "accepted.tsv"
    record.touch()
    module = "tests.fakes.mailgun" if backend == "mailgun" else "tests.fakes.smtp"
    cmd = [sys.executable, "-m", module, "--port", "0", "--record", str(record)]
    if backend == "mailgun":
        cmd += ["--api-key", API_KEY]
    proc = procs.start(f"fake {backend}", cmd, dict(os.environ), run_dir / "fake.log", stdout_pipe=True)
    ready, _, _ = select.select([proc.stdout], [], [], 15)
    line = proc.stdout.readline().decode() if ready else ""
    match = re.search(r":(\d+)(/|$)", line.strip())
    if not match:
        raise RuntimeError(f"fake {backend} did not start: {line!r}; see {run_dir / 'fake.log'}")
    return int(match[1]), record, proc


def start_workers(procs: Processes, args: argparse.Namespace, env: dict[str, str],
                  run_dir: Path) -> list[tuple[str, subprocess.Popen]]:
    workers = []
    for index in range(args.workers):
        name = f"bench{index}-{os.getpid()}"
        cmd = [sys.executable, "-m", "celery", "-A", "config", "worker",
               "-Q", "alerts,transactional,digests", "-P", "prefork",
               f"--concurrency={args.concurrency}", "--without-gossip", "--without-mingle",
               "--without-heartbeat", "--loglevel=WARNING", "-n", f"{name}@%h"]
        proc = procs.start(f"worker {name}", cmd, env, run_dir / f"worker{index}.log")
        workers.append((name, proc))
    return workers


def wait_for_workers(app, workers: list[tuple[str, subprocess.Popen]], procs: Processes,
                     timeout: float = 90) -> None:
    """Ping until every worker answers: then it is consuming, its pool already forked."""
    waiting = {name for name, _ in workers}
    deadline = time.monotonic() + timeout
    while waiting:
        if procs.dead():
            raise RuntimeError(f"exited during startup: {', '.join(procs.dead())}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"workers not ready after {timeout:.0f}s: {sorted(waiting)}")
        for reply in app.control.ping(timeout=0.5) or []:
            for node in reply:
                waiting.discard(node.split("@", 1)[0])


def warm_up(broker, rounds: int) -> None:
    """Run no-op tasks (ids that do not exist) so each pool child has run a task (lazy
    imports done) and this process has its broker connection open, as in a long-running
    deployment; then wait for the queue to drain. (Celery closes the database connection
    after every task anyway.)"""
    from alerts.tasks import fan_out_alert, send_batch

    for _ in range(rounds):
        send_batch.delay(batch_id=0)
        fan_out_alert.delay(alert_id=0)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if broker.llen("alerts") == 0 and broker.hlen("unacked") == 0:
            break
        time.sleep(0.05)
    time.sleep(0.3)


# --- Database: create, migrate, seed --------------------------------------------------

def ensure_database() -> None:
    import psycopg

    with psycopg.connect(f"{PG_SERVER}/postgres", autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [DB_NAME]).fetchone()
        if not exists:
            conn.execute(f'CREATE DATABASE "{DB_NAME}"')
            print(f"Created database {DB_NAME}")


def migrate(env: dict[str, str], log: Path) -> None:
    with open(log, "ab") as out:
        result = subprocess.run([sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"],
                                cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, check=False)
    if result.returncode:
        raise RuntimeError(f"manage.py migrate failed; see {log}")


def bench_dsn() -> str:
    return f"{PG_SERVER}/{DB_NAME}"


@dataclass
class Seed:
    eligible: int
    total: int
    by_category: dict[str, int]
    seconds: float = 0.0
    reused: bool = False


def seed_subscribers(n: int, mode: str, force: bool) -> Seed:
    """Make sure the bench database holds exactly the seed for n eligible subscribers
    of this mode, seeding with COPY only if the existing one does not match."""
    import psycopg

    with psycopg.connect(bench_dsn(), autocommit=True) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS bench_seed (eligible integer, total integer,"
                     " version integer, hash_key text, by_category jsonb, seeded_at timestamptz)")
        conn.execute("ALTER TABLE bench_seed ADD COLUMN IF NOT EXISTS mode text")
        if not force:
            current = _current_seed(conn, n, mode)
            if current:
                return current
        started = time.perf_counter()
        _check_columns(conn)
        conn.execute("TRUNCATE alerts_subscriber, alerts_suppression, alerts_alert, bench_seed"
                     " RESTART IDENTITY CASCADE")
        seed = _copy_subscribers(conn, n, mode)
        conn.execute("VACUUM ANALYZE alerts_subscriber")
        conn.execute("VACUUM ANALYZE alerts_suppression")
        seed.seconds = time.perf_counter() - started
        conn.execute("INSERT INTO bench_seed (eligible, total, version, hash_key, by_category, seeded_at, mode)"
                     " VALUES (%s, %s, %s, %s, %s, now(), %s)",
                     [seed.eligible, seed.total, SEED_VERSION, EMAIL_HASH_KEY,
                      json.dumps(seed.by_category), mode])
        # Seeding a million rows writes gigabytes of WAL: checkpoint now, so the
        # checkpoints it would trigger do not land in the measured run.
        conn.execute("CHECKPOINT")
    return seed


def _current_seed(conn, n: int, mode: str) -> Seed | None:
    row = conn.execute("SELECT eligible, total, by_category FROM bench_seed"
                       " WHERE version = %s AND hash_key = %s AND mode = %s",
                       [SEED_VERSION, EMAIL_HASH_KEY, mode]).fetchone()
    if not row or row[0] != n:
        return None
    total = conn.execute("SELECT count(*) FROM alerts_subscriber").fetchone()[0]
    eligible = conn.execute(f"SELECT count(*) FROM alerts_subscriber s WHERE {eligible_where(mode)}",
                            {"at": datetime.now(UTC)}).fetchone()[0]
    if (total, eligible) != (row[1], n):
        print(f"Existing seed changed (total {total}, eligible {eligible}): seeding again")
        return None
    return Seed(eligible=n, total=total, by_category=row[2], reused=True)


def _check_columns(conn) -> None:
    """COPY names its columns; a NOT NULL column without a default added since would
    make it fail obscurely, so say which."""
    ours = {"id", "email", "email_hmac", "status", "marketing_consent", "frequency", "time_zone",
            "source", "created_at", "confirmed_at", "unsubscribed_at"}
    rows = conn.execute(
        "SELECT column_name FROM information_schema.columns WHERE table_name = 'alerts_subscriber'"
        " AND is_nullable = 'NO' AND column_default IS NULL AND is_identity = 'NO'").fetchall()
    unknown = sorted({r[0] for r in rows} - ours)
    if unknown:
        raise RuntimeError(f"alerts_subscriber has new NOT NULL columns the seed does not fill: {unknown}")


def _copy_subscribers(conn, n: int, mode: str) -> Seed:
    from alerts.addresses import email_hmac

    base = hmac.new(EMAIL_HASH_KEY.encode(), digestmod=hashlib.sha256)
    rng = random.Random(20260101)
    hour_ago = (datetime.now(UTC) - timedelta(hours=1)).isoformat()
    half_hour_ago = (datetime.now(UTC) - timedelta(minutes=30)).isoformat()
    counts: collections.Counter[str] = collections.Counter()
    suppressions: list[str] = []
    eligible = index = 0
    usual, other = FREQUENCY[mode]
    with conn.cursor() as cursor, cursor.copy(
        "COPY alerts_subscriber (email, email_hmac, status, marketing_consent, frequency,"
        " time_zone, source, created_at, confirmed_at, unsubscribed_at) FROM STDIN"
    ) as copy:
        lines: list[str] = []
        while eligible < n:
            index += 1
            category = _category(rng.random())
            email = f"reader{index}@{DOMAINS[index % len(DOMAINS)]}"
            mac = base.copy()
            mac.update(email.encode())
            digest = mac.hexdigest()
            if index == 1 and digest != email_hmac(email):
                raise RuntimeError("seed HMAC differs from alerts.addresses.email_hmac")
            status = {"unsubscribed": "unsubscribed", "pending": "pending"}.get(category, "confirmed")
            confirmed = r"\N" if category == "pending" else hour_ago
            left = half_hour_ago if category == "unsubscribed" else r"\N"
            frequency = other if category == "other_frequency" else usual
            lines.append(f"{email}\t{digest}\t{status}\tf\t{frequency}\t\tbench\t{hour_ago}\t{confirmed}\t{left}\n")
            if category in ("suppressed", "lifted"):
                suppressions.append(f"{digest}\t{category}\t{half_hour_ago}")
            counts[category] += 1
            eligible += category in ("eligible", "lifted")
            if len(lines) >= 20_000:
                copy.write("".join(lines))
                lines.clear()
        copy.write("".join(lines))
    _copy_suppressions(conn, suppressions, half_hour_ago)
    return Seed(eligible=eligible, total=index, by_category=dict(counts))


def _category(draw: float) -> str:
    for name, share in MIX:
        if draw < share:
            return name
        draw -= share
    return "eligible"


def _copy_suppressions(conn, rows: list[str], when: str) -> None:
    with conn.cursor() as cursor, cursor.copy(
        "COPY alerts_suppression (email_hmac, reason, detail, event_id, created_at, lifted_at,"
        " lift_reason) FROM STDIN"
    ) as copy:
        for row in rows:
            digest, category, _ = row.split("\t")
            lifted = when if category == "lifted" else r"\N"
            reason = "manual" if category == "lifted" else "bounced"
            copy.write(f"{digest}\t{reason}\tbench\t\t{when}\t{lifted}\t{'bench' if category == 'lifted' else ''}\n")


# Eligibility as the product defines it, written out independently of alerts.fanout and
# alerts.digests so that a bug there shows up as missing or unexpected recipients.
# %(at)s is when the alert was published.
def eligible_where(mode: str) -> str:
    unsuppressed = ("NOT EXISTS (SELECT 1 FROM alerts_suppression x WHERE x.email_hmac = s.email_hmac"
                    " AND x.lifted_at IS NULL)")
    if mode == "digest":
        # Every seeded subscriber has the publication's time zone ('').
        return f"s.status = 'confirmed' AND s.frequency = 'daily' AND {unsuppressed}"
    return f"s.status = 'confirmed' AND s.frequency = 'immediate' AND s.confirmed_at <= %(at)s AND {unsuppressed}"


def clear_run_tables(mode: str) -> None:
    import psycopg

    with psycopg.connect(bench_dsn(), autocommit=True) as conn:
        digest_runs = conn.execute("SELECT to_regclass('alerts_digestrun')").fetchone()[0]
        conn.execute("TRUNCATE alerts_delivery, alerts_batch, alerts_alert"
                     f"{', alerts_digestrun' if digest_runs else ''} RESTART IDENTITY CASCADE")
        if mode == "digest":
            # Sent digests move last_digest_at on; the next run must find everyone due.
            conn.execute("UPDATE alerts_subscriber SET last_digest_at = NULL WHERE last_digest_at IS NOT NULL")


# --- The measured run -----------------------------------------------------------------

class ProcessSampler:
    """Resident memory and CPU time of the workers (each with its pool children) and
    of the fake provider, sampled from outside with psutil."""

    def __init__(self, groups: dict[str, list[int]]) -> None:
        import psutil

        self.psutil = psutil
        self.roots = {name: [psutil.Process(pid) for pid in pids] for name, pids in groups.items()}
        self.procs: dict[str, list] = {}
        self.peak_single = 0  # workers only
        self.peak_sum = 0
        self.per_pid: dict[int, int] = {}
        self.cpu: dict[int, tuple[str, float, float]] = {}  # pid -> (group, first, last)
        self.samples = 0
        self.refreshed = 0.0
        self.refresh()

    def refresh(self) -> None:
        self.procs = {}
        for name, roots in self.roots.items():
            procs = []
            for root in roots:
                try:
                    procs += [root, *root.children(recursive=True)]
                except self.psutil.Error:
                    pass
            self.procs[name] = procs
        self.refreshed = time.monotonic()

    def sample(self) -> None:
        if time.monotonic() - self.refreshed > 0.5:
            self.refresh()
        total = 0
        for name, procs in self.procs.items():
            for proc in procs:
                try:
                    with proc.oneshot():
                        rss, times = proc.memory_info().rss, proc.cpu_times()
                except self.psutil.Error:
                    continue
                used = times.user + times.system
                first = self.cpu.get(proc.pid, (name, used, used))[1]
                self.cpu[proc.pid] = (name, first, used)
                if name == "workers":
                    total += rss
                    self.peak_single = max(self.peak_single, rss)
                    self.per_pid[proc.pid] = max(self.per_pid.get(proc.pid, 0), rss)
        self.peak_sum = max(self.peak_sum, total)
        self.samples += 1

    def cpu_seconds(self, group: str) -> float:
        return round(sum(last - first for name, first, last in self.cpu.values() if name == group), 2)


def service_pids() -> dict[str, list[int]]:
    """The local PostgreSQL and Redis servers (each with its children), to report their
    CPU time too: on one machine the database is a large share of a send's cost."""
    import psutil

    found: dict[str, list[int]] = {"postgres": [], "redis": []}
    for proc in psutil.process_iter(["name", "ppid"]):
        try:
            name = proc.info["name"] or ""
            if name == "postgres" and psutil.Process(proc.info["ppid"]).name() != "postgres":
                found["postgres"].append(proc.pid)
            elif name.startswith("redis-server"):
                found["redis"].append(proc.pid)
        except psutil.Error:
            continue
    return found


def machine_busy() -> float:
    """Busy CPU seconds of the whole machine so far (all processes, all users)."""
    import psutil

    times = psutil.cpu_times()
    return sum(times) - times.idle - getattr(times, "iowait", 0.0)


@dataclass
class Observation:
    record_lines: int = 0
    first_handoff_s: float | None = None
    last_handoff_s: float | None = None
    alert_status: str = ""
    ended_because: str = ""
    waited_s: float = 0.0
    killed: str = ""


def watch(record: Path, offset: int, expected: int, t0: float, job: AlertJob | DigestJob,
          sampler: ProcessSampler, procs: Processes, timeout: float, stall: float,
          kill_at: float | None = None) -> Observation:
    """Tail the fake's record file until every expected recipient is recorded and the
    alert (or digest run) is finished, it finishes short, a process dies, or time runs out."""
    seen = Observation()
    finished = ("sent", "failed", "cancelled")
    next_rss = next_db = next_progress = last_change = t0
    finished_short_at = None
    status_seen = ""
    with open(record, "rb") as tail:
        tail.seek(offset)
        while True:
            chunk = tail.read()
            now = time.time()
            if chunk and (lines := chunk.count(b"\n")):
                seen.first_handoff_s = seen.first_handoff_s or now - t0
                seen.last_handoff_s = now - t0
                seen.record_lines += lines
                last_change = now
            if now >= next_rss:
                sampler.sample()
                next_rss = now + RSS_EVERY
            if now >= next_db:
                seen.alert_status = job.status()
                next_db = now + (0.05 if seen.record_lines >= expected else 0.25)
                if seen.alert_status in finished:
                    if seen.record_lines >= expected:
                        # A late duplicate would appear right after: look once more.
                        time.sleep(0.5)
                        seen.record_lines += tail.read().count(b"\n")
                        seen.ended_because = "done"
                        break
                    finished_short_at = finished_short_at or now
                    if now - finished_short_at > 3:
                        seen.ended_because = f"{job.kind} {seen.alert_status} with recipients missing"
                        break
            if now >= next_progress:
                if now - t0 > 5:
                    print(f"  {now - t0:6.1f}s  {seen.record_lines:>9,} / {expected:,} handed off"
                          f"  ({job.kind} {seen.alert_status})", flush=True)
                next_progress = now + 5
                if procs.dead():
                    seen.ended_because = f"process died: {', '.join(procs.dead())}"
                    break
                if seen.alert_status != status_seen:
                    status_seen, last_change = seen.alert_status, now
                if now - last_change > stall:
                    # Nothing handed off and the alert unchanged: a batch is stuck (a task
                    # that raised leaves it SENDING until its lease expires and a sweeper,
                    # not running here, re-queues it).
                    seen.ended_because = (f"stalled: nothing handed off for {stall:.0f}s,"
                                          f" {job.kind} still {seen.alert_status}")
                    break
            if now - t0 > timeout:
                seen.ended_because = f"timed out after {timeout:.0f}s"
                break
            if kill_at is not None and not seen.killed and now - t0 >= kill_at:
                seen.killed = kill_pool_child(sampler, now - t0)
            time.sleep(0.001 if seen.first_handoff_s is None else 0.005)
    seen.waited_s = time.time() - t0
    return seen


def kill_pool_child(sampler: ProcessSampler, at: float) -> str:
    """SIGKILL one prefork child (ours), as the OOM killer or a crash would: the one
    that has used the most CPU, so most likely mid-send."""
    roots = {proc.pid for procs in sampler.roots.values() for proc in procs}
    children = [proc for proc in sampler.procs.get("workers", []) if proc.pid not in roots]
    if not children:
        return "no pool child to kill"
    victim = max(children, key=lambda proc: sampler.cpu.get(proc.pid, ("", 0.0, 0.0))[2])
    os.kill(victim.pid, signal.SIGKILL)
    print(f"  killed pool child {victim.pid} at {at:.2f}s", flush=True)
    return f"pid {victim.pid} at {at:.2f}s"


def background_load(quiet_below: float, max_wait: float) -> dict:
    """How busy the machine is just before publishing. Other people's test runs share
    these cores and slow a run down, so wait (up to max_wait) for a quiet second."""
    import psutil

    started = time.monotonic()
    while True:
        busy = psutil.cpu_percent(interval=1.0)
        waited = time.monotonic() - started
        if busy < quiet_below or waited >= max_wait:
            break
        print(f"  machine {busy:.0f}% busy (someone else's load): waiting for it to drop"
              f" below {quiet_below:.0f}% ({waited:.0f}/{max_wait:.0f} s)", flush=True)
    return {"cpu_percent": busy, "loadavg_1m": round(os.getloadavg()[0], 2),
            "waited_s": round(waited, 1), "quiet": busy < quiet_below, "reference_s": reference_loop()}


def reference_loop() -> float:
    """Seconds one fixed piece of pure Python work takes right now. These cores are
    virtual: when the host is busy with other machines, everything here runs slower
    in proportion, including this loop, though this machine looks idle."""
    started = time.perf_counter()
    sum(range(10_000_000))
    return round(time.perf_counter() - started, 3)


def create_alert(**fields):
    from alerts.models import Alert

    return Alert.objects.create(**{
        "headline": "Bench: Parliament votes to dissolve itself after all-night session",
        "standfirst": "A general election will be held in six weeks, the Speaker announced.",
        "body": "MPs voted 412 to 198 shortly after 5am.\n\nThe motion was tabled by the "
                "government late on Tuesday after talks collapsed.\n\nMore follows.",
        "url": "https://news.example.com/politics/2026/parliament-dissolved",
        **fields,
    })


def _since(t0: float, moment: datetime | None) -> float | None:
    return None if moment is None else round(moment.timestamp() - t0, 3)


def _batch_summary(batches) -> dict:
    from django.db.models import Count, Max, Sum

    rows = (batches.values("status").annotate(
        n=Count("pk"), planned=Sum("planned_count"), sent=Sum("sent_count"), failed=Sum("failed_count"),
        skipped=Sum("skipped_count"), max_attempts=Max("attempts")).order_by("status"))
    return {
        "batches": {row["status"]: {k: v for k, v in row.items() if k != "status"} for row in rows},
        "batch_errors": list(batches.exclude(last_error="").values_list("last_error", flat=True)[:3]),
    }


class AlertJob:
    """Publish one breaking alert, through the same service the admin calls."""

    kind = "alert"

    def prepare(self) -> None:
        self.alert = create_alert()

    def start(self) -> None:
        from alerts.publishing import alert_publish

        alert_publish(alert_id=self.alert.pk, user=None)

    def status(self) -> str:
        from alerts.models import Alert

        return Alert.objects.filter(pk=self.alert.pk).values_list("status", flat=True).first() or "?"

    def published_at(self) -> datetime:
        from alerts.models import Alert

        return Alert.objects.values_list("published_at", flat=True).get(pk=self.alert.pk)

    def ledger_where(self) -> tuple[str, list]:
        return "d.alert_id = %s", [self.alert.pk]

    def summary(self, t0: float) -> dict:
        from django.db.models import Count

        from alerts.models import Alert, Batch, Delivery

        alert = Alert.objects.get(pk=self.alert.pk)
        return {
            "status": alert.status,
            "audience_size": alert.audience_size,
            "published_at_s": _since(t0, alert.published_at),
            "fanned_out_at_s": _since(t0, alert.fanned_out_at),
            "first_handoff_at_s": _since(t0, alert.first_handoff_at),
            "last_handoff_at_s": _since(t0, alert.last_handoff_at),
            "finished_at_s": _since(t0, alert.finished_at),
            **_batch_summary(Batch.objects.filter(alert_id=alert.pk)),
            "ledger": dict(Delivery.objects.filter(alert_id=alert.pk).values_list("status")
                           .annotate(n=Count("pk")).values_list("status", "n")),
        }


class DigestJob:
    """Run one digest tick, as beat does every minute (the `alerts.send_digests` task),
    for daily subscribers whose digest hour is now, with three alerts to summarise."""

    kind = "digest"

    def prepare(self) -> None:
        import zoneinfo

        from django.conf import settings

        local = datetime.now(zoneinfo.ZoneInfo(settings.PUBLICATION_TIME_ZONE))
        if local.hour != int(os.environ["DIGEST_HOUR"]):
            raise RuntimeError("the digest hour passed during the benchmark: run it again")
        due = local.replace(minute=0, second=0, microsecond=0)
        for hours, headline in ((1, "Bench digest: budget passed"), (3, "Bench digest: storm warning"),
                                (6, "Bench digest: cup final result")):
            create_alert(headline=headline, status="sent", published_at=due - timedelta(hours=hours))

    def start(self) -> None:
        from alerts.tasks import send_digests

        send_digests.delay()

    def status(self) -> str:
        from alerts.models import DigestRun

        statuses = set(DigestRun.objects.values_list("status", flat=True))
        if not statuses:
            return "not started"
        return "sending" if "sending" in statuses else ("failed" if "failed" in statuses else "sent")

    def published_at(self) -> datetime:
        return datetime.now(UTC)  # not used by the digest audience

    def ledger_where(self) -> tuple[str, list]:
        return "d.digest_run_id IS NOT NULL", []

    def summary(self, t0: float) -> dict:
        from django.db.models import Count, Max, Min

        from alerts.models import Batch, Delivery, DigestRun

        runs = list(DigestRun.objects.order_by("pk"))
        batches = Batch.objects.filter(digest_run__isnull=False)
        sent = batches.aggregate(first=Min("sent_at"), last=Max("sent_at"))
        return {
            "status": self.status(),
            "audience_size": sum(run.planned for run in runs),
            "runs": [{"period": run.period_key, "time_zone": run.time_zone, "status": run.status,
                      "planned": run.planned} for run in runs],
            "published_at_s": _since(t0, min((run.created_at for run in runs), default=None)),
            "fanned_out_at_s": _since(t0, max((run.fanned_out_at for run in runs if run.fanned_out_at),
                                              default=None)),
            "first_handoff_at_s": _since(t0, sent["first"]),
            "last_handoff_at_s": _since(t0, sent["last"]),
            "finished_at_s": _since(t0, max((run.finished_at for run in runs if run.finished_at), default=None)),
            **_batch_summary(batches),
            "ledger": dict(Delivery.objects.filter(digest_run__isnull=False).values_list("status")
                           .annotate(n=Count("pk")).values_list("status", "n")),
        }


# --- Profiling (optional) -------------------------------------------------------------

PROFILE_RATE = 200  # samples a second per process


def start_profilers(procs: Processes, workers: list[tuple[str, subprocess.Popen]],
                    run_dir: Path) -> list[tuple[subprocess.Popen, Path]]:
    """py-spy on each worker and its pool children, idle time included, so waits on
    PostgreSQL and the provider show up as well as CPU."""
    exe = shutil.which("py-spy", path=str(Path(sys.executable).parent)) or shutil.which("py-spy")
    if not exe:
        raise RuntimeError("--py-spy needs py-spy: .venv/bin/pip install py-spy")
    profilers = []
    for name, proc in workers:
        out = run_dir / f"py-spy-{name}.txt"
        cmd = [exe, "record", "--pid", str(proc.pid), "--subprocesses", "--idle", "--nonblocking",
               "--format", "raw", "--nolineno", "--rate", str(PROFILE_RATE), "--output", str(out)]
        profilers.append((procs.start(f"py-spy {name}", cmd, dict(os.environ), run_dir / "py-spy.log"), out))
    time.sleep(1)  # py-spy attaches asynchronously
    return profilers


def stop_profilers(profilers: list[tuple[subprocess.Popen, Path]]) -> None:
    for proc, _ in profilers:
        _signal_group(proc, signal.SIGINT)  # py-spy writes its file on SIGINT
    for proc, _ in profilers:
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            pass


def summarise_profile(paths: list[Path], batches: int, anchor: str = "batch_send") -> dict:
    """Wall time inside `anchor` by function: inclusive (the function and all it calls)
    and self (the innermost frame), in ms per batch and in % of the anchor."""
    inclusive: collections.Counter[str] = collections.Counter()
    own: collections.Counter[str] = collections.Counter()
    total = 0
    for path in paths:
        if not path.exists():
            continue
        for line in path.read_text(errors="replace").splitlines():
            stack, _, count = line.rpartition(" ")
            frames = stack.split(";")
            start = next((i for i, f in enumerate(frames) if f.split(" (", 1)[0] == anchor), None)
            if start is None or not count.isdigit():
                continue
            n = int(count)
            total += n
            for frame in set(frames[start:]):
                inclusive[frame] += n
            own[frames[-1]] += n

    def table(counter: collections.Counter[str], top: int) -> list[dict]:
        return [{"function": f, "pct": round(100 * n / total, 1),
                 "ms_per_batch": round(n / PROFILE_RATE / max(batches, 1) * 1000, 2)}
                for f, n in counter.most_common(top)]

    return {"anchor": anchor, "samples": total, "batches": batches,
            "inclusive": table(inclusive, 40), "self": table(own, 25)}


def print_profile(profile: dict) -> None:
    if not profile or not profile["samples"]:
        return
    print(f"\nWhere {profile['anchor']} spends its wall time ({profile['samples']} samples,"
          f" {profile['batches']} batches; ms per batch, % of {profile['anchor']})")
    for kind in ("inclusive", "self"):
        print(f"  {kind}:")
        for row in profile[kind][:25 if kind == "inclusive" else 15]:
            print(f"    {row['ms_per_batch']:8.2f} ms {row['pct']:5.1f}%  {row['function'][:110]}")


# --- Verification ---------------------------------------------------------------------

def recorded_recipients(record: Path, offset: int, backend: str) -> tuple[collections.Counter[bytes], int]:
    """(recipient -> times recorded, provider calls) from the fake's record file, after
    `offset` (where this run started)."""
    counts: collections.Counter[bytes] = collections.Counter()
    message_ids: set[bytes] = set()
    with open(record, "rb") as lines:
        lines.seek(offset)
        for line in lines:
            line = line.rstrip(b"\n")
            if backend == "mailgun":
                message_id, _, line = line.partition(b"\t")
                message_ids.add(message_id)
            counts[line] += 1
    calls = len(message_ids) if backend == "mailgun" else sum(counts.values())
    return counts, calls


def verify(job: AlertJob | DigestJob, mode: str, record: Path, offset: int, backend: str) -> dict:
    from django.db import connection

    ledger_where, ledger_params = job.ledger_where()
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT s.email FROM alerts_subscriber s WHERE {eligible_where(mode)}",
                       {"at": job.published_at()})
        expected = {row[0].lower().encode() for row in cursor.fetchall()}
        cursor.execute("SELECT s.email FROM alerts_delivery d JOIN alerts_subscriber s ON s.id = d.subscriber_id"
                       f" WHERE {ledger_where} AND d.status = 'sent'", ledger_params)
        ledger = {row[0].lower().encode() for row in cursor.fetchall()}
    counts, calls = recorded_recipients(record, offset, backend)
    got = set(counts)
    unexpected = sorted(got - expected)
    missing = expected - got
    return {
        "expected": len(expected),
        "recorded": sum(counts.values()),
        "unique_recorded": len(got),
        "duplicates": sum(c - 1 for c in counts.values() if c > 1),
        "duplicated_recipients": sum(1 for c in counts.values() if c > 1),
        "missing": len(missing),
        "unexpected": len(unexpected),
        "provider_calls": calls,
        "ledger_sent": len(ledger),
        "ledger_not_at_provider": len(ledger - got),
        "at_provider_not_in_ledger": len(got - ledger),
        "samples": {
            "missing": sorted(x.decode() for x in missing)[:5],
            "unexpected": [x.decode() for x in unexpected[:5]],
            "duplicated": [x.decode() for x, c in counts.most_common(5) if c > 1],
        },
    }


def mailgun_control(port: int, command: dict) -> None:
    request = urllib.request.Request(f"http://127.0.0.1:{port}/_control", data=json.dumps(command).encode(),
                                     headers={"Content-Type": "application/json"}, method="POST")
    with urllib.request.urlopen(request, timeout=5):
        pass


def mailgun_stats(port: int) -> dict:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stats", timeout=5) as response:
            return json.load(response)
    except OSError as error:
        return {"error": str(error)}


def log_problems(run_dir: Path) -> list[str]:
    """Error lines from worker and fake logs, the first few of each kind."""
    found = []
    for log in sorted(run_dir.glob("*.log")):
        for line in log.read_text(errors="replace").splitlines():
            if re.search(r"ERROR|CRITICAL|Traceback|Exception|Error:", line):
                found.append(f"{log.name}: {line.strip()[:300]}")
    return found


# --- Machine and report ---------------------------------------------------------------

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
    files = sorted([*ROOT.glob("alerts/*.py"), *ROOT.glob("config/*.py")])
    combined = hashlib.sha1()
    for path in files:
        combined.update(path.read_bytes())
    key = ("alerts/fanout.py", "alerts/anymail_batch.py", "alerts/digests.py", "config/settings.py")
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
    print(f"Code under test: {result['code']['alerts+config']} (sha1 of alerts/*.py and config/*.py)")
    print(f"Reproduce: {result['command']}")
    print(f"Logs: {result['run_dir']}")


# --- Main -----------------------------------------------------------------------------

def run(args: argparse.Namespace, procs: Processes) -> dict:
    os.environ.update(base_env(args.settings))
    if args.kill_child_at is not None:
        # A killed child's batch is taken over once its lease expires (default 120 s).
        os.environ.setdefault("BATCH_LEASE_SECONDS", "10")
    if args.batch_size:
        os.environ["FANOUT_BATCH_SIZE"] = str(args.batch_size)
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
    workers = start_workers(procs, args, {**env, **backend_env(args.backend, port)}, run_dir)
    wait_for_workers(app, workers, procs)
    if args.warmup:
        warm_up(broker, rounds=2 * args.workers * args.concurrency)
    if args.fail_rate:
        mailgun_control(port, {"failure_rate": args.fail_rate, "status": 500, "seed": 1})
    profilers = start_profilers(procs, workers, run_dir) if args.py_spy else []
    setup = Setup(args, seed, record, port, [proc.pid for _, proc in workers], fake.pid, procs)
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


def measure_once(setup: Setup, number: int) -> dict:
    """Publish one alert and measure it; returns this run's figures."""
    args, expected = setup.args, setup.seed.eligible
    background = background_load(args.quiet_below, args.max_quiet_wait)
    sampler = ProcessSampler({"workers": setup.worker_pids, "fake": [setup.fake_pid], **service_pids()})
    sampler.sample()
    idle_rss = sampler.peak_single
    offset = setup.record.stat().st_size
    before = mailgun_stats(setup.port) if args.backend == "mailgun" else {}
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

    stats = mailgun_stats(setup.port) if args.backend == "mailgun" else {}
    # The fake counts from its start; this run's share is the difference.
    # (Its unique/duplicate counts span all runs, so they are left out.)
    stats = {k: stats[k] - before.get(k, 0) for k in ("calls", "recipients", "rejected") if k in stats}
    checked = verify(job, args.mode, setup.record, offset, args.backend)
    summary = job.summary(t0)
    complete = checked["missing"] == 0 and seen.last_handoff_s
    figures = {
        "run": number,
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


def digest_hour_now() -> int:
    """The publication's local hour, so the workers find the daily digest due now."""
    import zoneinfo

    from django.conf import settings

    return datetime.now(zoneinfo.ZoneInfo(settings.PUBLICATION_TIME_ZONE)).hour


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
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=2, default=str) + "\n")
        print(f"Wrote {args.json}")
    bad = any(r["duplicates"] or r["missing"] or r["unexpected"] for r in result["runs"])
    return 1 if args.strict and bad else 0


if __name__ == "__main__":
    sys.exit(main())
