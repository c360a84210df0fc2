"""The interactive docs at /api/v1/docs work under the site's Content-Security-Policy
with nothing fetched from anywhere but our own origin."""

from __future__ import annotations

from urllib.parse import urlsplit

import pytest

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_the_docs_page_lists_every_operation_with_no_policy_violation_and_no_outside_request(
        browser_page, live_server):
    own = urlsplit(live_server.url).netloc
    outside, refused = [], []
    browser_page.on("console", lambda msg: refused.append(msg.text)
                    if "Content Security Policy" in msg.text or msg.type == "error" else None)

    def only_our_origin(route) -> None:
        if urlsplit(route.request.url).netloc in (own, ""):
            route.continue_()
        else:
            outside.append(route.request.url)
            route.abort()

    browser_page.route("**/*", only_our_origin)
    browser_page.goto(f"{live_server.url}/api/v1/docs")
    browser_page.wait_for_selector(".opblock-summary-path", timeout=15000)
    paths = browser_page.locator(".opblock-summary-path").all_inner_texts()
    assert {"/api/v1/alerts", "/api/v1/alerts/{alert_id}/publish", "/api/v1/topics"} <= {
        p.replace("\u200b", "") for p in paths}
    assert "Stop Press publishing API" in browser_page.title()
    assert outside == []
    assert refused == []
