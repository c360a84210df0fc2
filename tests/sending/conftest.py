"""Fixtures of the sending tests."""

from __future__ import annotations

import pytest


@pytest.fixture
def mailgun_settings(settings):
    settings.ANYMAIL = {**settings.ANYMAIL, "MAILGUN_API_KEY": "key", "MAILGUN_SENDER_DOMAIN": "mg.example.com"}
