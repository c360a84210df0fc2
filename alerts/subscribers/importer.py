"""CSV import and export of subscribers with their consent evidence.

Both stream: the file is read (or written) a chunk of rows at a time, and each chunk
is checked and stored with a handful of bulk queries, so a list of millions needs
neither the memory to hold it nor one query per row. The import is idempotent: an
address already held is reported as a duplicate, never changed.

Columns: email, consent_given_at, consent_source, consent_wording (required), then
optionally consent_ip, topics (slugs separated by ";"), frequency (immediate, daily
or weekly). Times are ISO 8601 with a UTC offset, e.g. 2025-03-01T09:30:00Z.
"""

from __future__ import annotations

import csv
import ipaddress
import logging
import re
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TextIO

from django.core.exceptions import ValidationError
from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from ..common.addresses import email_hmac, normalize_email
from ..models import ConsentEvent, Subscriber, Suppression, Topic, Wording

logger = logging.getLogger(__name__)

REQUIRED = ["email", "consent_given_at", "consent_source", "consent_wording"]
OPTIONAL = ["consent_ip", "topics", "frequency"]
COLUMNS = REQUIRED + OPTIONAL
# Rows checked and stored per round of bulk queries.
CHUNK = 1000
IMPORT_SOURCE = "import"
IMPORTED_WORDING_VERSION = "imported"
FREQUENCIES = set(Subscriber.Frequency.values)


class CsvFormatError(ValueError):
    """The file as a whole cannot be imported (for example, a wrong header)."""


@dataclass(frozen=True)
class LineResult:
    """What happened to one line: outcome "imported" or "skipped"; for a skip, the
    category (invalid, duplicate, suppressed) and the reason in words."""

    line: int
    outcome: str
    category: str = ""
    reason: str = ""

    def __str__(self) -> str:
        if self.outcome == "imported":
            return f"line {self.line}: imported"
        return f"line {self.line}: skipped ({self.category}): {self.reason}"


@dataclass
class ImportSummary:
    imported: int = 0
    skipped: Counter = field(default_factory=Counter)

    def add(self, result: LineResult) -> None:
        if result.outcome == "imported":
            self.imported += 1
        else:
            self.skipped[result.category] += 1

    def __str__(self) -> str:
        details = ", ".join(f"{k} {v}" for k, v in sorted(self.skipped.items())) or "none"
        return f"Imported {self.imported}; skipped {sum(self.skipped.values())} ({details})."


@dataclass(frozen=True)
class Row:
    line: int
    email: str
    hmac: str
    given_at: datetime
    source_text: str
    wording_text: str
    ip: str | None
    topic_ids: tuple[int, ...]
    frequency: str


def _skip(line: int, category: str, reason: str) -> LineResult:
    return LineResult(line=line, outcome="skipped", category=category, reason=reason)


# --- Import -------------------------------------------------------------------------


def import_subscribers(
    lines: Iterable[str], *, report: Callable[[LineResult], None], file_label: str = "",
) -> ImportSummary:
    """Import subscribers from CSV text, calling `report` once per data line, in
    order. Raises CsvFormatError if the header is unusable (nothing is imported).
    Safe to re-run on the same file: everything already imported is a duplicate."""
    reader = csv.DictReader(lines)
    _check_header(reader.fieldnames)
    importer = _ChunkImporter(file_label=file_label)
    summary = ImportSummary()
    for chunk in _chunks(_parsed(reader, importer.topics), CHUNK):
        for result in importer.store(chunk):
            summary.add(result)
            report(result)
    logger.info("Import of %s: %s", file_label or "CSV", summary)
    return summary


def _check_header(fieldnames: list[str] | None) -> None:
    if not fieldnames:
        raise CsvFormatError("The file is empty: expected a header line " + ",".join(REQUIRED))
    names = [name.strip() for name in fieldnames]
    if names[: len(REQUIRED)] != REQUIRED:
        raise CsvFormatError(
            f"The header must start with {','.join(REQUIRED)} (found {','.join(names[:4])})")
    unknown = [name for name in names[len(REQUIRED):] if name not in OPTIONAL]
    if unknown:
        raise CsvFormatError(f"Unknown column(s) {', '.join(unknown)}; allowed: {', '.join(OPTIONAL)}")
    if len(set(names)) != len(names):
        raise CsvFormatError("A column appears twice in the header")


def _records(reader: csv.DictReader) -> Iterator[tuple[int, dict | None, str]]:
    """(line number, record, error) per data line; a malformed line is reported, not fatal."""
    while True:
        try:
            record = next(reader)
        except StopIteration:
            return
        except csv.Error as error:
            yield reader.line_num, None, f"unreadable CSV ({error})"
            continue
        yield reader.line_num, record, ""


def _parsed(reader: csv.DictReader, topics: dict[str, int]) -> Iterator[Row | LineResult]:
    for line, record, error in _records(reader):
        if record is None:
            yield _skip(line, "invalid", error)
            continue
        try:
            yield _parse(line, record, topics)
        except ValidationError as invalid:
            yield _skip(line, "invalid", invalid.messages[0])


def _parse(line: int, record: dict, topics: dict[str, int]) -> Row:
    """One CSV record as a Row, or ValidationError saying what is wrong with it."""
    if None in record:
        raise ValidationError("more fields than the header has")
    values = {key.strip(): unquoted((value or "").strip()) for key, value in record.items()}
    if any("\ufffd" in value for value in values.values()):
        raise ValidationError("the line is not valid UTF-8 text")
    if any("\x00" in value for value in values.values()):
        raise ValidationError("the line contains a NUL character")  # PostgreSQL text cannot
    for name in REQUIRED[1:]:
        if not values.get(name):
            raise ValidationError(f"no consent evidence: {name} is empty")
    try:
        email = normalize_email(values["email"])
    except ValidationError:
        raise ValidationError("email is not a valid address") from None
    return Row(
        line=line, email=email, hmac=email_hmac(email),
        given_at=_parse_time(values["consent_given_at"]),
        source_text=_limited(values["consent_source"], 300, "consent_source"),
        wording_text=_limited(values["consent_wording"], 5000, "consent_wording"),
        ip=_parse_ip(values.get("consent_ip", "")),
        topic_ids=_parse_topics(values.get("topics", ""), topics),
        frequency=_parse_frequency(values.get("frequency", "")),
    )


def _limited(value: str, limit: int, name: str) -> str:
    if len(value) > limit:
        raise ValidationError(f"{name} is longer than {limit} characters")
    return value


def _parse_time(value: str) -> datetime:
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise ValidationError("consent_given_at is not an ISO 8601 time") from None
    if moment.tzinfo is None:
        raise ValidationError("consent_given_at has no UTC offset (add Z or +00:00)")
    if moment > timezone.now() + timedelta(days=1):
        raise ValidationError("consent_given_at is in the future")
    return moment


def _parse_ip(value: str) -> str | None:
    if not value:
        return None
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        raise ValidationError("consent_ip is not an IP address") from None


def _parse_topics(value: str, topics: dict[str, int]) -> tuple[int, ...]:
    slugs = [slug.strip() for slug in re.split(r"[;|]", value) if slug.strip()]
    unknown = [slug for slug in slugs if slug not in topics]
    if unknown:
        raise ValidationError(f"unknown topic {unknown[0]!r}")
    return tuple(sorted({topics[slug] for slug in slugs}))


def _parse_frequency(value: str) -> str:
    value = value.lower() or Subscriber.Frequency.IMMEDIATE
    if value not in FREQUENCIES:
        raise ValidationError(f"frequency must be one of {', '.join(sorted(FREQUENCIES))}")
    return value


def _chunks(items: Iterator, size: int) -> Iterator[list]:
    chunk = []
    for item in items:
        chunk.append(item)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


class _ChunkImporter:
    """Stores chunks of parsed rows; remembers topics and wordings between chunks."""

    def __init__(self, *, file_label: str) -> None:
        self.file_label = file_label
        self.started_at = timezone.now()
        self.topics = dict(Topic.objects.values_list("slug", "id"))
        self._wordings: dict[str, int] = {}

    def store(self, chunk: list[Row | LineResult]) -> list[LineResult]:
        """Import the new addresses of one chunk; a result per item, in line order."""
        rows = [item for item in chunk if isinstance(item, Row)]
        verdicts = self._verdicts(rows)
        new_rows = [row for row in rows if row.line not in verdicts]
        for row in self._insert(new_rows):
            verdicts[row.line] = _skip(row.line, "duplicate", "the address was added meanwhile")
        results = [item if isinstance(item, LineResult) else verdicts.get(
            item.line, LineResult(line=item.line, outcome="imported")) for item in chunk]
        return results

    def _verdicts(self, rows: list[Row]) -> dict[int, LineResult]:
        """Skips for suppressed and already-known addresses, keyed by line."""
        hmacs = {row.hmac for row in rows}
        suppressed = dict(Suppression.objects.active().filter(email_hmac__in=hmacs)
                          .values_list("email_hmac", "reason"))
        known = {h: (source, created) for h, source, created in Subscriber.objects.filter(
            email_hmac__in=hmacs).values_list("email_hmac", "source", "created_at")}
        verdicts, seen = {}, set()
        for row in rows:
            if row.hmac in suppressed:
                label = Suppression.Reason(suppressed[row.hmac]).label.lower()
                verdicts[row.line] = _skip(row.line, "suppressed", f"the address is suppressed ({label})")
            elif row.hmac in seen or self._imported_this_run(known.get(row.hmac)):
                verdicts[row.line] = _skip(row.line, "duplicate", "the address appears earlier in this file")
            elif row.hmac in known:
                verdicts[row.line] = _skip(row.line, "duplicate", "already a subscriber")
            seen.add(row.hmac)
        return verdicts

    def _imported_this_run(self, known: tuple[str, datetime] | None) -> bool:
        return known is not None and known[0] == IMPORT_SOURCE and known[1] >= self.started_at

    def _insert(self, rows: list[Row]) -> list[Row]:
        """Insert rows in bulk; returns the rows that turned out to be duplicates
        (an address signed up between our check and the insert)."""
        try:
            with transaction.atomic():
                self._insert_all(rows)
            return []
        except IntegrityError:
            # Rare race with a signup: retry one by one so one clash skips one line.
            clashes = []
            for row in rows:
                try:
                    with transaction.atomic():
                        self._insert_all([row])
                except IntegrityError:
                    clashes.append(row)
            return clashes

    def _insert_all(self, rows: list[Row]) -> None:
        if connection.vendor == "postgresql":
            self._insert_all_unnest(rows)
        else:
            self._insert_all_orm(rows)

    def _insert_all_unnest(self, rows: list[Row]) -> None:
        # Three INSERT ... SELECT unnest(...) statements per chunk, no model instances:
        # several times faster than bulk_create on a big list (REFERENCE: 51k vs 275k
        # rows a second), as the fan-out does for the delivery ledger.
        now = timezone.now()
        with connection.cursor() as cursor:
            cursor.execute(
                f"INSERT INTO {Subscriber._meta.db_table} (email, email_hmac, confirmed_at, frequency, status,"
                " marketing_consent, time_zone, source, created_at)"
                " SELECT *, %s, false, '', %s, %s FROM unnest(%s::text[], %s::text[],"
                " %s::timestamptz[], %s::text[]) RETURNING id, email_hmac",
                [Subscriber.Status.CONFIRMED, IMPORT_SOURCE, now, [r.email for r in rows],
                 [r.hmac for r in rows], [r.given_at for r in rows], [r.frequency for r in rows]],
            )
            ids = {h: pk for pk, h in cursor.fetchall()}
            subscriber_ids = [ids[row.hmac] for row in rows]
            cursor.execute(
                f"INSERT INTO {ConsentEvent._meta.db_table} (subscriber_id, wording_id, ip_address, created_at,"
                " note, purpose, action, source, user_agent)"
                " SELECT *, %s, %s, %s, '' FROM unnest(%s::bigint[], %s::bigint[], %s::inet[],"
                " %s::timestamptz[], %s::text[])",
                [ConsentEvent.Purpose.ALERTS, ConsentEvent.Action.GIVEN, ConsentEvent.Source.IMPORT,
                 subscriber_ids, [self._wording_id(r.wording_text) for r in rows],
                 [r.ip for r in rows], [r.given_at for r in rows], [self._note(r) for r in rows]],
            )
            links = [(sid, topic) for sid, row in zip(subscriber_ids, rows, strict=True)
                     for topic in row.topic_ids]
            if links:
                cursor.execute(
                    f"INSERT INTO {Subscriber.topics.through._meta.db_table} (subscriber_id, topic_id)"
                    " SELECT * FROM unnest(%s::bigint[], %s::bigint[])",
                    [[sid for sid, _ in links], [topic for _, topic in links]],
                )

    def _insert_all_orm(self, rows: list[Row]) -> None:
        now = timezone.now()
        subscribers = Subscriber.objects.bulk_create([
            Subscriber(email=row.email, email_hmac=row.hmac, status=Subscriber.Status.CONFIRMED,
                       confirmed_at=row.given_at, created_at=now, source=IMPORT_SOURCE,
                       frequency=row.frequency)
            for row in rows
        ])
        ConsentEvent.objects.bulk_create([
            ConsentEvent(subscriber=subscriber, purpose=ConsentEvent.Purpose.ALERTS,
                         action=ConsentEvent.Action.GIVEN, source=ConsentEvent.Source.IMPORT,
                         wording_id=self._wording_id(row.wording_text), ip_address=row.ip,
                         created_at=row.given_at, note=self._note(row))
            for subscriber, row in zip(subscribers, rows, strict=True)
        ])
        Through = Subscriber.topics.through
        Through.objects.bulk_create([
            Through(subscriber_id=subscriber.pk, topic_id=topic_id)
            for subscriber, row in zip(subscribers, rows, strict=True) for topic_id in row.topic_ids
        ])

    def _note(self, row: Row) -> str:
        where = f"{self.file_label} line {row.line}" if self.file_label else f"line {row.line}"
        return f"Imported from {where}; consent source: {row.source_text}"[:400]

    def _wording_id(self, text: str) -> int:
        if text not in self._wordings:
            if len(self._wordings) > 1000:  # a file with a different text on every line
                self._wordings.clear()
            kind, version = Wording.Kind.ALERTS, IMPORTED_WORDING_VERSION
            wording, _ = Wording.objects.get_or_create(
                digest=Wording.digest_for(kind, version, text),
                defaults={"kind": kind, "version": version, "text": text})
            self._wordings[text] = wording.pk
        return self._wordings[text]


# --- Export -------------------------------------------------------------------------


def export_subscribers(out: TextIO) -> int:
    """Write every confirmed, unsuppressed subscriber as CSV in the import format,
    with the evidence of their most recent consent. Returns the number written."""
    writer = csv.writer(out)
    writer.writerow(COLUMNS)
    written = 0
    for subscribers in _confirmed_in_chunks():
        ids = [s.pk for s in subscribers]
        evidence, topics = _evidence(ids), _topic_slugs(ids)
        for subscriber in subscribers:
            if subscriber.pk in evidence:
                writer.writerow(_export_row(subscriber, evidence[subscriber.pk], topics.get(subscriber.pk, [])))
                written += 1
    return written


def _confirmed_in_chunks() -> Iterator[list[Subscriber]]:
    # Keyset pagination by id: constant memory, no OFFSET.
    active = Suppression.objects.active().values("email_hmac")
    base = Subscriber.objects.filter(status=Subscriber.Status.CONFIRMED).exclude(
        email_hmac__in=active).only("id", "email", "frequency").order_by("pk")
    last = 0
    while chunk := list(base.filter(pk__gt=last)[:CHUNK]):
        yield chunk
        last = chunk[-1].pk


def _evidence(ids: list[int]) -> dict[int, dict]:
    events = ConsentEvent.objects.filter(
        subscriber_id__in=ids, purpose=ConsentEvent.Purpose.ALERTS,
        action__in=[ConsentEvent.Action.GIVEN, ConsentEvent.Action.CONFIRMED],
    ).order_by("subscriber_id", "created_at", "id").values(
        "subscriber_id", "created_at", "source", "note", "ip_address", "wording__text")
    return {event["subscriber_id"]: event for event in events}  # the latest wins


def _topic_slugs(ids: list[int]) -> dict[int, list[str]]:
    slugs: dict[int, list[str]] = {}
    links = Subscriber.topics.through.objects.filter(subscriber_id__in=ids).values_list(
        "subscriber_id", "topic__slug")
    for subscriber_id, slug in links:
        slugs.setdefault(subscriber_id, []).append(slug)
    return slugs


def _export_row(subscriber: Subscriber, event: dict, slugs: list[str]) -> list[str]:
    how = ConsentEvent.Source(event["source"]).label
    return [spreadsheet_safe(cell) for cell in (
        subscriber.email,
        event["created_at"].isoformat(),
        f"{how}: {event['note']}" if event["note"] else how,
        event["wording__text"] or "",
        event["ip_address"] or "",
        ";".join(sorted(slugs)),
        subscriber.frequency,
    )]


# A cell starting with one of these is run as a formula by Excel, LibreOffice and
# Google Sheets (OWASP "CSV injection"); imported text such as a consent wording can.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r", "\n")


def spreadsheet_safe(cell: str) -> str:
    """The cell as a spreadsheet shows it but never runs it: a leading apostrophe,
    which the import strips again (`unquoted`)."""
    return f"'{cell}" if cell.startswith(FORMULA_STARTS) else cell


def unquoted(cell: str) -> str:
    """Undo spreadsheet_safe, so an exported file imports back unchanged."""
    return cell[1:] if cell.startswith("'") and cell[1:].startswith(FORMULA_STARTS) else cell
