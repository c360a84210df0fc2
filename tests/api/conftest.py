"""Fixtures of the API tests: a token of each scope and a client that sends one."""

from __future__ import annotations

import pytest

from alerts.api.tokens import token_create
from alerts.models import ApiToken


class ApiClient:
    """Django's test client speaking JSON with a bearer token."""

    def __init__(self, client, token: str | None) -> None:
        self.client, self.token = client, token

    def _headers(self, key: str | None) -> dict:
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        if key:
            headers["Idempotency-Key"] = key
        return headers

    def get(self, path: str):
        return self.client.get(path, headers=self._headers(None))

    def post(self, path: str, data=None, key: str | None = None, raw: str | bytes | None = None):
        body = raw if raw is not None else ("" if data is None else __import__("json").dumps(data))
        return self.client.post(path, body, content_type="application/json", headers=self._headers(key))


@pytest.fixture
def publish_token(db) -> tuple[ApiToken, str]:
    return token_create(name="CMS", scope=ApiToken.Scope.PUBLISH)


@pytest.fixture
def draft_token(db) -> tuple[ApiToken, str]:
    return token_create(name="Newsdesk drafts", scope=ApiToken.Scope.DRAFT)


@pytest.fixture
def cms(client, publish_token) -> ApiClient:
    return ApiClient(client, publish_token[1])


@pytest.fixture
def drafter(client, draft_token) -> ApiClient:
    return ApiClient(client, draft_token[1])
