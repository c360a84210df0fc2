"""The editor's screen in a real browser: headless Chromium driven through Playwright,
against the live Django server with the real PostgreSQL and Redis."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.contrib.auth.models import User
from django.utils import timezone

from alerts.models import Alert, Delivery
from tests.factories import make_subscriber
from tests.helpers import publish_and_cut, send_all
from tests.signup.conftest import browser  # noqa: F401  (the one Chromium of these tests)

pytestmark = pytest.mark.browser

DESKTOP = {"width": 1280, "height": 900}


@pytest.fixture
def site(live_server, settings, transactional_db, mailgun):
    """The live server, sending in-process (eager tasks) through the fake Mailgun."""
    settings.CELERY_TASK_ALWAYS_EAGER = True
    settings.SITE_URL = live_server.url
    return live_server


@pytest.fixture
def admin_page(site, browser):  # noqa: F811
    User.objects.create_superuser("chief", "chief@news.example.com", "a long passphrase")
    context = browser.new_context(viewport=DESKTOP)
    page = context.new_page()
    page.goto(site.url + "/admin/login/")
    page.get_by_label("Username").fill("chief")
    page.get_by_label("Password").fill("a long passphrase")
    page.get_by_role("button", name="Log in").click()
    page.get_by_text("Site administration").wait_for()
    yield page
    context.close()


def test_an_editor_sends_a_correction_from_the_admin_to_the_readers_who_got_the_alert(
        site, admin_page, alert, mailgun, settings, tmp_path):
    for name in ("ann", "bob", "cat"):
        make_subscriber(f"{name}@example.com", confirmed_at=timezone.now() - timedelta(hours=1))
    send_all(publish_and_cut(alert, batch_size=2, settings=settings))
    Alert.objects.filter(pk=alert.pk).update(status=Alert.Status.SENT)
    make_subscriber("newcomer@example.com")  # joined since: must not get the correction
    original_ids = {call.recipients[0]: call.message_id for call in mailgun.calls}
    mailgun.reset()

    page = admin_page
    page.goto(f"{site.url}/admin/alerts/alert/{alert.pk}/change/")
    page.get_by_role("link", name="Send a correction").click()
    page.get_by_text("to the 3 readers who received the alert").wait_for()
    assert page.get_by_label("Headline").input_value() == alert.headline  # prefilled
    page.get_by_label("Headline").fill("Only one missile was fired")
    page.get_by_label("Standfirst").fill("We said two earlier")
    page.screenshot(path=str(tmp_path / "correction-form.png"), full_page=True)
    page.get_by_role("button", name="Send the correction to 3 readers").click()
    page.wait_for_url("**/progress/")
    page.screenshot(path=str(tmp_path / "correction-progress.png"), full_page=True)

    follow_up = Alert.objects.get(follow_up_of=alert)
    assert follow_up.kind == Alert.Kind.CORRECTION and follow_up.status == Alert.Status.SENT
    received = sorted(r for call in mailgun.calls for r in call.recipients)
    assert received == ["ann@example.com", "bob@example.com", "cat@example.com"]
    for call in mailgun.calls:
        assert call.first("subject") == "Correction: Only one missile was fired"
        assert call.custom_headers["In-Reply-To"] == original_ids[call.recipients[0]]
    assert Delivery.objects.filter(alert=follow_up, status="sent").count() == 3


def test_the_counters_show_where_a_phone_cuts_the_headline(site, admin_page, alert, tmp_path):
    page = admin_page
    page.goto(f"{site.url}/admin/alerts/alert/{alert.pk}/change/")
    headline = page.get_by_label("Headline")
    headline.fill("Short")
    counter = page.locator(".field-headline .sp-counter")
    assert "5 characters" in counter.inner_text() and "readers see it all" in counter.inner_text()
    assert page.locator(".field-headline .sp-counter__cut").is_hidden()
    headline.fill("North Korea fires two ballistic missiles hours before the summit")
    assert "readers see up to the" in counter.inner_text()
    assert page.locator(".field-headline .sp-counter__cut").is_visible()
    page.screenshot(path=str(tmp_path / "counters.png"))
    assert page.locator(".field-headline .sp-counter__hidden").inner_text() == " hours before the summit"


def test_the_progress_page_stops_saying_sending_once_the_alert_is_sent(site, admin_page, alert):
    Alert.objects.filter(pk=alert.pk).update(status=Alert.Status.SENDING, published_at=timezone.now())
    page = admin_page
    page.goto(f"{site.url}/admin/alerts/alert/{alert.pk}/progress/")
    assert page.locator("#progress-title").inner_text().startswith("Sending: ")
    stop = page.get_by_role("button", name="Stop sending")
    assert stop.is_visible()
    Alert.objects.filter(pk=alert.pk).update(status=Alert.Status.SENT)
    page.locator("#progress-title", has_text="Sent: ").wait_for()
    assert stop.is_hidden()
