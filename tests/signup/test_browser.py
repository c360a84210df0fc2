"""The signup box in a real browser: headless Chromium driven through Playwright,
against the live Django server with the real PostgreSQL and Redis."""

from __future__ import annotations

import pytest

from alerts.models import Subscriber
from tests.helpers import PHONE, link_in

pytestmark = pytest.mark.browser

DESKTOP = {"width": 1280, "height": 800}
INVALID = "Please enter a valid email address"
THANKS = "Thanks for signing up to the breaking news emails"


def posts_to(page, origin: str) -> list[str]:
    """Record every POST the page sends to `origin`."""
    seen: list[str] = []
    page.on("request", lambda r: seen.append(r.url) if r.method == "POST" and r.url.startswith(origin) else None)
    return seen


@pytest.mark.parametrize("viewport", [PHONE, DESKTOP], ids=["phone", "desktop"])
def test_a_reader_corrects_a_typo_signs_up_and_confirms(site, page, viewport, mailoutbox, tmp_path):
    page.set_viewport_size(viewport)
    posts = posts_to(page, site.url)
    page.goto(site.url + "/")
    page.screenshot(path=str(tmp_path / f"signup-{viewport['width']}.png"), full_page=True)

    email = page.get_by_label("Email address")
    email.fill("alice@")
    page.get_by_role("button", name="SIGN UP").click()
    error = page.locator("#email-error")
    assert error.is_visible()
    assert error.inner_text() == INVALID
    assert email.get_attribute("aria-invalid") == "true"
    assert email.input_value() == "alice@"
    page.screenshot(path=str(tmp_path / f"signup-error-{viewport['width']}.png"), full_page=True)
    assert posts == []
    assert not Subscriber.objects.exists()

    email.fill("alice@example.com")
    assert error.is_hidden()  # the message goes as soon as the address is fixed
    page.get_by_role("button", name="SIGN UP").click()
    page.get_by_text(THANKS).wait_for()
    page.screenshot(path=str(tmp_path / f"signup-thanks-{viewport['width']}.png"), full_page=True)

    assert [m.to for m in mailoutbox] == [["alice@example.com"]]
    page.goto(link_in(mailoutbox[0].body, "/confirm/"))
    assert Subscriber.objects.get().status == Subscriber.Status.PENDING  # opening is not confirming
    page.get_by_role("button", name="Confirm").click()
    page.get_by_role("heading", name="You're subscribed").wait_for()
    assert Subscriber.objects.get(email="alice@example.com").status == Subscriber.Status.CONFIRMED


def test_the_server_says_the_same_when_javascript_is_off(site, browser):
    context = browser.new_context(viewport=PHONE, java_script_enabled=False)
    page = context.new_page()
    page.goto(site.url + "/")
    page.get_by_label("Email address").fill("alice@")
    page.get_by_role("button", name="SIGN UP").click()
    assert page.locator("#email-error").inner_text() == INVALID
    assert page.get_by_label("Email address").input_value() == "alice@"
    assert not Subscriber.objects.exists()
    context.close()


def test_the_keyboard_reaches_the_address_the_checkbox_and_the_button_in_order(site, page):
    page.goto(site.url + "/")
    order = []
    for _ in range(6):
        page.keyboard.press("Tab")
        order.append(page.evaluate("document.activeElement.id || document.activeElement.textContent.trim()"))
    start = order.index("id_email")
    assert order[start:start + 3] == ["id_email", "id_marketing", "SIGN UP"]
    assert not page.get_by_label("I would like to be emailed about offers").is_checked()


def test_signing_up_by_keyboard_alone_works(site, page, mailoutbox):
    page.goto(site.url + "/")
    page.get_by_label("Email address").focus()
    page.keyboard.type("bob@example.com")
    page.keyboard.press("Enter")
    page.get_by_text(THANKS).wait_for()
    assert page.evaluate("document.activeElement.id") == "signup-thanks"  # read out at once
    assert Subscriber.objects.get().email == "bob@example.com"
    assert Subscriber.objects.get().marketing_consent is False
    assert len(mailoutbox) == 1


def test_a_mistyped_domain_offers_a_one_click_fix(site, page):
    page.goto(site.url + "/")
    page.get_by_label("Email address").fill("carol@gmial.com")
    page.get_by_label("Email address").blur()
    page.get_by_role("button", name="carol@gmail.com").click()
    assert page.get_by_label("Email address").input_value() == "carol@gmail.com"


def test_a_reader_signs_up_inside_the_embed_on_another_site(site, host_page, page, settings, mailoutbox):
    settings.EMBED_FRAME_ANCESTORS = [host_page]
    page.goto(host_page + "/article")
    frame = page.frame_locator("iframe")
    frame.get_by_label("Email address").fill("dave@example.com")
    frame.get_by_role("button", name="SIGN UP").click()
    frame.get_by_text(THANKS).wait_for()
    subscriber = Subscriber.objects.get()
    assert subscriber.email == "dave@example.com"
    assert subscriber.consent_events.get().source == "embed"
    assert [m.to for m in mailoutbox] == [["dave@example.com"]]


def test_a_site_not_on_the_list_cannot_frame_the_form(site, host_page, page, settings):
    settings.EMBED_FRAME_ANCESTORS = ["https://www.example-news.com"]
    page.goto(host_page + "/article")
    page.wait_for_load_state("load")
    frame = next(f for f in page.frames if f != page.main_frame)
    # The refused frame's navigation to Chromium's error page can land just after the
    # host page's load event: wait for it (up to 10 s) rather than racing it.
    for _ in range(200):
        if frame.url.startswith("chrome-error://"):
            break
        page.wait_for_timeout(50)
    assert frame.url.startswith("chrome-error://")  # Chromium refused to show it
    assert frame.locator("#id_email").count() == 0
