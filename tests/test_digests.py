"""Digests with a controllable clock: each reader's own 07:00, once per period."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from django.core.management import call_command
from django.utils import timezone

from alerts import sweeper
from alerts.common.tokens import link_tokens
from alerts.digests.schedule import digest_tick
from alerts.digests.send import digest_batch_send
from alerts.models import Alert, Batch, Delivery, DigestRun, Subscriber, Topic
from alerts.publishing.services import alert_publish
from tests.factories import make_subscriber

pytestmark = pytest.mark.django_db

UTC = UTC
# 27 November 2026: Tokyo is UTC+9, London is UTC+0.
TOKYO_7AM = datetime(2026, 11, 26, 22, 0, tzinfo=UTC)
LONDON_7AM = datetime(2026, 11, 27, 7, 0, tzinfo=UTC)


@pytest.fixture(autouse=True)
def _mailgun(mailgun):
    return mailgun


def published(headline: str, at: datetime, *topics: Topic) -> Alert:
    alert = Alert.objects.create(headline=headline, standfirst=f"About {headline}",
                                 url="https://news.example.com/x", status=Alert.Status.SENT, published_at=at)
    alert.topics.set(topics)
    return alert


def tick(at: datetime) -> list[int]:
    """One beat tick at `at`, then every queued batch sent, as workers would."""
    runs = digest_tick(now=at)
    for batch in Batch.objects.filter(digest_run__isnull=False, status=Batch.Status.PENDING):
        digest_batch_send(batch_id=batch.pk)
    return runs


def digest_recipients(mailgun) -> list[str]:
    return [r for call in mailgun.calls for r in call.recipients]


def call_for(mailgun, email: str):
    return [call for call in mailgun.calls if email in call.recipients][-1]


@pytest.fixture
def readers():
    long_ago = timezone.now() - timedelta(days=30)
    tokyo = make_subscriber("tokyo@example.com", frequency=Subscriber.Frequency.DAILY,
                            time_zone="Asia/Tokyo", confirmed_at=long_ago)
    london = make_subscriber("london@example.com", frequency=Subscriber.Frequency.DAILY,
                             time_zone="Europe/London", confirmed_at=long_ago)
    return tokyo, london


def test_each_reader_gets_their_digest_at_their_own_seven_oclock(readers, mailgun):
    published("Missiles fired", TOKYO_7AM - timedelta(hours=3))
    tick(TOKYO_7AM - timedelta(minutes=1))
    assert digest_recipients(mailgun) == []
    tick(TOKYO_7AM + timedelta(seconds=30))
    assert digest_recipients(mailgun) == ["tokyo@example.com"]
    tick(LONDON_7AM - timedelta(minutes=1))
    assert digest_recipients(mailgun) == ["tokyo@example.com"]
    tick(LONDON_7AM + timedelta(seconds=30))
    assert digest_recipients(mailgun) == ["tokyo@example.com", "london@example.com"]


def test_the_digest_lists_new_alerts_newest_first_with_links_and_unsubscribe_headers(readers, mailgun):
    published("Older story", LONDON_7AM - timedelta(hours=10))
    published("Newer <story>", LONDON_7AM - timedelta(hours=2))
    tick(LONDON_7AM)
    call = call_for(mailgun, "london@example.com")
    assert call.recipients == ["london@example.com"]
    assert call.first("subject") == "Your daily breaking news digest from The Daily Courier: 2 alerts"
    html = call.first("html")
    assert html.index("Newer &lt;story&gt;") < html.index("Older story")
    assert "About Older story" in call.first("text")
    assert call.first("h:List-Unsubscribe-Post") == "List-Unsubscribe=One-Click"
    assert call.first("h:List-Unsubscribe") == "<https://news.example.com/u/%recipient.t%/>"
    token = json.loads(call.first("recipient-variables"))["london@example.com"]["t"]
    assert link_tokens.read(token) == readers[1].pk


def test_a_reader_with_nothing_new_gets_no_email(readers, mailgun):
    tick(LONDON_7AM)
    tick(TOKYO_7AM + timedelta(days=1))
    assert mailgun.calls == []
    assert set(Delivery.objects.values_list("status", flat=True)) == {Delivery.Status.SKIPPED}


def test_a_double_tick_or_a_second_beat_sends_once(readers, mailgun):
    published("Missiles fired", LONDON_7AM - timedelta(hours=3))
    tick(LONDON_7AM)
    tick(LONDON_7AM)
    tick(LONDON_7AM + timedelta(minutes=1))
    assert digest_recipients(mailgun).count("london@example.com") == 1


def test_the_next_digest_holds_only_what_came_after_the_last_one(readers, mailgun):
    published("Day one", LONDON_7AM - timedelta(hours=3))
    tick(LONDON_7AM)
    published("Day two", LONDON_7AM + timedelta(hours=5))
    tick(LONDON_7AM + timedelta(days=1))
    second = call_for(mailgun, "london@example.com")
    assert "Day two" in second.first("text") and "Day one" not in second.first("text")


def test_a_missed_tick_is_caught_up_by_the_next_one(readers, mailgun):
    published("Missiles fired", LONDON_7AM - timedelta(hours=3))
    tick(LONDON_7AM + timedelta(hours=3))  # beat was down from 07:00 to 10:00
    assert "london@example.com" in digest_recipients(mailgun)


def test_a_run_killed_mid_send_finishes_once(readers, mailgun):
    published("Missiles fired", LONDON_7AM - timedelta(hours=3))
    digest_tick(now=LONDON_7AM)
    batch = Batch.objects.get(digest_run__time_zone="Europe/London", status=Batch.Status.PENDING)
    # A worker claimed it and died: the lease runs out, the sweeper queues it again.
    Batch.objects.filter(pk=batch.pk).update(status=Batch.Status.SENDING,
                                             lease_expires_at=timezone.now() - timedelta(seconds=1))
    assert sweeper.sweep()["batches"] >= 1
    digest_batch_send(batch_id=batch.pk)
    digest_batch_send(batch_id=batch.pk)
    assert digest_recipients(mailgun).count("london@example.com") == 1
    run = DigestRun.objects.get(time_zone="Europe/London")
    assert run.status == DigestRun.Status.SENT and run.finished_at


def test_topics_filter_the_digest(readers, mailgun):
    world = Topic.objects.create(name="World", slug="world")
    sport = Topic.objects.create(name="Sport", slug="sport")
    readers[1].topics.set([world])
    published("World story", LONDON_7AM - timedelta(hours=3), world)
    published("Sport story", LONDON_7AM - timedelta(hours=2), sport)
    tick(LONDON_7AM)
    text = call_for(mailgun, "london@example.com").first("text")
    assert "World story" in text and "Sport story" not in text


def test_each_alert_reaches_each_reader_once_as_it_happens_or_in_a_digest(mailgun):
    long_ago = timezone.now() - timedelta(days=30)
    make_subscriber("now@example.com", confirmed_at=long_ago)
    make_subscriber("daily@example.com", frequency=Subscriber.Frequency.DAILY,
                    time_zone="Europe/London", confirmed_at=long_ago)
    alert = Alert.objects.create(headline="Breaking")
    alert_publish(alert_id=alert.pk)
    from alerts.publishing import fanout

    fanout.alert_fan_out(alert_id=alert.pk)
    for batch in Batch.objects.filter(alert=alert):
        fanout.batch_send(batch_id=batch.pk)
    Alert.objects.filter(pk=alert.pk).update(published_at=LONDON_7AM - timedelta(hours=1))
    tick(LONDON_7AM)
    assert sorted(digest_recipients(mailgun)) == ["daily@example.com", "now@example.com"]


def test_weekly_digests_go_on_the_configured_day(mailgun, settings):
    settings.DIGEST_WEEKDAY = 4  # Friday 27 November 2026
    make_subscriber("weekly@example.com", frequency=Subscriber.Frequency.WEEKLY,
                    time_zone="Europe/London", confirmed_at=timezone.now() - timedelta(days=30))
    published("This week", LONDON_7AM - timedelta(days=2))
    tick(LONDON_7AM - timedelta(days=1))  # Thursday: last week's run is past its catch-up
    assert mailgun.calls == []
    tick(LONDON_7AM)
    assert digest_recipients(mailgun) == ["weekly@example.com"]
    assert DigestRun.objects.get().period_key == "weekly:2026-W48"


def test_send_digests_command_runs_one_tick(readers, capsys):
    call_command("send_digests", "--at", LONDON_7AM.isoformat())
    assert "daily:2026-11-27" in capsys.readouterr().out


def test_the_admin_lists_digest_runs(admin_client, readers):
    published("Missiles fired", LONDON_7AM - timedelta(hours=3))
    tick(LONDON_7AM)
    page = admin_client.get("/admin/alerts/digestrun/").content.decode()
    assert "daily:2026-11-27" in page and "Europe/London" in page
