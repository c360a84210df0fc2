"""SMTP: each batch's message built once and personalised per reader, sent over several
kept connections, and written to the ledger round by round."""

from __future__ import annotations

import re

import pytest
from django.utils import timezone

from alerts.common.tokens import link_tokens
from alerts.models import Batch, Delivery, Subscriber
from alerts.publishing import fanout
from alerts.sending import batches as batch_engine
from alerts.sending.provider import ROUND_PER_CONNECTION
from tests.factories import make_subscriber
from tests.fakes.smtp import FakeSMTP
from tests.helpers import publish_and_cut, send_all

pytestmark = pytest.mark.django_db
LINK = re.compile(r"https://news\.example\.com/u/([^/\s\"<>]+)/")


@pytest.fixture
def smtp(settings):
    with FakeSMTP() as sink:
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
            assert {link_tokens.read_for_unsubscribe(t) for t in LINK.findall(part)} == {ids[reader]}
        header = message["List-Unsubscribe"].strip()
        assert link_tokens.read_for_unsubscribe(LINK.fullmatch(header.strip("<>"))[1]) == ids[reader]
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
