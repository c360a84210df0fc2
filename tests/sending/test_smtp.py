"""SMTP: each batch's message built once and personalised per reader, sent over several
kept connections, and written to the ledger round by round."""

from __future__ import annotations

import pytest
from django.utils import timezone

from alerts.models import Batch, Delivery, Subscriber
from alerts.publishing import fanout
from alerts.sending import batches as batch_engine
from alerts.sending.provider import ROUND_PER_CONNECTION
from tests.factories import make_subscriber
from tests.fakes.smtp import FakeSMTP
from tests.helpers import READER_LINK, link_owner, publish_and_cut, send_all

pytestmark = pytest.mark.django_db


@pytest.fixture(params=[False, True], ids=["lockstep", "pipelining"])
def smtp(settings, request):
    """aiosmtpd's sink, offering PIPELINING or not: every test runs both ways."""
    with FakeSMTP(pipelining=request.param) as sink:
        settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
        settings.EMAIL_HOST, settings.EMAIL_PORT = sink.host, sink.port
        settings.EMAIL_CONNECTIONS = 3
        yield sink


def test_each_reader_gets_one_copy_with_their_own_links_and_headers(alert, settings, smtp):
    for i in range(200):
        make_subscriber(f"r{i}@example.com")
    send_all(publish_and_cut(alert, settings=settings))
    assert smtp.message_count == 200 and set(smtp.recipient_counts().values()) == {1}
    assert 1 < smtp.connections <= 3
    ids = dict(Subscriber.objects.values_list("email", "pk"))
    ledger = dict(Delivery.objects.values_list("subscriber__email", "message_id"))
    for received in smtp.messages:
        message = received.parsed()
        reader = message["To"]
        assert message["Subject"] == "Missiles fired <b>hours</b> before summit"
        text = message.get_body(("plain",)).get_content()
        html = message.get_body(("html",)).get_content()
        assert "&lt;b&gt;hours&lt;/b&gt;" in html
        for part in (text, html):
            assert {link_owner(t) for t in READER_LINK.findall(part)} == {ids[reader]}
        header = message["List-Unsubscribe"].strip()
        assert link_owner(READER_LINK.fullmatch(header.strip("<>"))[1]) == ids[reader]
        assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
        assert "breaking-news.news.example.com" in message["List-Id"]
        assert message["Message-ID"] == ledger[reader]
    assert len(set(ledger.values())) == 200


def test_connections_stay_open_from_one_batch_to_the_next(alert, settings, smtp):
    settings.EMAIL_CONNECTIONS = 1
    for i in range(30):
        make_subscriber(f"r{i}@example.com")
    send_all(publish_and_cut(alert, batch_size=10, settings=settings))
    assert smtp.message_count == 30 and smtp.connections == 1


def test_a_server_failing_part_way_keeps_what_it_accepted_and_the_retry_sends_only_the_rest(
        alert, settings, smtp):
    settings.EMAIL_CONNECTIONS = 1
    readers = 3 * ROUND_PER_CONNECTION
    for i in range(readers):
        make_subscriber(f"r{i}@example.com")
    batch = publish_and_cut(alert, settings=settings)[0]
    smtp.refuse_after = ROUND_PER_CONNECTION + 10
    with pytest.raises(batch_engine.RetryLater):
        fanout.batch_send(batch_id=batch.pk)
    # The first round went into the ledger as it ended, the part of the second too.
    assert Delivery.objects.count() == ROUND_PER_CONNECTION + 10
    smtp.refuse_after = None
    Batch.objects.filter(pk=batch.pk).update(next_attempt_at=timezone.now())
    assert fanout.batch_send(batch_id=batch.pk) == Batch.Status.SENT
    assert smtp.message_count == readers and set(smtp.recipient_counts().values()) == {1}
    batch.refresh_from_db()
    assert batch.sent_count == readers and Delivery.objects.filter(status=Delivery.Status.SENT).count() == readers


def test_each_round_is_reported_as_it_ends_before_the_next_is_sent(alert, settings, smtp):
    from alerts.emails import alert_rendering
    from alerts.sending.provider import deliver_rendered

    settings.EMAIL_CONNECTIONS = 2
    readers = [(make_subscriber(f"r{i}@example.com").pk, f"r{i}@example.com") for i in range(250)]
    seen_by_sink = []

    def on_progress(rows):
        seen_by_sink.append((len(rows), smtp.message_count))

    deliver_rendered(alert_rendering(alert), readers, tag="t", metadata={}, on_progress=on_progress)
    # Rounds of 2 x 50: each reported when exactly the messages so far were sent.
    assert seen_by_sink == [(100, 100), (100, 200), (50, 250)]


def test_a_refused_recipient_fails_that_reader_alone_and_the_others_are_sent(alert, settings, smtp):
    for i in range(120):
        make_subscriber(f"r{i}@example.com")
    # One at the very start, one in the middle, one on the last message of a round.
    smtp.refuse_recipients = {"r0@example.com", "r33@example.com", "r119@example.com"}
    batch = publish_and_cut(alert, settings=settings)[0]
    assert fanout.batch_send(batch_id=batch.pk) == Batch.Status.SENT
    counts = smtp.recipient_counts()
    assert len(counts) == 117 and set(counts.values()) == {1} and not counts.keys() & smtp.refuse_recipients
    failed = Delivery.objects.filter(status=Delivery.Status.FAILED)
    assert {d.subscriber.email for d in failed} == smtp.refuse_recipients
    assert all(d.error.startswith("550") and not d.message_id for d in failed)
    sent = dict(Delivery.objects.filter(status=Delivery.Status.SENT).values_list("subscriber__email", "message_id"))
    assert sent.keys() == counts.keys()
    assert {m.parsed()["Message-ID"] for m in smtp.messages} == set(sent.values())


@pytest.mark.parametrize("pipelining", [True, False], ids=["offered", "not-offered"])
def test_with_pipelining_each_message_costs_one_round_trip_instead_of_four(alert, settings, pipelining):
    from alerts.emails import alert_rendering
    from alerts.sending.provider import deliver_rendered
    from tests.fakes.smtp_sink import running

    settings.EMAIL_CONNECTIONS = 1
    readers = [(make_subscriber(f"r{i}@example.com").pk, f"r{i}@example.com") for i in range(100)]
    with running(pipelining=pipelining) as sink:
        settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
        settings.EMAIL_HOST, settings.EMAIL_PORT = sink.server_address
        outcomes = deliver_rendered(alert_rendering(alert), readers, tag="t", metadata={})
        assert sink.messages == 100 and {o.status for o in outcomes} == {Delivery.Status.SENT}
        # EHLO, then MAIL/RCPT/DATA answered together, then each message's content
        # together with the next one's commands; without it every command waits.
        if pipelining:
            assert sink.writes <= 100 + 5
        else:
            assert sink.writes >= 4 * 100


@pytest.mark.parametrize("farewell", [b"", b"421 4.4.2 sink Error: timeout exceeded\r\n"],
                         ids=["closed", "421-then-closed"])
def test_a_kept_connection_closed_by_the_server_while_idle_is_reopened_and_nobody_gets_two(
        alert, settings, farewell):
    from alerts.emails import alert_rendering
    from alerts.sending.provider import deliver_rendered
    from tests.fakes.smtp_sink import running

    settings.EMAIL_CONNECTIONS = 1
    readers = [(make_subscriber(f"r{i}@example.com").pk, f"r{i}@example.com") for i in range(20)]
    with running() as sink:
        settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
        settings.EMAIL_HOST, settings.EMAIL_PORT = sink.server_address
        rendered = alert_rendering(alert)
        deliver_rendered(rendered, readers[:10], tag="t", metadata={})
        sink.close_connections(farewell)
        outcomes = deliver_rendered(rendered, readers[10:], tag="t", metadata={})
        assert {o.status for o in outcomes} == {Delivery.Status.SENT} and len(outcomes) == 10
        assert sink.messages == 20


def test_a_recipient_refused_for_now_fails_that_reader_alone_with_the_servers_own_words(alert, settings, smtp):
    # As smtplib's sendmail: a refused recipient is never retried, or one full mailbox
    # would hold back everyone after it in the batch at every attempt.
    for i in range(5):
        make_subscriber(f"r{i}@example.com")
    smtp.refuse_recipients = {"r2@example.com"}
    smtp.refuse_recipient_reply = "452 4.2.2 Mailbox full"
    batch = publish_and_cut(alert, settings=settings)[0]
    assert fanout.batch_send(batch_id=batch.pk) == Batch.Status.SENT
    assert smtp.message_count == 4
    failed = Delivery.objects.get(status=Delivery.Status.FAILED)
    assert failed.subscriber.email == "r2@example.com" and failed.error == "452 4.2.2 Mailbox full"


def test_a_refusal_on_the_last_message_of_a_batch_leaves_the_kept_connection_clean_for_the_next(
        alert, settings, smtp):
    settings.EMAIL_CONNECTIONS = 1
    for i in range(10):
        make_subscriber(f"r{i}@example.com")
    smtp.refuse_recipients = {"r4@example.com"}  # the last of the first batch of 5
    send_all(publish_and_cut(alert, batch_size=5, settings=settings))
    assert smtp.connections == 1 and smtp.message_count == 9
    failed = Delivery.objects.filter(status=Delivery.Status.FAILED)
    assert [d.subscriber.email for d in failed] == ["r4@example.com"]
