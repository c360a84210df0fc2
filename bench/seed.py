"""The benchmark's database: created and migrated if missing, seeded with COPY (and
kept while N and the mode stay the same), and cleared of each run's alert, batches,
digest runs and ledger. Also the benchmark's own definition of who must be mailed."""

from __future__ import annotations

import collections
import hashlib
import hmac
import json
import random
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from bench.constants import DB_NAME, EMAIL_HASH_KEY, PG_SERVER, ROOT
from bench.jobs import app_email_hmac

if TYPE_CHECKING:
    import psycopg

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


def ensure_database(server: str = PG_SERVER) -> None:
    """Create the benchmark database on `server` (the shared one unless the chaos
    benchmark passes its own throwaway cluster) if it is missing."""
    import psycopg

    with psycopg.connect(f"{server}/postgres", autocommit=True) as conn:
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


def foreign_migrations(server: str = PG_SERVER) -> list[str]:
    """Migrations of the app applied to the benchmark database that this checkout does
    not have: another worktree's code migrated it, and this code cannot write to it."""
    import psycopg

    on_disk = {path.stem for path in (ROOT / "alerts" / "migrations").glob("[0-9]*.py")}
    with psycopg.connect(bench_dsn(server), autocommit=True) as conn:
        if not conn.execute("SELECT to_regclass('django_migrations')").fetchone()[0]:
            return []
        applied = {row[0] for row in conn.execute("SELECT name FROM django_migrations WHERE app = 'alerts'")}
    return sorted(applied - on_disk)


def bench_dsn(server: str = PG_SERVER) -> str:
    return f"{server}/{DB_NAME}"


@dataclass
class Seed:
    eligible: int
    total: int
    by_category: dict[str, int]
    seconds: float = 0.0
    reused: bool = False


def seed_subscribers(n: int, mode: str, force: bool, server: str = PG_SERVER) -> Seed:
    """Make sure the bench database holds exactly the seed for n eligible subscribers
    of this mode, seeding with COPY only if the existing one does not match."""
    import psycopg

    with psycopg.connect(bench_dsn(server), autocommit=True) as conn:
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


def _current_seed(conn: psycopg.Connection, n: int, mode: str) -> Seed | None:
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


def _check_columns(conn: psycopg.Connection) -> None:
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


def _copy_subscribers(conn: psycopg.Connection, n: int, mode: str) -> Seed:
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
            if index == 1 and digest != app_email_hmac(email):
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


def _copy_suppressions(conn: psycopg.Connection, rows: list[str], when: str) -> None:
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


def clear_run_tables(mode: str, server: str = PG_SERVER) -> None:
    import psycopg

    with psycopg.connect(bench_dsn(server), autocommit=True) as conn:
        digest_runs = conn.execute("SELECT to_regclass('alerts_digestrun')").fetchone()[0]
        conn.execute("TRUNCATE alerts_delivery, alerts_batch, alerts_alert"
                     f"{', alerts_digestrun' if digest_runs else ''} RESTART IDENTITY CASCADE")
        if mode == "digest":
            # Sent digests move last_digest_at on; the next run must find everyone due.
            conn.execute("UPDATE alerts_subscriber SET last_digest_at = NULL WHERE last_digest_at IS NOT NULL")
