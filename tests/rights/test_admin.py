"""Data rights from the admin: staff download or erase a subscriber's data."""

from __future__ import annotations

import json

import pytest

from alerts.models import Subscriber, Suppression
from tests.helpers import EMAIL, tables_containing

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("eager_celery")]


def test_staff_can_download_a_subscribers_data(admin_client, erin, subscriber_actions):
    response = admin_client.post("/admin/alerts/subscriber/",
                                 {"action": "export_subscriber_data", "_selected_action": [erin.pk]})
    assert response["Content-Disposition"].startswith("attachment;")
    [data] = json.loads(response.content)
    assert data["subscription"]["email"] == EMAIL


def test_staff_erase_after_confirming(admin_client, admin_user, erin, subscriber_actions):
    changelist = "/admin/alerts/subscriber/"
    confirm = admin_client.post(changelist, {"action": "erase_subscribers", "_selected_action": [erin.pk]})
    assert "Erase 1 subscriber?" in confirm.content.decode()
    assert Subscriber.objects.filter(pk=erin.pk).exists()

    done = admin_client.post(changelist, {"action": "erase_subscribers", "_selected_action": [erin.pk],
                                          "confirm_erase": "yes"})
    assert done.status_code == 302
    assert not Subscriber.objects.filter(pk=erin.pk).exists()
    assert tables_containing(EMAIL) == []
    suppression = Suppression.objects.get(email_hmac=erin.email_hmac, lifted_at__isnull=True)
    assert suppression.detail == f"Erased by staff user {admin_user.pk}"
