"""manage.py import_subscribers / export_subscribers: consent evidence, a report per
line, idempotence, and streaming a large file with bulk writes."""

from __future__ import annotations

import csv
import io
import os
import stat
import time
from datetime import UTC, datetime

import pytest
from django.core.management import CommandError, call_command

from alerts.common.addresses import email_hmac
from alerts.models import ConsentEvent, Subscriber, Suppression
from alerts.subscribers.importer import CHUNK, import_subscribers
from tests.factories import make_subscriber

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("topics")]

HEADER = "email,consent_given_at,consent_source,consent_wording,consent_ip,topics,frequency\n"
GOOD = 'alice@example.com,2024-05-01T09:30:00Z,Old provider signup form,"Get breaking news, free",203.0.113.9,politics;sport,daily\n'


def run_import(tmp_path, text: str | bytes, *args: str) -> list[str]:
    path = tmp_path / "list.csv"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    out = io.StringIO()
    call_command("import_subscribers", str(path), *args, stdout=out)
    return out.getvalue().splitlines()


def test_it_imports_a_line_with_its_consent_evidence(tmp_path):
    report = run_import(tmp_path, HEADER + GOOD)
    assert report[0] == "line 2: imported"
    assert report[-1] == "Imported 1; skipped 0 (none)."
    alice = Subscriber.objects.get()
    assert (alice.email, alice.status, alice.frequency, alice.source) == (
        "alice@example.com", "confirmed", "daily", "import")
    assert sorted(alice.topics.values_list("slug", flat=True)) == ["politics", "sport"]
    assert alice.marketing_consent is False  # never inferred
    event = alice.consent_events.get()
    given_at = datetime(2024, 5, 1, 9, 30, tzinfo=UTC)
    assert (event.purpose, event.action, event.source) == ("alerts", "given", "import")
    assert (event.created_at, alice.confirmed_at) == (given_at, given_at)
    assert event.wording.text == "Get breaking news, free"
    assert event.wording.version == "imported"
    assert event.ip_address == "203.0.113.9"
    assert event.note == "Imported from list.csv line 2; consent source: Old provider signup form"


def test_only_the_required_columns_are_needed(tmp_path):
    run_import(tmp_path, "email,consent_given_at,consent_source,consent_wording\n"
                         "bob@example.com,2024-05-01T09:30:00+02:00,form,Sign up\n")
    bob = Subscriber.objects.get()
    assert (bob.frequency, list(bob.topics.all())) == ("immediate", [])


@pytest.mark.parametrize(("line", "reason"), [
    ("not-an-address,2024-05-01T09:30:00Z,form,Sign up", "email is not a valid address"),
    ("a@example.com,,form,Sign up", "no consent evidence: consent_given_at is empty"),
    ("a@example.com,2024-05-01T09:30:00Z,,Sign up", "no consent evidence: consent_source is empty"),
    ("a@example.com,2024-05-01T09:30:00Z,form,", "no consent evidence: consent_wording is empty"),
    ("a@example.com", "no consent evidence: consent_given_at is empty"),
    ("a@example.com,yesterday,form,Sign up", "consent_given_at is not an ISO 8601 time"),
    ("a@example.com,2024-05-01T09:30:00,form,Sign up", "consent_given_at has no UTC offset"),
    ("a@example.com,2999-01-01T00:00:00Z,form,Sign up", "consent_given_at is in the future"),
    ("a@example.com,2024-05-01T09:30:00Z,form,Sign up,999.1.1.1", "consent_ip is not an IP address"),
    ("a@example.com,2024-05-01T09:30:00Z,form,Sign up,,cookery", "unknown topic 'cookery'"),
    ("a@example.com,2024-05-01T09:30:00Z,form,Sign up,,,hourly", "frequency must be one of"),
    ("a@example.com,2024-05-01T09:30:00Z,form,Sign up,,,,extra", "more fields than the header has"),
    ("a@example.com,2024-05-01T09:30:00Z,form,Sign\x00up", "the line contains a NUL character"),
])
def test_each_bad_line_is_skipped_with_the_reason(tmp_path, line, reason):
    report = run_import(tmp_path, HEADER + GOOD + line + "\n" + GOOD.replace("alice", "carol"))
    assert report[0] == "line 2: imported"
    assert report[1].startswith("line 3: skipped (invalid): " + reason)
    assert report[-2] == "line 4: imported"
    assert not Subscriber.objects.filter(email="a@example.com").exists()
    assert Subscriber.objects.count() == 2


def test_a_quoted_header_injection_is_an_invalid_address(tmp_path):
    injected = '"a@example.com\r\nBcc: x@example.com",2024-05-01T09:30:00Z,form,Sign up\n'
    report = run_import(tmp_path, HEADER + injected + GOOD)
    # A quoted field may span lines; the report names the line where the record ends.
    assert report[:2] == ["line 3: skipped (invalid): email is not a valid address", "line 4: imported"]


def test_a_line_that_is_not_utf8_is_skipped_and_the_rest_imported(tmp_path):
    latin1 = "dora@example.com,2024-05-01T09:30:00Z,form,Abonnez-vous à nos alertes\n".encode("latin-1")
    report = run_import(tmp_path, HEADER.encode() + latin1 + GOOD.encode())
    assert report[0] == "line 2: skipped (invalid): the line is not valid UTF-8 text"
    assert report[1] == "line 3: imported"


def test_duplicates_and_suppressed_addresses_are_skipped_with_the_reason(tmp_path):
    make_subscriber("known@example.com")
    Suppression.objects.create(email_hmac=email_hmac("bounced@example.com"), reason="bounced")
    lines = [GOOD, GOOD.replace("alice@", "ALICE@"), GOOD.replace("alice", "known"),
             GOOD.replace("alice", "bounced")]
    assert run_import(tmp_path, HEADER + "".join(lines)) == [
        "line 2: imported",
        "line 3: skipped (duplicate): the address appears earlier in this file",
        "line 4: skipped (duplicate): already a subscriber",
        "line 5: skipped (suppressed): the address is suppressed (hard bounce)",
        "Imported 1; skipped 3 (duplicate 2, suppressed 1).",
    ]


def test_running_it_again_changes_nothing(tmp_path):
    text = HEADER + GOOD + GOOD.replace("alice", "bob")
    run_import(tmp_path, text)
    again = run_import(tmp_path, text)
    assert again[-1] == "Imported 0; skipped 2 (duplicate 2)."
    assert Subscriber.objects.count() == ConsentEvent.objects.count() == 2


@pytest.mark.parametrize(("text", "message"), [
    ("", "The file is empty"),
    ("address,when\nx@example.com,2024-01-01T00:00:00Z\n", "The header must start with"),
    ("email,consent_given_at,consent_source,consent_wording,colour\n", "Unknown column(s) colour"),
])
def test_a_file_with_a_wrong_header_imports_nothing(tmp_path, text, message):
    with pytest.raises(CommandError, match=message.replace("(", r"\(").replace(")", r"\)")):
        run_import(tmp_path, text + (GOOD if text else ""))
    assert not Subscriber.objects.exists()


def test_a_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(CommandError, match="Cannot read"):
        call_command("import_subscribers", str(tmp_path / "nope.csv"))


class LineFeed:
    """A file that can only be iterated line by line, counting how far it has been read."""

    def __init__(self, header: str, count: int) -> None:
        self.header, self.count, self.read = header, count, 0

    def __iter__(self):
        yield self.header
        for i in range(self.count):
            self.read += 1
            yield f"r{i}@example.com,2024-05-01T09:30:00Z,form,Sign up\n"


def test_the_import_streams_a_chunk_at_a_time():
    feed = LineFeed(HEADER, 5 * CHUNK)
    furthest_ahead = 0

    def report(result):
        nonlocal furthest_ahead
        furthest_ahead = max(furthest_ahead, feed.read - (result.line - 1))

    summary = import_subscribers(feed, report=report)
    assert summary.imported == 5 * CHUNK
    assert furthest_ahead <= CHUNK  # never more than one chunk read ahead of the report


def line_kind(i: int) -> str:
    if i % 101 == 7:
        return "invalid address"
    if i % 211 == 3:
        return "no evidence"
    if i % 503 == 11:
        return "suppressed"
    if i % 307 == 5 and line_kind(i - 1) == "good":
        return "duplicate"
    return "good"


def big_file(path, rows: int) -> dict[str, int]:
    """`rows` data lines, with bad ones mixed in; returns what the import should report."""
    expected = {"imported": 0, "invalid": 0, "duplicate": 0, "suppressed": 0}
    with path.open("w", encoding="utf-8", newline="") as out:
        out.write(HEADER)
        for i in range(rows):
            kind = line_kind(i)
            if kind == "invalid address":
                out.write(f"broken-{i},2024-05-01T09:30:00Z,form,Sign up\n")
            elif kind == "no evidence":
                out.write(f"r{i}@example.com,2024-05-01T09:30:00Z,,Sign up\n")
            elif kind == "duplicate":
                out.write(f"R{i - 1}@example.com,2024-05-01T09:30:00Z,form,Sign up\n")
            elif kind == "suppressed":
                out.write(f"suppressed{i}@example.com,2024-05-01T09:30:00Z,form,Sign up\n")
            else:
                topics = "politics" if i % 2 else ""
                out.write(f"r{i}@example.com,2024-05-01T09:30:00Z,Signup form {i % 3},"
                          f"\"Breaking news, version {i % 3}\",198.51.100.{i % 250},{topics},daily\n")
            category = {"invalid address": "invalid", "no evidence": "invalid", "good": "imported"}
            expected[category.get(kind, kind)] += 1
    return expected


@pytest.mark.parametrize("rows", [100_000])
def test_a_hundred_thousand_lines_with_bad_ones_import_every_good_line_once(tmp_path, rows):
    path = tmp_path / "big.csv"
    expected = big_file(path, rows)
    Suppression.objects.bulk_create([
        Suppression(email_hmac=email_hmac(f"suppressed{i}@example.com"), reason="complained")
        for i in range(rows) if line_kind(i) == "suppressed"])
    out = io.StringIO()
    started = time.monotonic()
    call_command("import_subscribers", str(path), "--skipped-only", stdout=out)
    elapsed = time.monotonic() - started
    report = out.getvalue().splitlines()
    skipped = report[:-1]
    counts = {kind: sum(f"({kind})" in line for line in skipped) for kind in ("invalid", "duplicate", "suppressed")}
    assert Subscriber.objects.count() == ConsentEvent.objects.count() == expected["imported"]
    assert counts == {k: expected[k] for k in counts}
    # Speed is the benchmark's business, not a test's: report it, never assert it.
    print(f"\nimported {rows} lines in {elapsed:.1f}s")


# --- Export ----------------------------------------------------------------------------


def test_export_writes_the_import_format_owner_only_and_round_trips(tmp_path):
    run_import(tmp_path, HEADER + GOOD + GOOD.replace("alice", "bob").replace("daily", "weekly"))
    make_subscriber("pending@example.com", status=Subscriber.Status.PENDING)
    gone = make_subscriber("gone@example.com")
    Suppression.objects.create(email_hmac=gone.email_hmac, reason="bounced")
    path = tmp_path / "out.csv"
    call_command("export_subscribers", str(path), stdout=io.StringIO())
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    rows = list(csv.DictReader(path.open(encoding="utf-8")))
    assert [row["email"] for row in rows] == ["alice@example.com", "bob@example.com"]
    assert rows[0]["consent_given_at"] == "2024-05-01T09:30:00+00:00"
    assert rows[0]["consent_wording"] == "Get breaking news, free"
    assert (rows[0]["topics"], rows[1]["frequency"], rows[0]["consent_ip"]) == (
        "politics;sport", "weekly", "203.0.113.9")

    Subscriber.objects.all().delete()
    Suppression.objects.all().delete()
    report = run_import(tmp_path, path.read_text(encoding="utf-8"))
    assert report[-1] == "Imported 2; skipped 0 (none)."


# --- The export file is safe to open ---------------------------------------------------


ALICE_CSV = ("email,consent_given_at,consent_source,consent_wording\n"
             "alice@example.com,2024-05-01T09:30:00Z,old provider,Sign up\n")


def test_export_refuses_to_write_through_an_existing_file_or_a_symlink(tmp_path):
    run_import(tmp_path, ALICE_CSV)
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    link = tmp_path / "link.csv"
    link.symlink_to(victim)
    shared = tmp_path / "shared.csv"
    shared.write_text("")
    os.chmod(shared, 0o644)
    for path in (link, shared):
        call_command("export_subscribers", str(path), stdout=io.StringIO())
        assert not path.is_symlink()
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        assert "alice@example.com" in path.read_text()
    assert victim.read_text() == "keep me"
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]  # nothing left behind


def test_export_is_recorded(tmp_path):
    from alerts.models import RightsEvent

    run_import(tmp_path, ALICE_CSV)
    call_command("export_subscribers", str(tmp_path / "out.csv"), stdout=io.StringIO())
    event = RightsEvent.objects.get()
    assert (event.kind, event.via, event.count, event.subscriber_ref) == ("export", "command", 1, None)


def test_a_cell_a_spreadsheet_would_run_gets_an_apostrophe_that_the_import_removes():
    from alerts.subscribers.importer import spreadsheet_safe, unquoted

    for text in ("=1+1", "+1", "-1", "@SUM(A1)", "\tx", "\rx", "\nx"):
        assert spreadsheet_safe(text) == "'" + text
        assert unquoted(spreadsheet_safe(text)) == text
    for text in ("Sign up, free", "'quoted", "alice@example.com", "2024-05-01T09:30:00+00:00"):
        assert spreadsheet_safe(text) == text == unquoted(text)


@pytest.mark.parametrize("text", ['=HYPERLINK(""http://evil.example"",""click"")', "+1+2", "-2+3", "@SUM(A1)"])
def test_export_cells_that_a_spreadsheet_would_run_are_defused_and_import_back(tmp_path, text):
    run_import(tmp_path, "email,consent_given_at,consent_source,consent_wording\n"
                         f"alice@example.com,2024-05-01T09:30:00Z,old,\"{text} wording\"\n")
    imported = ConsentEvent.objects.get().wording.text
    path = tmp_path / "out.csv"
    call_command("export_subscribers", str(path), stdout=io.StringIO())
    [row] = list(csv.DictReader(path.open(encoding="utf-8")))
    assert row["consent_wording"].startswith("'")
    Subscriber.objects.all().delete()
    assert run_import(tmp_path, path.read_text(encoding="utf-8"))[-1] == "Imported 1; skipped 0 (none)."
    assert ConsentEvent.objects.get().wording.text == imported
