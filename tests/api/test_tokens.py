"""API tokens: made in the admin and shown once, kept as a hash, scoped, revocable,
marked when used, and rate-limited one by one."""

from __future__ import annotations

import hashlib
import re
from datetime import timedelta

import pytest
from django.utils import timezone

from alerts.api.tokens import token_create, token_revoke
from alerts.models import Alert, ApiToken
from tests.api.conftest import ApiClient

pytestmark = pytest.mark.django_db

ALERTS = "/api/v1/alerts"


def test_the_admin_shows_a_new_token_once_and_keeps_only_its_hash(admin_client):
    response = admin_client.post("/admin/alerts/apitoken/add/", {"name": "CMS", "scope": "draft+publish"})
    assert response.status_code == 200
    assert "no-store" in response["Cache-Control"]
    token = re.search(r'<code id="api-token">(sp_[^<]+)</code>', response.content.decode()).group(1)
    row = ApiToken.objects.get()
    assert row.name == "CMS" and row.can_publish and row.created_by.username == "admin"
    assert row.secret_hash == hashlib.sha256(token.encode()).hexdigest()
    assert token.startswith(f"sp_{row.prefix}_") and len(token) > 50
    listing = admin_client.get("/admin/alerts/apitoken/").content.decode()
    assert row.prefix in listing and token not in listing
    assert token not in admin_client.get(f"/admin/alerts/apitoken/{row.pk}/change/").content.decode()


def test_the_admin_revokes_tokens_and_cannot_delete_them(admin_client, publish_token):
    row, token = publish_token
    response = admin_client.post("/admin/alerts/apitoken/", {"action": "revoke", "_selected_action": [row.pk]})
    assert response.status_code == 302
    row.refresh_from_db()
    assert row.revoked_at is not None
    assert admin_client.get(f"/admin/alerts/apitoken/{row.pk}/delete/").status_code == 403


@pytest.mark.parametrize("header", [None, "Bearer", "Bearer nonsense", "Basic dXNlcjpwdw==",
                                    "Bearer sp_000000000000_wrong", "Bearer sp__x", "Bearer sp_" + "a" * 300 + "_x"])
def test_a_missing_or_wrong_token_is_a_401_problem(client, publish_token, header):
    headers = {"Authorization": header} if header else {}
    response = client.get("/api/v1/topics", headers=headers)
    assert response.status_code == 401
    assert response["Content-Type"] == "application/problem+json"
    assert response["WWW-Authenticate"].startswith("Bearer")


def test_a_token_with_a_right_prefix_and_a_wrong_secret_is_refused(client, publish_token):
    row, token = publish_token
    forged = f"sp_{row.prefix}_{'A' * 43}"
    assert ApiClient(client, forged).get("/api/v1/topics").status_code == 401


def test_a_revoked_token_is_refused_at_once(client, publish_token):
    row, token = publish_token
    cms = ApiClient(client, token)
    assert cms.get("/api/v1/topics").status_code == 200
    assert token_revoke(token_ids=[row.pk]) == 1
    assert cms.get("/api/v1/topics").status_code == 401
    assert cms.post(ALERTS, {"headline": "Storm"}).status_code == 401
    assert not Alert.objects.exists()


def test_a_draft_token_writes_drafts_but_cannot_publish_schedule_or_stop(drafter, alert, django_capture_on_commit_callbacks):
    assert drafter.post(ALERTS, {"headline": "Storm"}).status_code == 201
    when = (timezone.now() + timedelta(hours=1)).isoformat()
    with django_capture_on_commit_callbacks() as queued:
        refused = [
            drafter.post(ALERTS, {"headline": "Storm", "status": "published"}),
            drafter.post(ALERTS, {"headline": "Storm", "status": "scheduled", "scheduled_for": when}),
            drafter.post(f"{ALERTS}/{alert.pk}/publish"),
            drafter.post(f"{ALERTS}/{alert.pk}/schedule", {"scheduled_for": when}),
            drafter.post(f"{ALERTS}/{alert.pk}/stop"),
        ]
    for response in refused:
        assert response.status_code == 403
        assert response.json()["type"].endswith("problem/scope")
    assert queued == []
    assert Alert.objects.filter(status=Alert.Status.DRAFT).count() == 2
    assert drafter.get(f"{ALERTS}/{alert.pk}").status_code == 200


def test_using_a_token_records_when_at_most_once_a_minute(cms, publish_token):
    row, _ = publish_token
    assert row.last_used_at is None
    cms.get("/api/v1/topics")
    row.refresh_from_db()
    first = row.last_used_at
    assert first is not None
    cms.get("/api/v1/topics")
    row.refresh_from_db()
    assert row.last_used_at == first
    ApiToken.objects.filter(pk=row.pk).update(last_used_at=first - timedelta(minutes=2))
    cms.get("/api/v1/topics")
    row.refresh_from_db()
    assert row.last_used_at > first


def test_each_token_has_its_own_rate_limit_answered_429_with_retry_after(client, settings):
    settings.API_RATE_PER_TOKEN = "3/m"
    busy = ApiClient(client, token_create(name="Busy script", scope="draft")[1])
    other = ApiClient(client, token_create(name="CMS", scope="draft")[1])
    assert [busy.get("/api/v1/topics").status_code for _ in range(3)] == [200, 200, 200]
    limited = busy.get("/api/v1/topics")
    assert limited.status_code == 429
    assert limited["Content-Type"] == "application/problem+json"
    assert 1 <= int(limited["Retry-After"]) <= 60
    assert busy.post(ALERTS, {"headline": "Storm"}).status_code == 429
    assert not Alert.objects.exists()
    assert other.get("/api/v1/topics").status_code == 200


def test_a_client_sending_wrong_tokens_is_held_back_but_a_valid_token_from_there_is_not(client, cms, settings):
    settings.API_AUTH_FAILURES_PER_IP = "3/m"
    guesser = ApiClient(client, "sp_000000000000_guess")
    assert [guesser.get("/api/v1/topics").status_code for _ in range(4)] == [401, 401, 401, 429]
    assert guesser.get("/api/v1/topics")["Retry-After"]
    assert cms.get("/api/v1/topics").status_code == 200  # same address, valid token
