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


# --- A real browser, for the docs page (test_docs_browser.py) -----------------------

CHROMIUM = "/usr/bin/chromium"


@pytest.fixture
def browser_page():
    from pathlib import Path

    from tests.helpers import require_service

    require_service(Path(CHROMIUM).exists(), "Chromium at /usr/bin/chromium")
    import os

    previous = os.environ.get("DJANGO_ALLOW_ASYNC_UNSAFE")
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"  # Playwright's loop runs in this thread
    from playwright.sync_api import sync_playwright

    try:
        with sync_playwright() as p:
            chromium = p.chromium.launch(executable_path=CHROMIUM, args=[
                "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--no-first-run"])
            context = chromium.new_context()
            yield context.new_page()
            context.close()
            chromium.close()
    finally:
        if previous is None:
            os.environ.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
