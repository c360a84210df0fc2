"""The shared send-rate bucket in Redis: reservations queue behind each other at the
account's rate, and a 429 despite it halves the rate."""

from __future__ import annotations

import uuid

import pytest

from alerts.sending import throttle


@pytest.fixture
def key():
    return f"stoppress:test-send-rate:{uuid.uuid4().hex}"


def test_reservations_beyond_a_seconds_burst_wait_their_turn(key):
    # 100 a second: a second's burst at once, then each 50 is due half a second later.
    waits = [throttle.wait_for(key, 100, 50) for _ in range(4)]
    assert waits[0] == 0 and waits[1] == 0
    assert 0.35 < waits[2] < 0.55 and 0.35 < waits[3] < 0.55


def test_a_429_despite_the_limit_halves_the_rate(key):
    throttle.wait_for(key, 100, 100)  # the burst spent
    throttle.slow_down(key)
    assert 0.35 < throttle.wait_for(key, 100, 20) < 0.45  # 20 at 50 a second


def test_the_setting_takes_one_rate_or_one_per_provider(settings):
    settings.EMAIL_SEND_RATE = 300.0
    assert throttle.rate_for("Mailgun") == throttle.rate_for(None) == 300
    settings.EMAIL_SEND_RATE = {"mailgun": 500.0, "smtp": 3000.0}
    assert throttle.rate_for("Mailgun") == 500 and throttle.rate_for(None) == 3000
    assert throttle.rate_for("SendGrid") == 0
