"""Error reporting (Sentry only with a DSN, and never an address in a report) and the
liveness and readiness endpoints."""

from __future__ import annotations

import subprocess
import sys

import pytest

from config.sentry import init_sentry, scrub_event
from tests.helpers import ROOT


def test_the_scrubber_replaces_every_address_in_an_event():
    event = {
        "message": "Could not send to alice@example.com",
        "exception": {"values": [{"type": "ValueError", "value": "bad <bob.smith+news@mail.example.org>",
                                  "stacktrace": {"frames": [{"vars": {"email": "carol@example.net",
                                                                      "ids": [1, 2], "n": 3}}]}}]},
        "breadcrumbs": {"values": [{"message": "SELECT … WHERE email = 'dave@example.com'"}]},
        "request": {"data": {"email": "erin@example.com"}, "query_string": "email=frank%40example.com"},
        "extra": {("tuple", "eve@example.com"): "kept"},
    }
    scrubbed = repr(scrub_event(event, {}))
    for address in ("frank%40example.com", "alice@example.com", "bob.smith+news@mail.example.org", "carol@example.net",
                    "dave@example.com", "erin@example.com", "eve@example.com"):
        assert address not in scrubbed
    assert scrubbed.count("[address]") == 7
    assert "'ids': [1, 2]" in scrubbed and "'n': 3" in scrubbed  # the rest is kept
    assert "email=[address]" in scrubbed


def test_without_a_dsn_nothing_is_started():
    import sentry_sdk

    assert init_sentry(dsn="") is False
    assert not sentry_sdk.get_client().is_active()


def test_with_a_dsn_the_sdk_starts_without_personal_data_and_with_the_scrubber():
    # In a process of its own: the SDK hooks Django and Celery for the process's life.
    code = (
        "import django, sentry_sdk; django.setup(); c = sentry_sdk.get_client(); "
        "print(c.is_active(), c.options['send_default_pii'], c.options['before_send'].__name__, "
        "sorted(i for i in c.integrations if i in ('django', 'celery')))"
    )
    env = {"DJANGO_SETTINGS_MODULE": "config.test_settings", "SENTRY_DSN": "https://public@127.0.0.1:9/1",
           "PATH": "/usr/bin:/bin"}
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=60)
    assert out.stdout.split("\n")[0] == "True False scrub_event ['celery', 'django']", out.stderr[-2000:]


@pytest.mark.django_db
def test_liveness_answers_without_touching_the_database(client, django_assert_num_queries):
    with django_assert_num_queries(0):
        response = client.get("/healthz/live")
    assert response.status_code == 200 and response.json() == {"status": "ok"}


@pytest.mark.django_db
def test_readiness_is_503_naming_the_broker_when_it_is_unreachable(client, settings):
    assert client.get("/healthz/ready").json() == {"status": "ok", "database": "ok", "broker": "ok"}
    settings.CELERY_BROKER_URL = "redis://127.0.0.1:1/0"
    response = client.get("/healthz/ready")
    assert response.status_code == 503
    assert response.json() == {"status": "error", "database": "ok", "broker": "unreachable"}
    assert client.get("/healthz/").status_code == 503  # the old URL still answers alike
