"""Who an alert goes to."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from alerts.common.addresses import email_hmac
from alerts.models import Subscriber, Suppression, Topic
from alerts.publishing.audience import audience
from tests.factories import make_subscriber

pytestmark = pytest.mark.django_db


def test_the_audience_is_confirmed_unsuppressed_immediate_subscribers_of_the_topic(alert, world):
    sport = Topic.objects.create(name="Sport", slug="sport")
    alert.topics.set([world])
    everyone = make_subscriber("all-topics@example.com")
    follower = make_subscriber("world@example.com")
    follower.topics.set([world])
    other = make_subscriber("sport@example.com")
    other.topics.set([sport])
    make_subscriber("pending@example.com", status=Subscriber.Status.PENDING)
    make_subscriber("gone@example.com", status=Subscriber.Status.UNSUBSCRIBED)
    make_subscriber("digest@example.com", frequency=Subscriber.Frequency.DAILY)
    make_subscriber("bounced@example.com")
    Suppression.objects.create(email_hmac=email_hmac("bounced@example.com"), reason="bounced")
    alert.published_at = timezone.now()
    assert set(audience(alert)) == {everyone, follower}


def test_subscribers_confirmed_after_publication_are_not_in_its_audience(alert):
    make_subscriber("early@example.com")
    alert.published_at = timezone.now()
    make_subscriber("late@example.com", confirmed_at=timezone.now() + timedelta(seconds=1))
    assert [s.email for s in audience(alert)] == ["early@example.com"]
