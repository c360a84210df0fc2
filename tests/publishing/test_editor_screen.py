"""The editor's screen: the schedule in the newsroom's time, the headline and
standfirst counters, and a progress page that stops saying "Sending" once sent."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from alerts.models import Alert

pytestmark = pytest.mark.django_db


def test_the_schedule_is_typed_in_the_newsrooms_time_and_says_which(client, publisher, alert, settings):
    settings.PUBLICATION_TIME_ZONE = "Europe/London"
    page = client.get(f"/admin/alerts/alert/{alert.pk}/schedule/").content.decode()
    assert "time, Europe/London (" in page and "there now" in page
    response = client.post(f"/admin/alerts/alert/{alert.pk}/schedule/", {"when": "2031-07-01T06:30"}, follow=True)
    alert.refresh_from_db()
    assert alert.status == Alert.Status.SCHEDULED
    assert alert.scheduled_for == datetime(2031, 7, 1, 5, 30, tzinfo=UTC)  # 06:30 BST
    assert "Scheduled for 1 July 2031, 06:30 BST." in response.content.decode()
    assert "1 July 2031, 06:30 BST" in client.get(f"/admin/alerts/alert/{alert.pk}/change/").content.decode()


def test_another_zone_reads_the_same_digits_as_its_own_time(client, publisher, alert, settings):
    settings.PUBLICATION_TIME_ZONE = "Asia/Tokyo"
    client.post(f"/admin/alerts/alert/{alert.pk}/schedule/", {"when": "2031-07-01T06:30"})
    alert.refresh_from_db()
    assert alert.scheduled_for == datetime(2031, 6, 30, 21, 30, tzinfo=UTC)


def test_a_time_the_clocks_skip_is_refused_with_a_message(client, publisher, alert, settings):
    settings.PUBLICATION_TIME_ZONE = "Europe/London"
    # 30 March 2031: London's clocks go from 01:00 to 02:00.
    response = client.post(f"/admin/alerts/alert/{alert.pk}/schedule/", {"when": "2031-03-30T01:30"})
    assert response.status_code == 200
    assert "may be ambiguous or it may not exist" in response.content.decode()
    alert.refresh_from_db()
    assert alert.status == Alert.Status.DRAFT


def test_the_headline_and_standfirst_carry_counters_from_a_static_script(client, editor, alert):
    page = client.get(f"/admin/alerts/alert/{alert.pk}/change/").content.decode()
    assert 'data-shown="40"' in page and 'data-shown="90"' in page
    assert "stoppress/admin-counters.js" in page
    assert "<script>" not in page.split("admin-counters.js")[0].rsplit("</form>", 1)[-1]


@pytest.mark.parametrize(("status", "title"), [("sent", "Sent"), ("cancelled", "Stopped"), ("failed", "Failed")])
def test_a_sent_alerts_progress_no_longer_says_sending_nor_offers_to_stop(client, publisher, alert, status, title):
    Alert.objects.filter(pk=alert.pk).update(status=status)
    page = client.get(f"/admin/alerts/alert/{alert.pk}/progress/").content.decode()
    assert f">{title}: Missiles fired" in page and ">Sending: " not in page
    assert "Stop sending" not in page


def test_while_sending_the_progress_page_offers_to_stop(client, publisher, alert):
    Alert.objects.filter(pk=alert.pk).update(status="sending")
    page = client.get(f"/admin/alerts/alert/{alert.pk}/progress/").content.decode()
    assert ">Sending: Missiles fired" in page and "Stop sending" in page and "data-while-sending" in page
