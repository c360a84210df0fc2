"""The digest runs in the admin."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from alerts.models import DigestRun
from tests.factories import published
from tests.helpers import LONDON_7AM, tick

pytestmark = pytest.mark.django_db


def test_the_admin_lists_digest_runs(admin_client, readers):
    published("Missiles fired", LONDON_7AM - timedelta(hours=3))
    tick(LONDON_7AM)
    page = admin_client.get("/admin/alerts/digestrun/").content.decode()
    assert "daily:2026-11-27" in page and "Europe/London" in page


def test_the_admin_says_when_a_run_failed_over(admin_client, readers):
    published("Missiles fired", LONDON_7AM - timedelta(hours=3))
    tick(LONDON_7AM)
    london = DigestRun.objects.get(time_zone="Europe/London")
    DigestRun.objects.filter(pk=london.pk).update(failover_at=datetime(2026, 11, 27, 7, 0, 6, tzinfo=UTC))
    page = admin_client.get("/admin/alerts/digestrun/").content.decode()
    assert "Failed over" in page and "at 07:00:06 UTC" in page
    detail = admin_client.get(f"/admin/alerts/digestrun/{london.pk}/change/").content.decode()
    assert "Failover at" in detail
