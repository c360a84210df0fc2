"""The process-local Prometheus metrics: counted where things happen (a worker handing
a batch to the provider, a web process taking a signup or a webhook), and exposed by
the metrics endpoint (alerts/observability/metrics.py).

Gunicorn and Celery run several processes. With PROMETHEUS_MULTIPROC_DIR set (to an
empty directory shared by the web and worker processes of one host, emptied at each
start) every process writes its values there and the endpoint adds them up;
without it, each process counts for itself only. Figures that the database already
knows (open batches, queue depth, each alert's hand-off times) are computed when
scraped instead, and are right whatever the processes.

Here, in common, so that every capability can count without importing upward.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

from django.conf import settings
from prometheus_client import Counter, Histogram

# Seconds; a breaking alert's whole point is the first few minutes.
SECONDS_BUCKETS = (0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200)

EMAILS = Counter(
    "stoppress_emails", "Emails handed to the provider, or refused by it, per provider call.",
    ["provider", "kind", "outcome"],
)
PROVIDER_CALL_SECONDS = Histogram(
    "stoppress_provider_call_seconds", "Duration of one batch's provider call.", ["provider", "kind"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120),
)
TASK_SECONDS = Histogram(
    "stoppress_task_seconds", "Duration of Celery tasks, by task name (alerts.send_batch: a batch's send).",
    ["task"], buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120, 300),
)
PUBLISH_TO_HANDOFF_SECONDS = Histogram(
    "stoppress_publish_to_handoff_seconds",
    "Seconds from publishing an alert to its first and last hand-off to the provider, per finished alert.",
    ["edge"], buckets=SECONDS_BUCKETS,
)
TIME_TO_INBOX_SECONDS = Histogram(
    "stoppress_time_to_inbox_seconds",
    "Seconds from publishing an alert to the provider's delivered event, per reader.",
    ["mailbox"], buckets=SECONDS_BUCKETS,
)
SIGNUPS = Counter("stoppress_signups", "Signup requests, accepted or refused.", ["source", "outcome"])
WEBHOOK_EVENTS = Counter(
    "stoppress_webhook_events", "Provider tracking events received.", ["esp", "event", "outcome"],
)


class ProviderCall:
    """What one provider call returned: set `statuses` (a Delivery status per recipient)."""

    def __init__(self) -> None:
        self.statuses: list[str] = []


@contextmanager
def provider_call(*, kind: str, recipients: int, failures: dict[type, str],
                  backend_path: str | None = None) -> Iterator[ProviderCall]:
    """Time one provider call (to `backend_path`, the fallback; else EMAIL_BACKEND) and
    count its recipients by outcome: the statuses the call set, or, when it raised one
    of `failures`' exception types, that outcome for every recipient (e.g.
    {TransientSendError: "retried"}). Re-raises."""
    call, provider, started = ProviderCall(), provider_label(backend_path), time.monotonic()
    try:
        yield call
    except tuple(failures) as error:
        outcome = next(name for kind_, name in failures.items() if isinstance(error, kind_))
        count_emails(provider=provider, kind=kind, statuses=[outcome] * recipients)
        raise
    finally:
        PROVIDER_CALL_SECONDS.labels(provider=provider, kind=kind).observe(time.monotonic() - started)
    count_emails(provider=provider, kind=kind, statuses=call.statuses)


def observe_handoffs(published_at, first_handoff_at, last_handoff_at) -> None:
    """A finished alert's seconds from publishing to its first and last hand-off."""
    for edge, at in (("first", first_handoff_at), ("last", last_handoff_at)):
        if published_at and at:
            PUBLISH_TO_HANDOFF_SECONDS.labels(edge=edge).observe(max((at - published_at).total_seconds(), 0))


def provider_label(backend_path: str | None = None) -> str:
    """"mailgun" for anymail.backends.mailgun.EmailBackend, "smtp" for Django's SMTP one."""
    parts = (backend_path or settings.EMAIL_BACKEND).split(".")
    return parts[-2] if len(parts) >= 2 else parts[0]


def count_emails(*, provider: str, kind: str, statuses) -> None:
    """Count one provider call's recipients by outcome ("sent", "failed", ...)."""
    counts: dict[str, int] = {}
    for status in statuses:
        counts[status] = counts.get(status, 0) + 1
    for outcome, n in counts.items():
        EMAILS.labels(provider=provider, kind=kind, outcome=outcome).inc(n)
