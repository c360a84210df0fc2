"""Digest periods with a controllable clock: each reader's own 07:00, once per period,
and a missed tick caught up."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.core.management import call_command
from django.utils import timezone

from alerts.models import Alert, Batch, DigestRun, Subscriber
from alerts.publishing.services import alert_publish
from tests.factories import make_subscriber, published
from tests.helpers import LONDON_7AM, TOKYO_7AM, digest_recipients, tick

pytestmark = pytest.mark.django_db


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


def test_a_double_tick_or_a_second_beat_sends_once(readers, mailgun):
    published("Missiles fired", LONDON_7AM - timedelta(hours=3))
    tick(LONDON_7AM)
    tick(LONDON_7AM)
    tick(LONDON_7AM + timedelta(minutes=1))
    assert digest_recipients(mailgun).count("london@example.com") == 1


def test_a_missed_tick_is_caught_up_by_the_next_one(readers, mailgun):
    published("Missiles fired", LONDON_7AM - timedelta(hours=3))
    tick(LONDON_7AM + timedelta(hours=3))  # beat was down from 07:00 to 10:00
    assert "london@example.com" in digest_recipients(mailgun)


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
