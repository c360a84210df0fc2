"""The transactional outbox: confirmation, preferences-link and re-engagement emails, recorded as OutboxEmail rows in the
transaction that makes them due and sent by a task.

- Recording (`outbox_confirmations`) is one INSERT for a whole drained batch, and
  nudges the sender after the commit.
- Sending (`outbox_drain`) claims due rows (FOR UPDATE SKIP LOCKED, with a lease, so
  senders side by side split the work and a dead sender's rows come back), counts
  the per-address cooldown for each, and hands them to the provider: one API call
  per provider batch where the provider personalises (Mailgun's recipient-variables
  carry each reader's own confirmation link), else one message each.
- A transient failure (provider 5xx or 429, network, Redis away) gives the cooldown
  back and retries the rows with a doubling backoff; a refused address or request
  fails the row for good; the sweeper re-queues the sender for rows whose task was
  lost (`outbox_waiting`).
"""

from __future__ import annotations

import logging
import smtplib
import time
from collections import defaultdict
from datetime import datetime, timedelta

from anymail.exceptions import AnymailAPIError, AnymailRecipientsRefused
from django.conf import settings
from django.db import connection, transaction
from django.db.models import F, Q
from django.utils import timezone
from redis.exceptions import RedisError

from ..common.insert_select import columns_and_values, quoted, table
from ..common.queueing import nudge_on_commit, nudged
from ..common.ratelimits import (
    allow_confirmation_emails,
    allow_preferences_email,
    release_confirmation_email,
    release_preferences_email,
)
from ..common.tokens import confirm_tokens
from ..emails import (
    confirm_url,
    confirmation_message,
    confirmation_rendering,
    preferences_message,
    reengage_message,
)
from ..models import ConsentRequest, OutboxEmail, Subscriber, Suppression
from ..sending.anymail_batch import BatchMessage, backend_class
from ..sending.provider import REFUSED, sending_profile

logger = logging.getLogger(__name__)

SEND_TASK = "alerts.send_outbox"
Status = OutboxEmail.Status
# A sender holds its claimed rows this long: more than a provider call may take
# (ANYMAIL_REQUESTS_TIMEOUT, 30 s), so a live send is never taken over; and no
# longer, because it is also how long the rows of a sender that died (or that Celery
# cancelled when it lost the broker) wait before another sender takes them.
LEASE = timedelta(seconds=40)
# Doubling from 5 s up to 5 minutes; after this many attempts (about an hour) the
# row fails: the link would be close to useless by the time it arrived.
FIRST_RETRY_SECONDS, MAX_RETRY_SECONDS, MAX_ATTEMPTS = 5, 300, 16
# One sender task stops claiming after this long and hands over to a fresh message.
SEND_BUDGET_SECONDS = 20.0


def outbox_confirmations(requests: list[ConsentRequest], *, nudge_sender: bool = True) -> list[int]:
    """Record the confirmation email of each request (its subscriber stored), in the
    caller's transaction; the sender is nudged once it commits. Returns the rows' ids.

    Raw: one INSERT … SELECT from the request rows, in request order (see
    common/insert_select.py for why); `bulk_create` is the portable twin."""
    if not requests:
        return []
    if connection.vendor != "postgresql":
        ids = [row.pk for row in OutboxEmail.objects.bulk_create([
            OutboxEmail(kind=OutboxEmail.Kind.CONFIRMATION, request=request, subscriber_id=request.subscriber_id,
                        address=request.email) for request in requests])]
    else:
        column = lambda name: f"r.{quoted(ConsentRequest, name)}"  # noqa: E731
        columns, values, params = columns_and_values(
            OutboxEmail, {"request": column("id"), "subscriber": column("subscriber"), "address": column("email")},
            {"kind": OutboxEmail.Kind.CONFIRMATION})
        with connection.cursor() as cursor:
            cursor.execute(
                f"INSERT INTO {table(OutboxEmail)} ({columns}) SELECT {values} FROM {table(ConsentRequest)} r "  # noqa: S608
                f"WHERE {column('id')} = ANY(%s) ORDER BY {column('created_at')}, {column('id')} "
                f"RETURNING {quoted(OutboxEmail, 'id')}",
                [*params, [request.pk for request in requests]])
            ids = [row[0] for row in cursor.fetchall()]
    if ids and nudge_sender:
        nudge_on_commit(SEND_TASK)
    return ids


def outbox_preferences_link(*, email_hmac: str) -> None:
    """Record "here is your preferences link" for the confirmed reader with this
    address hash, if there is one, in ONE statement whatever the answer (INSERT ...
    SELECT: no lookup first, so the work says nothing about the address); the sender
    is nudged after the commit either way. The cooldown and the suppression list are
    checked where it is sent."""
    out, readers = OutboxEmail._meta, Subscriber._meta
    quote = connection.ops.quote_name
    columns = ("kind", "subscriber_id", "address", "status", "attempts", "created_at", "next_attempt_at",
               "message_id", "last_error")
    now = timezone.now()
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {quote(out.db_table)} ({', '.join(quote(c) for c in columns)}) "
            f"SELECT %s, {quote(readers.pk.column)}, {quote('email')}, %s, 0, %s, %s, '', '' "
            f"FROM {quote(readers.db_table)} WHERE {quote('email_hmac')} = %s AND {quote('confirmed_at')} IS NOT NULL",
            [OutboxEmail.Kind.PREFERENCES, Status.PENDING, now, now, email_hmac])
    nudge_on_commit(SEND_TASK)


def outbox_reengage(subscribers: list[Subscriber]) -> list[OutboxEmail]:
    """Record the "still want these?" email of each reader, in the caller's
    transaction (the one that marks them asked); the sender is nudged after the commit."""
    rows = OutboxEmail.objects.bulk_create([
        OutboxEmail(kind=OutboxEmail.Kind.REENGAGE, subscriber=reader, address=reader.email)
        for reader in subscribers])
    if rows:
        nudge_on_commit(SEND_TASK)
    return rows


def outbox_waiting(*, before: datetime) -> bool:
    """Whether any row was due before `before` and is still unsent, or is held under a
    lease that ran out: its task was lost (Redis down), or its sender died."""
    return OutboxEmail.objects.filter(
        Q(status=Status.PENDING, next_attempt_at__lt=before)
        | Q(status=Status.SENDING, lease_expires_at__lt=timezone.now())).exists()


def outbox_drain() -> int:
    """Send every due row, batch by batch, until none is left or the time budget is
    spent (then the next message takes over). Returns how many rows it handled.

    Safe to run twice or side by side: rows are claimed with SKIP LOCKED under a
    lease, and a row is only ever sent by the sender holding its claim."""
    nudged(SEND_TASK)
    started, total = time.monotonic(), 0
    batch = _batch_size()
    while time.monotonic() - started < SEND_BUDGET_SECONDS:
        claimed = _claim(limit=batch)
        if not claimed:
            return total
        _send(claimed)
        total += len(claimed)
    nudge_on_commit(SEND_TASK)
    return total


def outbox_send_now(*, row_ids: list[int]) -> int:
    """Send these rows now, if they are still due (a request processed on its own)."""
    claimed = _claim(limit=len(row_ids), ids=row_ids) if row_ids else []
    if claimed:
        _send(claimed)
    return len(claimed)


def _batch_size() -> int:
    profile = sending_profile()
    return profile.batch_size if profile.merge_field else 100


def _claim(*, limit: int, ids: list[int] | None = None) -> list[OutboxEmail]:
    now = timezone.now()
    due = Q(status=Status.PENDING, next_attempt_at__lte=now) | Q(status=Status.SENDING, lease_expires_at__lt=now)
    with transaction.atomic():
        rows = OutboxEmail.objects.select_for_update(skip_locked=True, of=("self",)).filter(due)
        if ids is not None:
            rows = rows.filter(pk__in=ids)
        claimed = list(rows.select_related("request", "subscriber").order_by("next_attempt_at")[:limit])
        OutboxEmail.objects.filter(pk__in=[row.pk for row in claimed]).update(
            status=Status.SENDING, lease_expires_at=now + LEASE, attempts=F("attempts") + 1)
    for row in claimed:
        row.attempts += 1
    return claimed


def _send(rows: list[OutboxEmail]) -> None:
    links = [row for row in rows if row.kind == OutboxEmail.Kind.PREFERENCES]
    if links:
        _send_preferences_links(links)
    asks = [row for row in rows if row.kind == OutboxEmail.Kind.REENGAGE]
    if asks:
        _send_one_each(asks, reengage_message)
    rows = [row for row in rows if row.kind == OutboxEmail.Kind.CONFIRMATION]
    if not rows:
        return
    try:
        allowed, held = _reserve(rows)
    except RedisError as error:
        _retry(rows, f"cooldown store unreachable: {error}")
        return
    if held:
        _finish(held, Status.HELD)
    groups = defaultdict(list)
    for row in allowed:
        groups[(row.request.alerts, row.request.marketing)].append(row)
    for group in groups.values():
        _send_group(group)


def _send_preferences_links(rows: list[OutboxEmail]) -> None:
    """One message each (they are rare): held by the cooldown, dropped for a suppressed
    address (bounced or complained: more mail would only hurt our reputation)."""
    blocked = _suppressed(rows)
    for row in rows:
        reader = row.subscriber
        if reader is None or reader.email_hmac in blocked:
            _finish([row], Status.FAILED, error="no longer deliverable")
            continue
        try:
            if not allow_preferences_email(reader.email_hmac):
                _finish([row], Status.HELD)
                continue
            preferences_message(reader).send()
        except RedisError as error:
            _retry([row], f"cooldown store unreachable: {error}")
            continue
        except (AnymailAPIError, smtplib.SMTPException, OSError) as error:
            _release_preferences(reader.email_hmac)
            _fail_or_retry(row, error)
            continue
        _finish([row], Status.SENT)


def _send_one_each(rows: list[OutboxEmail], build) -> None:
    """One message each, with no cooldown (a reader is asked at most once a window),
    dropped for a reader who is gone, no longer subscribed, or suppressed."""
    blocked = _suppressed(rows)
    for row in rows:
        reader = row.subscriber
        if reader is None or reader.status != Subscriber.Status.CONFIRMED or reader.email_hmac in blocked:
            _finish([row], Status.FAILED, error="no longer deliverable")
            continue
        try:
            build(reader).send()
        except AnymailRecipientsRefused:
            _finish([row], Status.FAILED, error="refused by the provider")
            continue
        except (AnymailAPIError, smtplib.SMTPException, OSError) as error:
            _fail_or_retry(row, error)
            continue
        _finish([row], Status.SENT)


def _suppressed(rows: list[OutboxEmail]) -> set[str]:
    """The address hashes of these rows' readers that are suppressed now: one query for
    a claimed batch rather than one a row (a re-engagement run records thousands)."""
    hmacs = {row.subscriber.email_hmac for row in rows if row.subscriber is not None}
    return set(Suppression.objects.active().filter(email_hmac__in=hmacs).values_list("email_hmac", flat=True))


def _fail_or_retry(row: OutboxEmail, error: Exception) -> None:
    """After one message failed: failed for good if the provider refused it for good,
    else retried with the backoff (a network error or SMTP failure is transient)."""
    classified = _classify(error) if isinstance(error, AnymailAPIError) else TransientOutboxError(str(error))
    if isinstance(classified, PermanentOutboxError):
        _finish([row], Status.FAILED, error=str(classified))
    else:
        _retry([row], str(classified))


def _release_preferences(email_hmac: str) -> None:
    try:
        release_preferences_email(email_hmac)
    except RedisError:
        pass


def _reserve(rows: list[OutboxEmail]) -> tuple[list[OutboxEmail], list[OutboxEmail]]:
    """Count the per-address cooldown of each row now, as it is about to be sent (and
    give it back if the send fails): rows over it are held, never sent."""
    verdicts = allow_confirmation_emails([(row.request.email_hmac, _cooldown_kind(row)) for row in rows])
    allowed = [row for row, ok in zip(rows, verdicts, strict=True) if ok]
    return allowed, [row for row, ok in zip(rows, verdicts, strict=True) if not ok]


def _cooldown_kind(row: OutboxEmail) -> str:
    return "signup" if row.request.alerts else "marketing"


def _send_group(rows: list[OutboxEmail]) -> None:
    try:
        sent, refused = (_send_merged if sending_profile().merge_field else _send_each)(rows)
    except TransientOutboxError as error:
        _release([row for row in rows if row not in error.sent])
        if error.sent:
            _finish(error.sent, Status.SENT)
        _retry([row for row in rows if row not in error.sent], str(error))
        return
    except PermanentOutboxError as error:
        _release(rows)
        _finish(rows, Status.FAILED, error=str(error))
        return
    _finish(sent, Status.SENT)
    if refused:
        _finish(refused, Status.FAILED, error="refused by the provider")


class TransientOutboxError(Exception):
    def __init__(self, message: str, sent: list[OutboxEmail] | None = None) -> None:
        super().__init__(message[:400])
        self.sent = sent or []


class PermanentOutboxError(Exception):
    pass


def _send_merged(rows: list[OutboxEmail]):
    """One provider call for the group: one rendering, each reader's own link
    through the provider's per-recipient variables."""
    profile = sending_profile()
    field = profile.merge_field.format("c")
    subject, text, html = confirmation_rendering(rows[0].request, confirm_url=confirm_url("TOKEN").replace(
        "TOKEN", field))
    make_token = confirm_tokens.make_token
    connection = backend_class(profile.backend_path)(fail_silently=False)
    message = BatchMessage(subject=subject, body=text, from_email=settings.DEFAULT_FROM_EMAIL,
                           to=[row.address for row in rows], connection=connection,
                           merge_data={row.address: {"c": make_token(row.request_id)} for row in rows},
                           tags=["confirmation"])
    message.attach_alternative(html, "text/html")
    try:
        message.send()
    except AnymailRecipientsRefused:
        return [], rows
    except AnymailAPIError as error:
        raise _classify(error) from error
    finally:
        connection.close()
    recipients = message.anymail_status.recipients
    refused = [row for row in rows if getattr(recipients.get(row.address), "status", None) in REFUSED]
    return [row for row in rows if row not in refused], refused


def _send_each(rows: list[OutboxEmail]):
    """One message per row (SMTP, and providers that do not personalise batches)."""
    sent, refused = [], []
    for row in rows:
        try:
            confirmation_message(row.request, row.subscriber).send()
        except (smtplib.SMTPRecipientsRefused, AnymailRecipientsRefused):
            refused.append(row)
            continue
        except AnymailAPIError as error:
            classified = _classify(error)
            if isinstance(classified, TransientOutboxError):
                classified.sent = sent
            raise classified from error
        except (smtplib.SMTPException, OSError) as error:
            raise TransientOutboxError(str(error), sent) from error
        sent.append(row)
    return sent, refused


def _classify(error: AnymailAPIError) -> Exception:
    """429, 5xx and network errors are worth retrying; any other 4xx is the provider
    refusing the request itself, which a retry would not change."""
    status = getattr(error, "status_code", None)
    if status is None or status == 429 or status >= 500:
        return TransientOutboxError(str(error))
    return PermanentOutboxError(str(error)[:400])


def _release(rows: list[OutboxEmail]) -> None:
    for row in rows:
        try:
            release_confirmation_email(row.request.email_hmac, kind=_cooldown_kind(row))
        except RedisError:
            pass


def _finish(rows: list[OutboxEmail], status: str, *, error: str = "") -> None:
    fields = {"status": status, "lease_expires_at": None, "last_error": error[:400]}
    if status == Status.SENT:
        fields["sent_at"] = timezone.now()
    OutboxEmail.objects.filter(pk__in=[row.pk for row in rows]).update(**fields)


def _retry(rows: list[OutboxEmail], error: str) -> None:
    now = timezone.now()
    for row in rows:
        delay = min(FIRST_RETRY_SECONDS * 2 ** (row.attempts - 1), MAX_RETRY_SECONDS)
        row.status = Status.FAILED if row.attempts >= MAX_ATTEMPTS else Status.PENDING
        row.next_attempt_at, row.lease_expires_at, row.last_error = now + timedelta(seconds=delay), None, error[:400]
    OutboxEmail.objects.bulk_update(rows, ["status", "next_attempt_at", "lease_expires_at", "last_error"])
    logger.warning("%d outbox emails to retry: %s", len(rows), error[:200])
