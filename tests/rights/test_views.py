"""The privacy notice page."""

from __future__ import annotations

import pytest
from django.urls import reverse

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("eager_celery")]


def test_the_privacy_notice_page_shows_the_configured_text(client, settings):
    settings.PRIVACY_NOTICE_TEXT = "We keep your address safe."
    page = client.get(reverse("alerts:privacy")).content.decode()
    assert "We keep your address safe." in page
