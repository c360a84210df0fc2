"""schemathesis runs the published OpenAPI document against the API through Django's
WSGI application: for every operation it generates valid and invalid requests (bodies,
path parameters, headers) and checks that none gets a 500 and that every answer,
errors included, is what the schema says (status, content type, headers, body).
Offline: the schema is read from the app itself, nothing is fetched."""

from __future__ import annotations

import pytest
import schemathesis
from django.core.wsgi import get_wsgi_application
from hypothesis import HealthCheck, settings
from schemathesis.specs.openapi.checks import positive_data_acceptance

from alerts.api.tokens import token_create
from alerts.models import ApiToken, Topic

EXAMPLES = 40  # per operation and mode: about 500 requests in all, in well under a minute


# Read from the app when the tests are collected (the schema needs no database).
schema = schemathesis.openapi.from_wsgi("/api/v1/openapi.json", get_wsgi_application())


@pytest.fixture
def token(transactional_db, eager_celery, settings) -> str:
    # Transactional: the WSGI handler closes the database connection after each request,
    # as it does in production, which would end a test wrapped in one transaction.
    settings.API_RATE_PER_TOKEN = settings.API_AUTH_FAILURES_PER_IP = "100000/m"  # limits: test_tokens.py
    Topic.objects.create(name="World", slug="world")
    return token_create(name="schemathesis", scope=ApiToken.Scope.PUBLISH)[1]


@schema.parametrize()
@settings(max_examples=EXAMPLES, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                 HealthCheck.filter_too_much])
def test_the_api_keeps_to_its_schema_and_never_answers_500(case, token):
    # Every check but one: a request of the right shape may still break a rule no schema
    # can state (an embargo time already past, a topic slug that names no topic), and is
    # then refused with a 422 problem, which the other checks hold to the schema.
    case.call_and_validate(headers={"Authorization": f"Bearer {token}"},
                           excluded_checks=[positive_data_acceptance])
