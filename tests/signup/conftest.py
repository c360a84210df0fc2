"""Fixtures of the signup tests: posting the form and the JSON endpoint as a reader
would, the settings of the concurrency and fuzz tests, and a real browser."""

from __future__ import annotations

import json
import logging
import os
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

import alerts.tasks  # noqa: F401  (registers the tasks that views queue by name)
from tests.helpers import API, PHONE, SIGNUP, require_service


@pytest.fixture
def post_signup(django_capture_on_commit_callbacks):
    """POST the form as a reader would, running the after-commit email enqueue."""

    def post(client, email="alice@example.com", **extra):
        with django_capture_on_commit_callbacks(execute=True):
            return client.post(SIGNUP, {"email": email, **extra}, REMOTE_ADDR="203.0.113.9",
                               HTTP_USER_AGENT="Mozilla/5.0 (test)")

    return post


@pytest.fixture
def post_json(client, django_capture_on_commit_callbacks):
    def post(payload, **extra):
        body = payload if isinstance(payload, (bytes, str)) else json.dumps(payload)
        with django_capture_on_commit_callbacks(execute=True):
            return client.post(API, body, content_type="application/json", **extra)

    return post


# --- Settings of the concurrency tests and of the fuzz tests (test_forms.py) ----------


@pytest.fixture
def no_mail(settings):
    # The confirmation task is not what is under test; keep it in-process.
    settings.CELERY_TASK_ALWAYS_EAGER = True


@pytest.fixture
def generous(settings):
    settings.SIGNUP_RATE_PER_IP = "100000/h"
    settings.CELERY_TASK_ALWAYS_EAGER = True


@pytest.fixture
def quiet_bad_requests():
    """Thousands of expected 400s would each log a warning; a 500 still logs an error."""
    logger = logging.getLogger("django.request")
    level = logger.level
    logger.setLevel(logging.ERROR)
    yield
    logger.setLevel(level)


# --- A real browser (test_browser.py) -------------------------------------------------


CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]


@pytest.fixture(scope="module")
def browser():
    require_service(Path(CHROMIUM).exists(), "Chromium at /usr/bin/chromium")
    # Playwright's sync API runs an asyncio loop in this thread, and Django refuses ORM
    # calls from a thread with a running loop; our ORM calls here are plain sync code.
    previous = os.environ.get("DJANGO_ALLOW_ASYNC_UNSAFE")
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    from playwright.sync_api import sync_playwright

    try:
        with sync_playwright() as p:
            chromium = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            yield chromium
            chromium.close()
    finally:
        if previous is None:
            os.environ.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
        else:
            os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = previous


@pytest.fixture
def site(live_server, settings, transactional_db):
    """The live server, sending confirmation mail in-process with links back to it."""
    settings.CELERY_TASK_ALWAYS_EAGER = True
    settings.SITE_URL = live_server.url
    return live_server


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport=PHONE)
    yield context.new_page()
    context.close()


class _HostPage(BaseHTTPRequestHandler):
    """An article page on another site with our signup box embedded."""

    html = b""

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.end_headers()
        self.wfile.write(self.html)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def host_page(site):
    """Serve a page from 127.0.0.1 (another origin than the live server's localhost)
    that embeds /embed/ in an iframe, as the newsroom's article pages would."""
    handler = type("Handler", (_HostPage,), {"html": (
        "<!doctype html><title>An article</title><h1>Storm hits the coast</h1>"
        f'<iframe src="{site.url}/embed/" title="Sign up" width="600" height="420"></iframe>'
    ).encode()})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    server.server_close()
