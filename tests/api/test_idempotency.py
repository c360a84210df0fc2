"""Idempotency-Key: a retried write gets the first answer again and acts once; the
same key for another request is refused; keys belong to their token and expire."""

from __future__ import annotations

import threading
import uuid
from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from alerts.api.idempotency import purge_expired
from alerts.api.tokens import token_create
from alerts.models import Alert, IdempotentRequest
from alerts.tasks import purge_idempotency_keys
from tests.api.conftest import ApiClient

ALERTS = "/api/v1/alerts"
STORM = {"headline": "Storm closes bridge", "status": "published"}


@pytest.mark.django_db
def test_a_retried_create_returns_the_first_answer_and_creates_one_alert(cms, django_capture_on_commit_callbacks):
    key = str(uuid.uuid4())
    with django_capture_on_commit_callbacks() as queued:
        first = cms.post(ALERTS, STORM, key=key)
        again = cms.post(ALERTS, STORM, key=key)
    assert first.status_code == again.status_code == 201
    assert again.content == first.content and again["Location"] == first["Location"]
    assert again["Idempotent-Replayed"] == "true" and "Idempotent-Replayed" not in first
    assert Alert.objects.count() == 1
    assert len(queued) == 1  # one fan-out


@pytest.mark.django_db
def test_without_a_key_each_create_is_a_new_alert(cms):
    cms.post(ALERTS, STORM)
    cms.post(ALERTS, STORM)
    assert Alert.objects.count() == 2


@pytest.mark.django_db
def test_a_retried_publish_replays_its_success_instead_of_a_conflict(cms, alert, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks() as queued:
        first = cms.post(f"{ALERTS}/{alert.pk}/publish", key="publish-1")
        again = cms.post(f"{ALERTS}/{alert.pk}/publish", key="publish-1")
    assert first.status_code == again.status_code == 200
    assert len(queued) == 1
    assert cms.post(f"{ALERTS}/{alert.pk}/publish", key="publish-2").status_code == 409


@pytest.mark.django_db
@pytest.mark.parametrize("second", [
    lambda cms, alert: cms.post(ALERTS, {**STORM, "headline": "Another story"}, key="k"),
    lambda cms, alert: cms.post(f"{ALERTS}/{alert.pk}/stop", key="k"),
])
def test_the_same_key_for_a_different_request_is_a_422_problem(cms, alert, second):
    cms.post(ALERTS, STORM, key="k")
    response = second(cms, alert)
    assert response.status_code == 422
    assert response["Content-Type"] == "application/problem+json"
    assert response.json()["type"].endswith("problem/idempotency-key-reused")
    assert Alert.objects.count() == 2  # the fixture's and the first create's


@pytest.mark.django_db
def test_a_failed_request_leaves_its_key_unused(cms, world):
    bad = cms.post(ALERTS, {**STORM, "topics": ["wrold"]}, key="k")
    assert bad.status_code == 422
    fixed = cms.post(ALERTS, {**STORM, "topics": ["world"]}, key="k")
    assert fixed.status_code == 201
    assert Alert.objects.count() == 1


@pytest.mark.django_db
def test_keys_belong_to_their_token(client, cms):
    other = ApiClient(client, token_create(name="Script", scope="draft+publish")[1])
    cms.post(ALERTS, STORM, key="shared")
    assert other.post(ALERTS, STORM, key="shared").status_code == 201
    assert Alert.objects.count() == 2


@pytest.mark.django_db
def test_an_expired_key_acts_again_and_is_purged(cms, settings):
    cms.post(ALERTS, STORM, key="k")
    IdempotentRequest.objects.update(expires_at=timezone.now() - timedelta(seconds=1))
    assert cms.post(ALERTS, STORM, key="k").status_code == 201
    assert Alert.objects.count() == 2
    assert purge_expired() == 0  # the new row is fresh
    IdempotentRequest.objects.update(expires_at=timezone.now() - timedelta(seconds=1))
    assert purge_idempotency_keys() == 1 and not IdempotentRequest.objects.exists()  # the nightly task


@pytest.mark.django_db
@pytest.mark.parametrize("key", ["", "x" * 256, "has space", "naïve"])
def test_a_malformed_key_is_a_422_problem(cms, key):
    if not key:
        assert cms.post(ALERTS, STORM, key=key).status_code == 201  # an empty header is no key
        return
    response = cms.client.post(ALERTS, STORM, content_type="application/json",
                               headers={"Authorization": f"Bearer {cms.token}", "Idempotency-Key": key})
    assert response.status_code == 422
    assert "Idempotency-Key" in [error["field"] for error in response.json()["errors"]]


@pytest.mark.django_db(transaction=True)
def test_concurrent_retries_with_one_key_create_one_alert(publish_token, client):
    """Two requests racing with the same key: the second waits for the first's
    transaction and replays its answer."""
    _, token = publish_token
    answers: list[int] = []
    start = threading.Barrier(4)

    def post() -> None:
        from django.test import Client

        start.wait()
        try:
            answers.append(ApiClient(Client(), token).post(ALERTS, STORM, key="race").status_code)
        finally:
            connection.close()

    threads = [threading.Thread(target=post) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert answers == [201, 201, 201, 201]
    assert Alert.objects.count() == 1
