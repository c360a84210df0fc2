"""Fixtures of the subscriber tests."""

from __future__ import annotations

import pytest

import alerts.tasks  # noqa: F401  (registers the tasks that views queue by name)
from alerts.common.consent import RequestMeta
from alerts.models import Subscriber, Topic
from alerts.signup.services import consent_request_process, signup_request


@pytest.fixture
def topics():
    return [Topic.objects.create(name="Politics", slug="politics"),
            Topic.objects.create(name="Sport", slug="sport")]


@pytest.fixture
def alice(settings) -> Subscriber:
    """Alice signed up through the form, ticking the marketing box."""
    settings.CELERY_TASK_ALWAYS_EAGER = True
    request_id = signup_request(email="alice@example.com", marketing=True, source="web",
                                meta=RequestMeta(ip="203.0.113.9", user_agent="Mozilla/5.0 (alice)"))
    consent_request_process(request_id=request_id)
    return Subscriber.objects.get(email="alice@example.com")
