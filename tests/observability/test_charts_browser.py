"""The charts in a real browser (headless Chromium through Playwright, the live server,
the real PostgreSQL): an alert's page while it is sending and after, and the dashboard.
Each chart is screenshotted, and the series Chart.js drew are read back from the page
and compared with the ledger's counts."""

from __future__ import annotations

import base64
import secrets
from datetime import timedelta

import pytest
import requests
from django.contrib.auth.models import Permission, User
from django.core.cache import cache
from django.utils import timezone

from alerts.models import Alert, Delivery, Subscriber, TrackingEvent
from alerts.observability.time_to_inbox import inbox_times
from alerts.publishing.fanout import alert_finish_if_done, batch_send
from tests.factories import make_subscriber
from tests.helpers import PHONE, publish_and_cut, wait_until
from tests.signup.conftest import browser, page  # noqa: F401  (the real browser's fixtures)

from .conftest import BASIC_AUTH, delivered_event, mailgun_body

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

READERS = 12


@pytest.fixture
def desk(site_with_mail, page):  # noqa: F811
    """A staff member logged in to the live admin in the browser."""
    User.objects.create_user("desk", "desk@news.example.com", "pw", is_staff=True).user_permissions.set(
        Permission.objects.filter(codename__in=["view_alert", "change_alert"]))
    page.goto(site_with_mail.url + "/admin/login/")
    page.fill("#id_username", "desk")
    page.fill("#id_password", "pw")
    page.click("input[type=submit]")
    return page


@pytest.fixture
def site_with_mail(live_server, settings, mailgun):
    settings.CELERY_TASK_ALWAYS_EAGER = False
    settings.SITE_URL = live_server.url
    return live_server


def drawn(tab, canvas: str) -> dict:
    """The datasets Chart.js drew on `canvas`: {label: [y values]} (x too, for lines)."""
    return tab.evaluate("""(id) => {
        const chart = Chart.getChart(document.getElementById(id));
        const out = {labels: chart.data.labels || []};
        for (const d of chart.data.datasets) out[d.label] = d.data.map(p => (p && p.y !== undefined) ? p.y : p);
        return out;
    }""", canvas)


def post_event(site, event: dict) -> None:
    auth = "Basic " + base64.b64encode(BASIC_AUTH.encode()).decode()
    response = requests.post(site.url + "/anymail/mailgun/tracking/", data=mailgun_body(event),
                             headers={"Authorization": auth, "Content-Type": "application/json"}, timeout=10)
    assert response.status_code == 200


def engagement_event(kind: str, recipient: str, message_id: str, at: float) -> dict:
    return {"event": kind, "recipient": recipient, "timestamp": at, "id": secrets.token_hex(8),
            "message": {"headers": {"message-id": message_id.strip("<>")}}}


def ledger(alert: Alert) -> dict[str, int]:
    rows = Delivery.objects.filter(alert=alert)
    return {"handed_off": rows.exclude(status=Delivery.Status.FAILED).count(),
            "delivered": rows.filter(status__in=["delivered", "opened", "clicked", "unsubscribed"]).count(),
            "opened": rows.filter(status__in=["opened", "clicked"]).count(),
            "clicked": rows.filter(status="clicked").count()}


def test_an_alerts_charts_follow_the_ledger_while_it_sends_and_after(site_with_mail, desk, alert, settings,
                                                                       tmp_path):
    for i in range(READERS):
        # Confirmed before the alert was published (half an hour ago, below).
        make_subscriber(f"reader{i}@{'gmail.com' if i % 2 else 'outlook.com'}",
                        confirmed_at=timezone.now() - timedelta(hours=1))
    batches = publish_and_cut(alert, batch_size=4, settings=settings)  # 3 batches, none sent yet
    published = timezone.now() - timedelta(minutes=30)
    Alert.objects.filter(pk=alert.pk).update(published_at=published)
    batch_send(batch_id=batches[0].pk)

    desk.goto(f"{site_with_mail.url}/admin/alerts/alert/{alert.pk}/progress/")
    desk.wait_for_function("() => window.Chart && Chart.getChart(document.getElementById('chart-sending'))")
    assert desk.locator("#alert-charts").get_attribute("data-status") == "sending"
    assert drawn(desk, "chart-sending")["Handed off"][-1] == ledger(alert)["handed_off"] == 4

    # While it sends: the next batch leaves and its readers are delivered; the page,
    # left open, redraws from the ledger within a refresh or two.
    batch_send(batch_id=batches[1].pk)
    rows = {row.subscriber.email: row.provider_message_id
            for row in Delivery.objects.filter(alert=alert).select_related("subscriber", "batch")}
    for n, (email, message_id) in enumerate(sorted(rows.items())):
        post_event(site_with_mail, delivered_event(email, message_id, (timezone.now() + timedelta(seconds=n)).timestamp()))
    wait_until(lambda: drawn(desk, "chart-sending")["Delivered"][-1] == ledger(alert)["delivered"] == 8,
               timeout=15, interval=0.5)
    assert drawn(desk, "chart-sending")["Handed off"][-1] == ledger(alert)["handed_off"] == 8
    desk.locator("#chart-sending").screenshot(path=str(tmp_path / "sending-while.png"))
    desk.locator("#chart-engagement").screenshot(path=str(tmp_path / "engagement-while.png"))

    # After: the last batch, every delivery, and opens and clicks over the next hour.
    batch_send(batch_id=batches[2].pk)
    assert alert_finish_if_done(alert_id=alert.pk) or Alert.objects.get(pk=alert.pk).status == Alert.Status.SENT
    rows = {row.subscriber.email: row.provider_message_id
            for row in Delivery.objects.filter(alert=alert).select_related("subscriber", "batch")}
    for n, (email, message_id) in enumerate(sorted(rows.items())[8:]):
        post_event(site_with_mail, delivered_event(email, message_id, (timezone.now() + timedelta(seconds=n)).timestamp()))
    for n, (email, message_id) in enumerate(sorted(rows.items())[:6]):  # opens and clicks, soon after
        post_event(site_with_mail, engagement_event("opened", email, message_id,
                                                    (timezone.now() + timedelta(seconds=20 + n)).timestamp()))
    for email, message_id in sorted(rows.items())[:2]:
        post_event(site_with_mail, engagement_event("clicked", email, message_id,
                                                    (timezone.now() + timedelta(seconds=40)).timestamp()))

    desk.set_viewport_size(PHONE)
    desk.reload()
    desk.wait_for_function("() => window.Chart && Chart.getChart(document.getElementById('chart-engagement'))")
    assert desk.locator("#alert-charts").get_attribute("data-status") == "sent"
    counts = ledger(alert)
    sending, engagement = drawn(desk, "chart-sending"), drawn(desk, "chart-engagement")
    assert sending["Handed off"][-1] == counts["handed_off"] == READERS
    assert sending["Delivered"][-1] == counts["delivered"] == READERS
    assert sum(engagement["Opens"]) == counts["opened"] == 6
    assert sum(engagement["Clicks"]) == counts["clicked"] == 2
    assert engagement["labels"][0] == "0h"
    desk.locator("#chart-sending").screenshot(path=str(tmp_path / "sending-after.png"))
    desk.locator("#chart-engagement").screenshot(path=str(tmp_path / "engagement-after.png"))
    desk.screenshot(path=str(tmp_path / "progress-phone.png"), full_page=True)
    box = desk.locator("#chart-sending").bounding_box()
    assert box["width"] <= PHONE["width"] and box["height"] > 150  # readable on a phone

    # Across alerts and subscribers (figures the progress page's polls cached while the
    # alert was sending are up to 30 s old: start from fresh ones).
    cache.clear()
    desk.goto(f"{site_with_mail.url}/admin/alerts/alert/dashboard/")
    desk.wait_for_function("() => window.Chart && Chart.getChart(document.getElementById('chart-unsubscribes'))")
    recent = drawn(desk, "chart-recent-inbox")
    assert recent["p50 time to inbox (s)"][-1] == pytest.approx(inbox_times([alert.pk])[alert.pk].overall.p50)
    assert drawn(desk, "chart-recent-engagement")["Opened (% of delivered)"][-1] == pytest.approx(50.0)
    confirmed = drawn(desk, "chart-confirmed")["Confirmed readers"]
    assert confirmed[-1] == Subscriber.objects.filter(status=Subscriber.Status.CONFIRMED).count() == READERS
    signups = drawn(desk, "chart-signups")
    assert sum(signups["other"]) == READERS  # made without a source
    for canvas in ("chart-recent-inbox", "chart-recent-engagement", "chart-confirmed", "chart-signups",
                   "chart-unsubscribes"):
        desk.locator(f"#{canvas}").screenshot(path=str(tmp_path / f"{canvas}.png"))
    desk.screenshot(path=str(tmp_path / "dashboard-phone.png"), full_page=True)
    assert TrackingEvent.objects.filter(alert=alert).count() == READERS + 8
