"""After a run: who the fake provider recorded, compared with who should have been
mailed (the benchmark's own SQL) and with the Delivery ledger; and error lines in the
children's logs."""

from __future__ import annotations

import collections
import re
from pathlib import Path
from typing import TYPE_CHECKING

from bench.seed import eligible_where

if TYPE_CHECKING:
    from bench.jobs import Job


def recorded_recipients(record: Path, offset: int, backend: str) -> tuple[collections.Counter[bytes], int]:
    """(recipient -> times recorded, provider calls) from the fake's record file, after
    `offset` (where this run started)."""
    counts: collections.Counter[bytes] = collections.Counter()
    message_ids: set[bytes] = set()
    with open(record, "rb") as lines:
        lines.seek(offset)
        for line in lines:
            line = line.rstrip(b"\n")
            if not backend.startswith("smtp"):  # "<message or call id>\t<recipient>"
                message_id, _, line = line.partition(b"\t")
                message_ids.add(message_id)
            counts[line] += 1
    calls = len(message_ids) if not backend.startswith("smtp") else sum(counts.values())
    return counts, calls


def verify(job: Job, mode: str, record: Path, offset: int, backend: str) -> dict:
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


def log_problems(run_dir: Path) -> list[str]:
    """Error lines from worker and fake logs, the first few of each kind."""
    found = []
    for log in sorted(run_dir.glob("*.log")):
        for line in log.read_text(errors="replace").splitlines():
            if re.search(r"ERROR|CRITICAL|Traceback|Exception|Error:", line):
                found.append(f"{log.name}: {line.strip()[:300]}")
    return found
