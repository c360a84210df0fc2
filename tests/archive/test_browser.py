"""The archive in a real browser (headless Chromium through Playwright): it renders
under the site's Content-Security-Policy without a single violation."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from alerts.models import Alert
from tests.helpers import PHONE
from tests.signup.conftest import browser  # noqa: F401  (the one Chromium of these tests)

pytestmark = pytest.mark.browser


def test_an_alert_page_and_the_index_render_with_no_csp_violation(live_server, transactional_db, browser,  # noqa: F811
                                                                  tmp_path):
    sent = Alert.objects.create(headline="Missiles fired", standfirst="Two launches", status="sent",
                                published_at=timezone.now() - timedelta(hours=2), url="https://news.example.com/a",
                                body="First paragraph.\n\nSecond paragraph.")
    Alert.objects.create(headline="Only one missile was fired", status="sent", kind="correction",
                         follow_up_of=sent, published_at=timezone.now())
    context = browser.new_context(viewport=PHONE)
    page = context.new_page()
    problems: list[str] = []
    # A CSP violation is reported as a console error; a missing stylesheet as a 404
    # (the browser's own favicon request aside).
    page.on("console", lambda message: problems.append(message.text)
            if message.type == "error" and "404" not in message.text else None)
    page.on("response", lambda response: problems.append(f"{response.status} {response.url}")
            if response.status >= 400 and not response.url.endswith("/favicon.ico") else None)
    page.goto(f"{live_server.url}/alerts/{sent.pk}/")
    page.get_by_role("heading", name="Corrections and updates").wait_for()
    page.screenshot(path=str(tmp_path / "archive-alert.png"), full_page=True)
    page.get_by_role("link", name="Only one missile was fired").click()
    page.get_by_text("This corrects our alert of").wait_for()
    page.goto(f"{live_server.url}/alerts/")
    page.screenshot(path=str(tmp_path / "archive-index.png"), full_page=True)
    assert page.locator(".archive__kind").inner_text().lower() == "correction"
    assert problems == []
    context.close()
