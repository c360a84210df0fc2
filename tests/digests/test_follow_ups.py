"""Corrections and updates in digests: a reader who took the alert in a digest gets its
follow-up in their next digest, beside the alert when both are in it; nobody else does."""

from __future__ import annotations

from datetime import timedelta

import pytest

from alerts.models import Alert, Subscriber
from tests.factories import make_subscriber, published
from tests.helpers import LONDON_7AM, tick

pytestmark = pytest.mark.django_db


def correction_of(original: Alert, headline: str, at) -> Alert:
    follow_up = published(headline, at)
    Alert.objects.filter(pk=follow_up.pk).update(kind=Alert.Kind.CORRECTION, follow_up_of=original)
    follow_up.refresh_from_db()
    return follow_up


def texts_to(mailgun, email: str) -> list[str]:
    return [call.first("text") for call in mailgun.calls if email in call.recipients]


def test_a_reader_who_took_the_alert_in_a_digest_gets_its_correction_in_the_next(readers, mailgun):
    original = published("Two missiles fired", LONDON_7AM - timedelta(hours=3))
    tick(LONDON_7AM)
    assert "Two missiles fired" in texts_to(mailgun, "london@example.com")[0]
    # Joined two days later: their first digest never held the alert.
    make_subscriber("late@example.com", frequency=Subscriber.Frequency.DAILY, time_zone="Europe/London",
                    confirmed_at=LONDON_7AM + timedelta(days=1, hours=2))
    correction_of(original, "Only one missile was fired", LONDON_7AM + timedelta(days=1, hours=5))
    published("Summit opens", LONDON_7AM + timedelta(days=1, hours=6))
    mailgun.reset()
    tick(LONDON_7AM + timedelta(days=2))
    [london] = texts_to(mailgun, "london@example.com")
    assert "Correction: Only one missile was fired" in london and "Summit opens" in london
    [late] = texts_to(mailgun, "late@example.com")
    assert "Summit opens" in late and "missile" not in late


def test_an_alert_and_its_correction_in_one_digest_sit_together(readers, mailgun):
    original = published("Two missiles fired", LONDON_7AM - timedelta(hours=9))
    published("Summit opens", LONDON_7AM - timedelta(hours=5))
    correction_of(original, "Only one missile was fired", LONDON_7AM - timedelta(hours=2))
    tick(LONDON_7AM)
    [call] = [call for call in mailgun.calls if "london@example.com" in call.recipients]
    text, html = call.first("text"), call.first("html")
    assert text.index("Summit opens") < text.index("Two missiles fired") < text.index(
        "Correction: Only one missile was fired")
    assert "Correction to &ldquo;Two missiles fired&rdquo;" in html or "Correction to “Two missiles fired”" in html
    assert call.first("subject").endswith("3 alerts")


def test_a_follow_up_of_an_alert_the_reader_did_not_take_is_left_out(readers, mailgun, world):
    sport = world.__class__.objects.create(name="Sport", slug="sport")
    Subscriber.objects.get(email="london@example.com").topics.set([sport])
    original = published("Two missiles fired", LONDON_7AM - timedelta(hours=3), world)
    tick(LONDON_7AM)
    correction_of(original, "Only one missile was fired", LONDON_7AM + timedelta(hours=5))
    mailgun.reset()
    tick(LONDON_7AM + timedelta(days=1))
    assert texts_to(mailgun, "london@example.com") == []
