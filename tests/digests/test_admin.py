"""The digest runs in the admin."""

from __future__ import annotations

from datetime import timedelta

import pytest

from tests.factories import published
from tests.helpers import LONDON_7AM, tick

pytestmark = pytest.mark.django_db


def test_the_admin_lists_digest_runs(admin_client, readers):
    published("Missiles fired", LONDON_7AM - timedelta(hours=3))
    tick(LONDON_7AM)
    page = admin_client.get("/admin/alerts/digestrun/").content.decode()
    assert "daily:2026-11-27" in page and "Europe/London" in page
