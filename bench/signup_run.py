"""Signup under a breaking-news spike (`make bench-signup`, `python bench/signup.py`).

Starts the app under the shipped gunicorn.conf.py with production settings, on a
PostgreSQL database of its own (`stoppress_signup_bench`, BENCH_DATABASE overrides)
and a private redis-server on a spare port (6392 first; the Redis-outage scenario
stops only that one), with a Celery worker, beat and the fake Mailgun. Then:

1. the bare view (bench/bare.py: parse, one INSERT, one LPUSH) under the same
   gunicorn config and middleware, driven by wrk at --connections for --duration;
2. the real JSON signup endpoint under the same load, each request a new address from
   its own client address (X-Forwarded-For through TRUSTED_PROXIES=1);
3. checks that every accepted address is stored with its consent event and has a
   confirmation sent or queued, and how fast confirmations drained to the fake
   Mailgun (the oldest unsent confirmation during the load, and after it ended).

`--redis-outage 60` stops the private Redis for that long in the middle of the
signup run. Prints both throughputs, their ratio, p50/p99/max and errors; `--json FILE`.
"""

from __future__ import annotations

import os

os.environ.setdefault("BENCH_DATABASE", "stoppress_signup_bench")

import argparse  # noqa: E402
import itertools  # noqa: E402
import json  # noqa: E402
import shutil  # noqa: E402
import signal  # noqa: E402
import socket  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
import urllib.error  # noqa: E402
import urllib.request  # noqa: E402
from pathlib import Path  # noqa: E402

import psycopg  # noqa: E402

from bench.constants import DB_NAME, PG_SERVER, ROOT  # noqa: E402
from bench.cpu_meter import CpuMeter  # noqa: E402
from bench.processes import Processes, backend_env, base_env, signal_group, start_fake  # noqa: E402
from bench.seed import ensure_database, migrate  # noqa: E402
from bench.stores import PrivateRedis  # noqa: E402

LUA = ROOT / "bench" / "signup.lua"
# Each wrk run's clients are its own (bench/signup.lua): a run number from the clock.
_runs = itertools.count(int(time.time() * 10))


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=int, default=20, help="seconds of load per run (default 20)")
    parser.add_argument("--connections", type=int, default=64, help="concurrent clients (default 64)")
    parser.add_argument("--threads", type=int, default=2, help="wrk threads (default 2)")
    parser.add_argument("--redis-port", type=int, default=6392, help="first port tried for the private Redis")
    parser.add_argument("--port", type=int, default=0, help="gunicorn's port (default: a free one)")
    parser.add_argument("--redis-outage", type=int, default=0, metavar="SECONDS",
                        help="stop the private Redis this long in the middle of the signup run")
    parser.add_argument("--web-concurrency", type=int, default=0, help="override gunicorn workers")
    parser.add_argument("--worker-class", default="", help="override gunicorn's worker class (gthread)")
    parser.add_argument("--gunicorn-threads", type=int, default=0, help="threads per gunicorn worker")
    parser.add_argument("--celery-concurrency", type=int, default=2, help="Celery pool processes (default 2)")
    parser.add_argument("--worker-nice", type=int, default=0, metavar="N",
                        help="run the Celery worker under `nice -n N`: the web requests first, the drain and "
                             "the outbox with the CPU left (default 0)")
    parser.add_argument("--skip-bare", action="store_true", help="only the signup endpoint")
    parser.add_argument("--rounds", type=int, default=1,
                        help="bare view and signup endpoint in alternation this many times; the round with the "
                             "median ratio is reported (default 1)")
    parser.add_argument("--defer-worker", action="store_true",
                        help="start the Celery worker and beat only after the load (how much of the gap to the "
                             "bare view is the workers' CPU)")
    parser.add_argument("--drain-timeout", type=float, default=180, help="seconds to wait for every email")
    parser.add_argument("--py-spy", type=Path, default=None, metavar="SVG",
                        help="record one gunicorn worker with py-spy during the signup run")
    parser.add_argument("--json", type=Path, default=None, help="write the results to this file")
    return parser.parse_args(argv)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def dsn() -> str:
    return f"{PG_SERVER}/{DB_NAME}"


def ensure_wrk() -> str:
    path = shutil.which("wrk")
    if path:
        return path
    print("Installing wrk (Debian package)")
    subprocess.run(["apt-get", "install", "-y", "-q", "wrk"], check=True, stdout=subprocess.DEVNULL)
    return shutil.which("wrk") or sys.exit("wrk could not be installed: apt-get install wrk")


def reset_tables() -> None:
    with psycopg.connect(dsn(), autocommit=True) as conn:
        conn.execute("TRUNCATE alerts_outboxemail, alerts_consentevent, alerts_consentrequest, alerts_subscriber "
                     "CASCADE")
        conn.execute("CREATE TABLE IF NOT EXISTS bench_bare_signup (id bigserial PRIMARY KEY, email text NOT NULL, "
                     "client text NOT NULL, created_at timestamptz NOT NULL DEFAULT now())")
        conn.execute("TRUNCATE bench_bare_signup")
        conn.execute("CHECKPOINT")


def app_env(redis_url: str, fake_port: int, args: argparse.Namespace) -> dict[str, str]:
    env = {**os.environ, **base_env(), **backend_env("mailgun", fake_port)}
    env.update({
        "CELERY_BROKER_URL": f"{redis_url}/0",
        "CACHE_REDIS_URL": f"{redis_url}/1",
        # One proxy in front, as in production: the client is the X-Forwarded-For hop.
        "TRUSTED_PROXIES": "1",
        "LOG_LEVEL": "WARNING",
        "SWEEP_REQUEUE_AFTER_SECONDS": "15",
    })
    if args.web_concurrency:
        env["WEB_CONCURRENCY"] = str(args.web_concurrency)
    if args.worker_class:
        env["GUNICORN_WORKER_CLASS"] = args.worker_class
    if args.gunicorn_threads:
        env["GUNICORN_THREADS"] = str(args.gunicorn_threads)
    return env


def start_gunicorn(procs: Processes, env: dict[str, str], settings_module: str, port: int, log: Path):
    env = {**env, "DJANGO_SETTINGS_MODULE": settings_module, "GUNICORN_BIND": f"127.0.0.1:{port}"}
    proc = procs.start(f"gunicorn {settings_module}", [sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py",
                                                        "config.wsgi"], env, log)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"gunicorn exited; see {log}")
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/api/subscribe", timeout=2)
        except urllib.error.HTTPError:
            return proc  # 405 for a GET: it answers
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"gunicorn did not answer; see {log}")


def stop(proc: subprocess.Popen) -> None:
    signal_group(proc, signal.SIGTERM)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        signal_group(proc, signal.SIGKILL)
        proc.wait()


def run_wrk(port: int, duration: int, args: argparse.Namespace, prefix: str) -> dict:
    cmd = ["wrk", f"-t{args.threads}", f"-c{args.connections}", f"-d{duration}s", "--timeout", "10s",
           "-s", str(LUA), f"http://127.0.0.1:{port}/api/subscribe", "--", prefix, str(next(_runs))]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    line = next(line for line in out.splitlines() if line.startswith("WRK_JSON "))
    result = json.loads(line[len("WRK_JSON "):])
    seconds = result["duration_us"] / 1e6
    errors = result["connect"] + result["read"] + result["write"] + result["timeout"] + result["status"]
    result.update({"seconds": round(seconds, 2), "per_second": round(result["requests"] / seconds, 1),
                   "accepted": result["requests"] - result["status"], "errors": errors,
                   "p50_ms": result["p50_us"] / 1000, "p99_ms": result["p99_us"] / 1000,
                   "max_ms": result["max_us"] / 1000})
    return result


class Backlog(threading.Thread):
    """Every half second: how old the oldest signup without a sent confirmation is."""

    # Through the two partial indexes of open work (unprocessed requests, open outbox
    # rows), so that watching costs the same however many signups are stored: a scan of
    # every stored request twice a second would be load that grows with each round.
    QUERY = ("SELECT extract(epoch FROM now() - LEAST("
             "(SELECT min(created_at) FROM alerts_consentrequest WHERE processed_at IS NULL AND email LIKE %(p)s), "
             "(SELECT min(r.created_at) FROM alerts_outboxemail o JOIN alerts_consentrequest r ON r.id = o.request_id "
             "WHERE o.status IN ('pending', 'sending') AND r.email LIKE %(p)s)))")

    def __init__(self, prefix: str) -> None:
        super().__init__(daemon=True)
        self.prefix, self.samples, self.done = prefix, [], threading.Event()

    def run(self) -> None:
        with psycopg.connect(dsn(), autocommit=True) as conn:
            while not self.done.wait(0.5):
                age = conn.execute(self.QUERY, {"p": f"{self.prefix}%"}).fetchone()[0]
                self.samples.append((time.time(), float(age or 0)))

    def oldest(self, since: float = 0, until: float = float("inf")) -> float:
        return max((age for at, age in self.samples if since <= at <= until), default=0.0)


class Outage(threading.Thread):
    """Stops the private Redis `after` seconds into the load, starts it again
    `seconds` later. The thread then lives until `finished` is set: a child's
    parent-death signal (bench.processes) follows the thread that started it."""

    def __init__(self, redis: PrivateRedis, after: float, seconds: int) -> None:
        super().__init__(daemon=True)
        self.redis, self.after, self.seconds = redis, after, seconds
        self.down_at = self.up_at = 0.0
        self.back, self.finished = threading.Event(), threading.Event()

    def run(self) -> None:
        time.sleep(self.after)
        self.down_at = time.time()
        signal_group(self.redis.proc, signal.SIGTERM)
        self.redis.proc.wait(timeout=30)
        time.sleep(max(self.seconds - (time.time() - self.down_at), 0))
        self.up_at = self.redis.start()
        self.back.set()
        self.finished.wait()


def wait_drained(prefix: str, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    with psycopg.connect(dsn(), autocommit=True) as conn:
        while time.monotonic() < deadline:
            open_ = conn.execute(
                "SELECT (SELECT count(*) FROM alerts_consentrequest WHERE email LIKE %s AND processed_at IS NULL)"
                " + (SELECT count(*) FROM alerts_outboxemail WHERE address LIKE %s AND status IN "
                "('pending', 'sending'))", [f"{prefix}%"] * 2).fetchone()[0]
            if not open_:
                return True
            time.sleep(0.5)
    return False


def verify(prefix: str, outage: Outage | None) -> dict:
    like = f"{prefix}%"
    with psycopg.connect(dsn(), autocommit=True) as conn:
        one = lambda sql, *params: conn.execute(sql, params or [like]).fetchone()[0]  # noqa: E731
        result = {
            "stored": one("SELECT count(*) FROM alerts_consentrequest WHERE email LIKE %s"),
            "unprocessed": one("SELECT count(*) FROM alerts_consentrequest WHERE email LIKE %s "
                               "AND processed_at IS NULL"),
            "without_consent_event": one(
                "SELECT count(*) FROM alerts_consentrequest r WHERE r.email LIKE %s AND NOT EXISTS (SELECT 1 FROM "
                "alerts_consentevent e WHERE e.subscriber_id = r.subscriber_id AND e.action = 'requested')"),
            "without_confirmation": one(
                "SELECT count(*) FROM alerts_consentrequest r WHERE r.email LIKE %s AND NOT EXISTS (SELECT 1 FROM "
                "alerts_outboxemail o WHERE o.request_id = r.id AND o.status IN ('sent', 'pending', 'sending'))"),
            "sent": one("SELECT count(*) FROM alerts_outboxemail WHERE address LIKE %s AND status = 'sent'"),
            "queued": one("SELECT count(*) FROM alerts_outboxemail WHERE address LIKE %s AND status IN "
                          "('pending', 'sending')"),
            "last_sent_at": one("SELECT extract(epoch FROM max(sent_at)) FROM alerts_outboxemail "
                                "WHERE address LIKE %s"),
            "with_origin": one("SELECT count(*) FROM alerts_subscriber WHERE email LIKE %s AND signup_page <> ''"
                               " AND utm_campaign = 'storm'"),
        }
        if outage is not None and outage.up_at:
            result["outage_signups"] = one(
                "SELECT count(*) FROM alerts_consentrequest WHERE email LIKE %s AND created_at "
                "BETWEEN to_timestamp(%s) AND to_timestamp(%s)", like, outage.down_at, outage.up_at)
            last = one("SELECT extract(epoch FROM max(o.sent_at)) FROM alerts_outboxemail o JOIN "
                       "alerts_consentrequest r ON r.id = o.request_id WHERE r.email LIKE %s AND r.created_at "
                       "BETWEEN to_timestamp(%s) AND to_timestamp(%s)", like, outage.down_at, outage.up_at)
            result["outage_sent_within_s"] = round(float(last) - outage.up_at, 1) if last else None
    result["last_sent_at"] = float(result["last_sent_at"] or 0)
    return result


def delivered(record: Path, prefix: str) -> int:
    seen = set()
    for line in record.read_text().splitlines():
        recipient = line.rpartition("\t")[2]
        if recipient.startswith(prefix):
            seen.add(recipient)
    return len(seen)


def run(args: argparse.Namespace, procs: Processes) -> dict:
    ensure_wrk()
    run_dir = Path(tempfile.mkdtemp(prefix="stoppress-signup-bench-"))
    redis = PrivateRedis(procs, run_dir, first_port=args.redis_port)
    redis.start()
    fake_port, record, _ = start_fake(procs, "mailgun", run_dir)
    env = app_env(redis.url, fake_port, args)
    ensure_database()
    migrate(env, run_dir / "migrate.log")
    reset_tables()
    tag = time.strftime("%H%M%S")
    prefix = f"spike{tag}"
    rounds = 1 if args.redis_outage else args.rounds
    result: dict = {"command": "python bench/signup.py " + " ".join(sys.argv[1:]), "connections": args.connections,
                    "duration_s": args.duration, "defer_worker": args.defer_worker, "worker_nice": args.worker_nice, "rounds": [],
                    "loadavg_before": os.getloadavg(), "run_dir": str(run_dir), "redis_port": redis.port}
    print(f"Private Redis on :{redis.port}, database {DB_NAME}, logs in {run_dir}")
    nice = ["nice", "-n", str(args.worker_nice)] if args.worker_nice else []
    worker = [*nice, sys.executable, "-m", "celery", "-A", "config", "worker", "-Q", "transactional,sweeps", "-P", "prefork",
              f"--concurrency={args.celery_concurrency}", "--without-gossip", "--without-mingle",
              "--without-heartbeat", "--loglevel=WARNING", "-n", f"signup-bench-{os.getpid()}@%h"]
    beat = [sys.executable, "-m", "celery", "-A", "config", "beat", "--loglevel=WARNING",
            "-s", str(run_dir / "beat-schedule")]
    meter = CpuMeter({"web": [], "bare": [], "workers": [], "redis": [redis.proc.pid]}, dsn(), DB_NAME)
    if not args.defer_worker:
        meter.groups["workers"] += [procs.start("worker", worker, env, run_dir / "worker.log").pid,
                                    procs.start("beat", beat, env, run_dir / "beat.log").pid]
    # Both servers stay up, idle in turn, so that the two are measured in alternation
    # under the same load from the rest of the machine.
    port, bare_port = args.port or free_port(), free_port()
    app = start_gunicorn(procs, env, "config.settings", port, run_dir / "gunicorn-app.log")
    meter.groups["web"].append(app.pid)
    run_wrk(port, 3, args, f"warm{tag}")
    if not args.skip_bare:
        bare = start_gunicorn(procs, env, "bench.bare_settings", bare_port, run_dir / "gunicorn-bare.log")
        meter.groups["bare"].append(bare.pid)
        run_wrk(bare_port, 3, args, f"warm-bare{tag}")
    wait_drained(f"warm{tag}", args.drain_timeout)
    duration = max(args.duration, args.redis_outage + 30) if args.redis_outage else args.duration
    backlog = Backlog(prefix)
    backlog.start()
    outage = spy = None
    accepted, loads = 0, []
    for index in range(rounds):
        one: dict = {}
        if not args.skip_bare:
            before = meter.snapshot()
            one["bare"] = run_wrk(bare_port, args.duration, args, f"bare{tag}r{index}")
            one["bare"]["cpu_ms"] = cpu_per_request(meter.spent(before, meter.snapshot()), one["bare"],
                                                    ("bare", "postgres", "redis"))
            print(f"round {index + 1}: bare view {one['bare']['per_second']:.0f}/s, "
                  f"p99 {one['bare']['p99_ms']:.1f} ms")
        if args.redis_outage:
            outage = Outage(redis, duration / 4, args.redis_outage)
            outage.start()
        spy = _py_spy(app, args, duration) if index == 0 else None
        before = meter.snapshot()
        started = time.time()
        one["signup"] = run_wrk(port, duration, args, f"{prefix}r{index}")
        ended = time.time()
        loads.append((started, ended))
        accepted += one["signup"]["accepted"]
        if "bare" in one:
            one["ratio"] = round(one["signup"]["per_second"] / one["bare"]["per_second"], 2)
        print(f"round {index + 1}: signup    {one['signup']['per_second']:.0f}/s, "
              f"p99 {one['signup']['p99_ms']:.1f} ms" + (f", ratio {one['ratio']:.2f}" if "ratio" in one else ""))
        result["rounds"].append(one)
        if outage:
            outage.back.wait()
        if spy:
            spy.wait()
        if args.defer_worker:
            ended = time.time()  # the drain is timed from the worker's start
            meter.groups["workers"] += [procs.start("worker", worker, env, run_dir / "worker.log").pid,
                                        procs.start("beat", beat, env, run_dir / "beat.log").pid]
        drained = wait_drained(prefix, args.drain_timeout)
        # The signup's whole cost: the request, and the drain and the sending it causes.
        one["signup"]["cpu_ms"] = cpu_per_request(meter.spent(before, meter.snapshot()), one["signup"],
                                                  ("web", "workers", "postgres", "redis"))
        if "bare" in one:
            one["cpu_ratio"] = round(one["bare"]["cpu_ms"]["total"] / one["signup"]["cpu_ms"]["total"], 2)
            print(f"round {index + 1}: CPU a request: bare view {_cpu_text(one['bare']['cpu_ms'])}; "
                  f"signup {_cpu_text(one['signup']['cpu_ms'])}; ratio {one['cpu_ratio']:.2f}")
    backlog.done.set()
    checks = verify(prefix, outage)
    checks["drained"] = drained
    # wrk counts the requests answered within the time; the ones in flight as it stopped
    # are stored too, so stored may exceed accepted, never the other way round.
    checks["accepted"] = accepted
    checks["accepted_not_stored"] = max(accepted - checks["stored"], 0)
    checks["delivered_to_fake"] = delivered(record, prefix)
    checks["all_sent_after_load_s"] = round(checks["last_sent_at"] - ended, 1) if checks["last_sent_at"] else None
    checks["oldest_unsent_during_load_s"] = round(max(backlog.oldest(a, b) for a, b in loads), 1)
    checks["oldest_unsent_outside_outage_s"] = round(max(
        backlog.oldest(started, outage.down_at), backlog.oldest(outage.up_at + 30, ended)), 1) if outage else None
    if outage:
        result["outage"] = {"down_at_s": round(outage.down_at - started, 1), "seconds": args.redis_outage,
                            "up_at_s": round(outage.up_at - started, 1)}
    result["checks"] = checks
    # The round with the median ratio (or the only one) stands for the run.
    median = sorted(result["rounds"], key=lambda one: one.get("ratio", 0))[len(result["rounds"]) // 2]
    result.update({key: median[key] for key in ("bare", "signup", "ratio") if key in median})
    result["ratios"] = [one["ratio"] for one in result["rounds"] if "ratio" in one]
    result["cpu_ratios"] = [one["cpu_ratio"] for one in result["rounds"] if "cpu_ratio" in one]
    result["loadavg_after"] = os.getloadavg()
    if outage:
        outage.finished.set()
    redis.remove()
    return result


def cpu_per_request(spent: dict[str, float], run: dict, groups: tuple[str, ...]) -> dict[str, float]:
    """Milliseconds of CPU per request answered, by group, and their total."""
    per = {name: round(spent[name] * 1000 / max(run["requests"], 1), 3) for name in groups}
    return {**per, "total": round(sum(per.values()), 3)}


def _cpu_text(cpu: dict[str, float]) -> str:
    parts = ", ".join(f"{name} {ms:.2f}" for name, ms in cpu.items() if name != "total")
    return f"{cpu['total']:.2f} ms ({parts})"


def _py_spy(app: subprocess.Popen, args: argparse.Namespace, duration: int):
    if not args.py_spy:
        return None
    children = subprocess.run(["pgrep", "-P", str(app.pid)], capture_output=True, text=True).stdout.split()
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    # A .svg is a flame graph; any other name gets the collapsed stacks (--format raw).
    fmt = "flamegraph" if args.py_spy.suffix == ".svg" else "raw"
    return subprocess.Popen([py_spy, "record", "-o", str(args.py_spy), "-d", str(duration), "-f", fmt,
                             "-p", children[0]], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def print_report(result: dict) -> None:
    signup, checks = result["signup"], result["checks"]
    print()
    print(f"Signup under a spike: {result['connections']} connections, {signup['seconds']} s "
          f"(load average before {result['loadavg_before'][0]:.2f}; the 2 cores are shared)")
    rows = [("signup endpoint", signup)] + ([("bare view", result["bare"])] if "bare" in result else [])
    print(f"  {'':<16} {'per second':>10} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8} {'errors':>7}")
    for name, run in rows:
        print(f"  {name:<16} {run['per_second']:>10.0f} {run['p50_ms']:>8.1f} {run['p99_ms']:>8.1f} "
              f"{run['max_ms']:>8.1f} {run['errors']:>7}")
    if "ratio" in result:
        print(f"  ratio signup / bare: {result['ratio']:.2f}")
    if len(result["ratios"]) > 1:
        print(f"  ratios of the {len(result['ratios'])} rounds, in order: {result['ratios']}")
    if "cpu_ms" in signup:
        print(f"  CPU a request (ms), signup with its drain and sending: {_cpu_text(signup['cpu_ms'])}")
    if "bare" in result:
        print(f"  CPU a request (ms), bare view: {_cpu_text(result['bare']['cpu_ms'])}; CPU ratio "
              f"{result['bare']['cpu_ms']['total'] / signup['cpu_ms']['total']:.2f} (rounds: {result['cpu_ratios']})")
    print(f"  accepted {checks['accepted']}, stored {checks['stored']} (accepted but not stored: "
          f"{checks['accepted_not_stored']}), without consent event "
          f"{checks['without_consent_event']}, without a confirmation {checks['without_confirmation']}, "
          f"sent {checks['sent']} (the fake Mailgun got {checks['delivered_to_fake']}), still queued "
          f"{checks['queued']}, drained: {checks['drained']}")
    print(f"  oldest unsent confirmation during the load: {checks['oldest_unsent_during_load_s']} s; "
          f"all sent {checks['all_sent_after_load_s']} s after the load ended")
    if "outage" in result:
        print(f"  Redis down {result['outage']['seconds']} s from {result['outage']['down_at_s']} s: "
              f"{checks.get('outage_signups')} signups during it, all their confirmations sent within "
              f"{checks.get('outage_sent_within_s')} s of Redis returning; oldest unsent outside the outage "
              f"{checks['oldest_unsent_outside_outage_s']} s")
    print(f"  reproduce: {result['command']}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *a: sys.exit(143))
    procs = Processes()
    try:
        result = run(args, procs)
    finally:
        procs.stop_all()
    print_report(result)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2, default=str))
    return 0
