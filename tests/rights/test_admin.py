"""Data rights from the admin: staff download or erase a subscriber's data."""

from __future__ import annotations

import json

import pytest

from alerts.models import RightsEvent, Subscriber, Suppression
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


# --- Permissions of their own, and the record of who did what --------------------------


def staff_with(*codenames: str):
    from django.contrib.auth.models import Permission, User

    user = User.objects.create_user("sam", "sam@news.example.com", "pw", is_staff=True)
    user.user_permissions.set(Permission.objects.filter(codename__in=["view_subscriber", *codenames]))
    return user


def test_seeing_subscribers_is_not_exporting_them(client, erin, subscriber_actions):
    client.force_login(staff_with())
    listing = client.get("/admin/alerts/subscriber/").content.decode()
    assert EMAIL in listing  # staff with the view permission see the list
    assert "export_subscriber_data" not in listing
    response = client.post("/admin/alerts/subscriber/",
                           {"action": "export_subscriber_data", "_selected_action": [erin.pk]})
    assert "Content-Disposition" not in response
    assert not RightsEvent.objects.exists()


def test_an_export_needs_its_permission_and_is_recorded_with_who_and_when(client, erin, subscriber_actions):
    staff = staff_with("export_subscriber_data")
    client.force_login(staff)
    response = client.post("/admin/alerts/subscriber/",
                           {"action": "export_subscriber_data", "_selected_action": [erin.pk]})
    assert response["Content-Disposition"].startswith("attachment;")
    event = RightsEvent.objects.get()
    assert (event.kind, event.via, event.subscriber_ref, event.actor, event.actor_name) == \
        ("export", "admin", erin.pk, staff, "sam")
    assert event.at is not None


def test_an_erasure_needs_its_permission_and_is_recorded(client, erin, subscriber_actions):
    client.force_login(staff_with("delete_subscriber"))  # deleting is not erasing
    client.post("/admin/alerts/subscriber/", {"action": "erase_subscribers", "_selected_action": [erin.pk],
                                              "confirm_erase": "yes"})
    assert Subscriber.objects.filter(pk=erin.pk).exists()
    staff_with_erase = staff_with_second("erase_subscriber")
    client.force_login(staff_with_erase)
    client.post("/admin/alerts/subscriber/", {"action": "erase_subscribers", "_selected_action": [erin.pk],
                                              "confirm_erase": "yes"})
    assert not Subscriber.objects.filter(pk=erin.pk).exists()
    event = RightsEvent.objects.get()
    assert (event.kind, event.via, event.actor) == ("erasure", "admin", staff_with_erase)


def staff_with_second(*codenames: str):
    from django.contrib.auth.models import Permission, User

    user = User.objects.create_user("kim", "kim@news.example.com", "pw", is_staff=True)
    user.user_permissions.set(Permission.objects.filter(codename__in=["view_subscriber", *codenames]))
    return user


def test_the_admin_cannot_delete_a_subscriber_around_erasure(admin_client, erin):
    # Deleting used to leave no erased-address suppression, orphaned ledger rows and
    # the address in the admin's log.
    assert admin_client.get(f"/admin/alerts/subscriber/{erin.pk}/delete/").status_code == 403
    assert admin_client.post(f"/admin/alerts/subscriber/{erin.pk}/delete/", {"post": "yes"}).status_code == 403
    listing = admin_client.get("/admin/alerts/subscriber/").content.decode()
    assert "delete_selected" not in listing
    admin_client.post("/admin/alerts/subscriber/", {"action": "delete_selected", "_selected_action": [erin.pk],
                                                    "post": "yes"})
    assert Subscriber.objects.filter(pk=erin.pk).exists()


def test_the_record_of_exports_and_erasures_is_read_only(admin_client, erin, subscriber_actions):
    admin_client.post("/admin/alerts/subscriber/", {"action": "export_subscriber_data", "_selected_action": [erin.pk]})
    event = RightsEvent.objects.get()
    assert admin_client.get("/admin/alerts/rightsevent/").status_code == 200
    assert admin_client.post(f"/admin/alerts/rightsevent/{event.pk}/delete/", {"post": "yes"}).status_code == 403
    assert RightsEvent.objects.filter(pk=event.pk).exists()
