"""Time to inbox: delivered events posted through the real, signed Mailgun webhook
after a real send (anymail's Mailgun backend against the fake Mailgun), read back from
the alert's progress page, its progress JSON and the metrics endpoint, per mailbox
provider."""

from __future__ import annotations

import re
import statistics
from datetime import timedelta

import pytest
from django.core.cache import cache
from django.urls import reverse
from django.utils import timezone

from alerts.models import Alert, Delivery, TrackingEvent
from alerts.observability.mailboxes import mailbox_of
from alerts.observability.time_to_inbox import inbox_times, percentile
from tests.factories import make_subscriber
from tests.helpers import publish_and_cut, send_all

from .conftest import delivered_event, mailgun_body, post_mailgun_event, samples, value

pytestmark = pytest.mark.django_db

# Seconds from publishing to delivery, per reader, by domain.
DELAYS = {
    "gmail.com": [4, 6, 9, 15, 40],
    "hotmail.co.uk": [20, 80],
    "yahoo.com": [7, 11],
    "icloud.com": [12, 13, 30],
    "example.org": [3, 100, 250],
}
MAILBOX = {"gmail.com": "gmail", "hotmail.co.uk": "microsoft", "yahoo.com": "yahoo",
           "icloud.com": "apple", "example.org": "other"}


def expected(delays: list[float]) -> dict[str, float]:
    """percentile_cont's figures, computed independently (statistics' inclusive method
    interpolates between closest ranks in the same way)."""
    cuts = statistics.quantiles(delays, n=100, method="inclusive")
    return {"p50": cuts[49], "p95": cuts[94], "p99": cuts[98]}


@pytest.fixture
def sent_alert(alert, mailgun, eager_celery, settings):
    """An alert really sent to every reader of DELAYS, published an hour ago."""
    for domain, delays in DELAYS.items():
        for i in range(len(delays)):
            make_subscriber(f"reader{i}@{domain}")
    send_all(publish_and_cut(alert, batch_size=4, settings=settings))
    published = timezone.now() - timedelta(hours=1)
    Alert.objects.filter(pk=alert.pk).update(published_at=published)
    alert.refresh_from_db()
    return alert


def deliver_all(client, alert: Alert) -> None:
    rows = Delivery.objects.filter(alert=alert).select_related("subscriber", "batch")
    by_email = {row.subscriber.email: row.provider_message_id for row in rows}
    assert len(by_email) == sum(len(d) for d in DELAYS.values())
    for domain, delays in DELAYS.items():
        for i, delay in enumerate(delays):
            email = f"reader{i}@{domain}"
            at = (alert.published_at + timedelta(seconds=delay)).timestamp()
            assert post_mailgun_event(client, delivered_event(email, by_email[email], at)).status_code == 200


def test_delivered_events_give_each_mailbox_providers_percentiles_on_the_page_json_and_metrics(
        client, sent_alert, staff):
    before = samples(client)
    deliver_all(client, sent_alert)
    assert TrackingEvent.objects.filter(alert=sent_alert, event_type="delivered").count() == 15
    cache.clear()  # the first scrape cached "no deliveries yet" for CACHE_SECONDS

    page = client.get(reverse("admin:alerts_alert_progress", args=[sent_alert.pk])).content.decode()
    as_json = client.get(reverse("admin:alerts_alert_progress_json", args=[sent_alert.pk])).json()
    scraped = samples(client)
    everyone = [d for delays in DELAYS.values() for d in delays]
    for mailbox, delays in [("all", everyone), *((MAILBOX[d], v) for d, v in DELAYS.items())]:
        want = expected(delays)
        row = re.search(rf'<tr data-mailbox="{mailbox}"><th>[^<]+</th>((?:<td>[^<]*</td>)+)</tr>', page)
        assert row, f"no row for {mailbox}"
        count, p50, p95, p99 = re.findall(r"<td>([^<]*)</td>", row.group(1))
        assert int(count) == len(delays)
        assert float(p50) == pytest.approx(want["p50"], abs=0.01)
        assert float(p95) == pytest.approx(want["p95"], abs=0.01)
        figures = as_json["time_to_inbox"]["overall" if mailbox == "all" else "by_mailbox"]
        figures = figures if mailbox == "all" else figures[mailbox]
        assert figures["p99"] == pytest.approx(want["p99"], abs=0.01)
        for q, key in (("0.5", "p50"), ("0.95", "p95")):
            gauge = value(scraped, "stoppress_alert_time_to_inbox_seconds",
                          alert=sent_alert.pk, mailbox=mailbox, quantile=q)
            assert gauge == pytest.approx(want[key], abs=0.01)
        if mailbox != "all":
            # The histogram counted each reader once, in their mailbox provider's series.
            name = "stoppress_time_to_inbox_seconds_count"
            assert value(scraped, name, mailbox=mailbox) - value(before, name, mailbox=mailbox) == len(delays)
    assert value(scraped, "stoppress_webhook_events_total", esp="mailgun", event="delivered",
                 outcome="applied") - value(before, "stoppress_webhook_events_total", esp="mailgun",
                                            event="delivered", outcome="applied") == 15


def test_a_replayed_delivered_event_is_counted_once(client, sent_alert):
    row = Delivery.objects.filter(alert=sent_alert, subscriber__email="reader0@gmail.com").get()
    body = mailgun_body(delivered_event("reader0@gmail.com", row.provider_message_id,
                                        (sent_alert.published_at + timedelta(seconds=5)).timestamp()))
    assert [post_mailgun_event(client, body=body).status_code for _ in range(2)] == [200, 400]
    assert inbox_times([sent_alert.pk])[sent_alert.pk].overall.count == 1


def test_an_event_for_a_digest_or_an_unknown_message_has_no_alert(client, sent_alert):
    make_subscriber("stranger@gmail.com")
    post_mailgun_event(client, delivered_event("stranger@gmail.com", "<nobody@mg>", 0))
    event = TrackingEvent.objects.get(recipient_hmac__isnull=False, message_id__contains="nobody")
    assert event.alert_id is None and event.mailbox == "gmail"
    assert sent_alert.pk not in inbox_times([sent_alert.pk])


def test_the_portable_computation_matches_postgresqls(client, sent_alert, monkeypatch):
    deliver_all(client, sent_alert)
    on_postgresql = inbox_times([sent_alert.pk])[sent_alert.pk]
    monkeypatch.setattr("alerts.observability.time_to_inbox.connection.vendor", "sqlite")
    portable = inbox_times([sent_alert.pk])[sent_alert.pk]
    assert portable == on_postgresql


@pytest.mark.parametrize("address, mailbox", [
    ("a@gmail.com", "gmail"), ("a@GoogleMail.com", "gmail"), ("a@outlook.fr", "microsoft"),
    ("a@live.co.uk", "microsoft"), ("a@yahoo.co.jp", "yahoo"), ("a@aol.com", "yahoo"),
    ("a@me.com", "apple"), ("a@news.example.com", "other"), ("a@gmail.com.evil.example", "other"),
])
def test_addresses_are_grouped_by_mailbox_provider(address, mailbox):
    assert mailbox_of(address) == mailbox


def test_percentile_interpolates_between_closest_ranks():
    assert percentile([1, 2, 3, 4], 0.5) == 2.5
    assert percentile([10], 0.99) == 10


def test_polls_and_scrapes_reuse_the_figures_for_a_while(client, sent_alert, django_assert_num_queries):
    from alerts.observability.time_to_inbox import cached_inbox_times

    deliver_all(client, sent_alert)
    first = cached_inbox_times([sent_alert.pk])
    with django_assert_num_queries(0):
        assert cached_inbox_times([sent_alert.pk]) == first
    assert first[sent_alert.pk].overall.count == 15
