"""Fixtures of the digest tests: every test sends through the fake Mailgun, and most
to two daily readers, one in Tokyo and one in London."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from alerts.models import Subscriber
from tests.factories import make_subscriber


@pytest.fixture(autouse=True)
def _mailgun(mailgun):
    return mailgun


@pytest.fixture
def readers():
    long_ago = timezone.now() - timedelta(days=30)
    tokyo = make_subscriber("tokyo@example.com", frequency=Subscriber.Frequency.DAILY,
                            time_zone="Asia/Tokyo", confirmed_at=long_ago)
    london = make_subscriber("london@example.com", frequency=Subscriber.Frequency.DAILY,
                             time_zone="Europe/London", confirmed_at=long_ago)
    return tokyo, london
