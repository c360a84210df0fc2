"""A script that knows only the API's documentation: it reads the topics, creates and
publishes an alert in one call, retries that call as a flaky network would make it,
and follows the alert's progress to the end. Through the real stack: the API served
over HTTP by a live server, a real Celery worker on the Redis broker, PostgreSQL, and
the real anymail Mailgun backend talking to the fake Mailgun."""

from __future__ import annotations

import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
from django.utils import timezone

from alerts.api.tokens import token_create
from alerts.common.addresses import email_hmac
from alerts.models import Alert, Delivery, Subscriber, Topic

pytestmark = [pytest.mark.worker]

READERS = 600  # three batches of 250 (the test worker's batch size)


def seed_readers() -> set[str]:
    world = Topic.objects.create(name="World", slug="world")
    Topic.objects.create(name="Sport", slug="sport")
    an_hour_ago = timezone.now() - timezone.timedelta(hours=1)
    emails = [f"reader{i}@example.com" for i in range(READERS)]
    Subscriber.objects.bulk_create([
        Subscriber(email=email, email_hmac=email_hmac(email), status=Subscriber.Status.CONFIRMED,
                   confirmed_at=an_hour_ago) for email in emails])
    sport_only = Subscriber.objects.create(email="sport@example.com", email_hmac=email_hmac("sport@example.com"),
                                           status=Subscriber.Status.CONFIRMED, confirmed_at=an_hour_ago)
    sport_only.topics.set(Topic.objects.filter(slug="sport"))
    assert world.pk
    return set(emails)


class Script:
    """What a CMS integration does, with nothing but HTTP and the token."""

    def __init__(self, base: str, token: str) -> None:
        self.base, self.session = f"{base}/api/v1", requests.Session()
        self.session.headers["Authorization"] = f"Bearer {token}"

    def topics(self) -> list[str]:
        return [topic["slug"] for topic in self.session.get(f"{self.base}/topics", timeout=10).json()]

    def publish_new(self, key: str, **alert) -> requests.Response:
        return self.session.post(f"{self.base}/alerts", json={**alert, "status": "published"},
                                 headers={"Idempotency-Key": key}, timeout=30)

    def follow(self, location: str, timeout: float = 60) -> list[dict]:
        seen, deadline = [], time.monotonic() + timeout
        while time.monotonic() < deadline:
            alert = self.session.get(f"{self.base.removesuffix('/api/v1')}{location}", timeout=10).json()
            seen.append(alert)
            if alert["done"]:
                return seen
            time.sleep(0.2)
        raise AssertionError(f"still {seen[-1]['status']} after {timeout} s: {seen[-1]['progress']}")


def test_a_script_publishes_with_one_call_retries_it_and_follows_it_to_the_end(
        celery_worker_process, fake_mailgun, live_server):
    expected = seed_readers()
    script = Script(live_server.url, token_create(name="CMS", scope="draft+publish")[1])
    assert "world" in script.topics()
    fake_mailgun.set_delay(0.3)  # slow enough that the retries arrive mid-send

    key = str(uuid.uuid4())
    story = {"headline": "North Korea fires two ballistic missiles", "standfirst": "Hours before the summit",
             "url": "https://news.example.com/nk", "topics": ["world"]}
    first = script.publish_new(key, **story)
    assert first.status_code == 201, first.text
    # The answer was lost on the way, as far as the script knows: it sends the same
    # request again, twice at once.
    with ThreadPoolExecutor(2) as pool:
        retries = list(pool.map(lambda _: script.publish_new(key, **story), range(2)))
    assert [r.status_code for r in retries] == [201, 201]
    assert {r.json()["id"] for r in retries} == {first.json()["id"]}
    assert all(r.headers["Idempotent-Replayed"] == "true" for r in retries)

    seen = script.follow(first.headers["Location"])
    final = seen[-1]
    assert final["status"] == "sent"
    assert final["progress"]["sent"] == READERS and final["progress"]["remaining"] == 0
    assert final["progress"]["audience"] == READERS and final["progress"]["failed"] == 0
    assert any(0 < view["progress"]["sent"] < READERS for view in seen)  # it watched it go

    # A retry after the end still answers with the first answer and sends nothing.
    assert script.publish_new(key, **story).json()["id"] == final["id"]
    time.sleep(1)
    counts = fake_mailgun.recipient_counts()
    assert set(counts) == expected and max(counts.values()) == 1
    assert Alert.objects.count() == 1
    assert Delivery.objects.filter(alert_id=final["id"]).count() == READERS
