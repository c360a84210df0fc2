"""The public archive: a page per sent alert with its corrections and updates, the
index newest first, RSS and Atom feeds listing exactly the sent alerts, the "View in
your browser" link, and PUBLIC_ARCHIVE turning it all off."""

from __future__ import annotations

from datetime import timedelta

import feedparser
import pytest
from django.utils import timezone

from alerts.emails import alert_rendering, digest_rendering
from alerts.models import Alert

pytestmark = pytest.mark.django_db

NOW = timezone.now()


def make(headline: str, status: str = Alert.Status.SENT, hours_ago: float = 1, **fields) -> Alert:
    published = NOW - timedelta(hours=hours_ago) if status in ("sending", "sent", "cancelled", "failed") else None
    return Alert.objects.create(headline=headline, standfirst=f"About {headline}", status=status,
                                published_at=published, url="https://news.example.com/x", **fields)


@pytest.fixture
def alerts():
    sent = make("Missiles fired", hours_ago=5)
    sending = make("Storm reaches coast", status=Alert.Status.SENDING, hours_ago=0.1)
    correction = make("Only one missile was fired", hours_ago=2, kind=Alert.Kind.CORRECTION, follow_up_of=sent)
    make("A draft nobody may see", status=Alert.Status.DRAFT)
    make("Scheduled for later", status=Alert.Status.SCHEDULED)
    make("Stopped after a mistake", status=Alert.Status.CANCELLED, hours_ago=3)
    make("Failed to send", status=Alert.Status.FAILED, hours_ago=4)
    return sending, correction, sent


def test_the_feeds_list_exactly_the_sent_alerts_newest_first(client, alerts, settings):
    for url in ("/alerts/feed/rss/", "/alerts/feed/atom/"):
        response = client.get(url)
        assert response.status_code == 200
        feed = feedparser.parse(response.content)
        assert not feed.bozo, feed.bozo_exception
        assert [entry.title for entry in feed.entries] == [
            "Storm reaches coast", "Correction: Only one missile was fired", "Missiles fired"]
        assert [entry.link for entry in feed.entries] == [
            f"{settings.SITE_URL}/alerts/{alert.pk}/" for alert in alerts]
        assert feed.entries[2].summary == "About Missiles fired"
        assert "public" in response["Cache-Control"] and "max-age=60" in response["Cache-Control"]
    assert feedparser.parse(client.get("/alerts/feed/atom/").content).version == "atom10"
    assert feedparser.parse(client.get("/alerts/feed/rss/").content).version == "rss20"


def test_the_index_lists_sent_alerts_newest_first_and_pages(client, alerts, settings):
    page = client.get("/alerts/").content.decode()
    assert page.index("Storm reaches coast") < page.index("Only one missile") < page.index("Missiles fired")
    for hidden in ("A draft", "Scheduled", "Stopped", "Failed"):
        assert hidden not in page
    assert 'type="application/atom+xml"' in page
    for i in range(25):
        make(f"Filler {i}", hours_ago=10 + i)
    second = client.get("/alerts/?page=2").content.decode()
    assert "Filler 24" in second and "Storm reaches coast" not in second and "Page 2 of 2" in second
    assert client.get("/alerts/?page=x").status_code == 200  # a bad page number is the first page
    assert client.get("/alerts/?page=99").status_code == 200


def test_an_alert_page_shows_its_corrections_and_a_correction_names_its_original(client, alerts):
    _, correction, sent = alerts
    page = client.get(f"/alerts/{sent.pk}/").content.decode()
    assert "Missiles fired" in page and "Corrections and updates" in page
    assert f'href="/alerts/{correction.pk}/"' in page and "Only one missile was fired" in page
    follow_up = client.get(f"/alerts/{correction.pk}/").content.decode()
    assert "This corrects our alert of" in follow_up and f'href="/alerts/{sent.pk}/"' in follow_up


@pytest.mark.parametrize("status", ["draft", "scheduled", "cancelled", "failed"])
def test_drafts_scheduled_stopped_and_failed_alerts_are_never_public(client, status):
    alert = make("Not for the public", status=status)
    assert client.get(f"/alerts/{alert.pk}/").status_code == 404
    assert "Not for the public" not in client.get("/alerts/feed/rss/").content.decode()


def test_editor_text_is_escaped_and_the_page_is_csp_clean(client):
    alert = make("<script>alert(1)</script> & co")
    response = client.get(f"/alerts/{alert.pk}/")
    page = response.content.decode()
    assert "<script>alert(1)" not in page and "&lt;script&gt;" in page
    assert "script-src 'self'" in response["Content-Security-Policy"]
    assert "<style" not in page and "style=" not in page and "<script" not in page
    assert "public" in response["Cache-Control"]


def test_every_email_links_to_its_page_unless_the_archive_is_off(client, alerts, settings):
    sending, correction, sent = alerts
    rendered = alert_rendering(sent)
    link = f"{settings.SITE_URL}/alerts/{sent.pk}/"
    assert f"View in your browser: {link}" in rendered.text and f'href="{link}"' in rendered.html
    digest = digest_rendering([sending, sent], "daily")
    assert f"View in your browser: {settings.SITE_URL}/alerts/{sending.pk}/" in digest.text
    assert link in digest.html

    settings.PUBLIC_ARCHIVE = False
    for url in ("/alerts/", f"/alerts/{sent.pk}/", "/alerts/feed/rss/", "/alerts/feed/atom/"):
        assert client.get(url).status_code == 404
    assert "View in your browser" not in alert_rendering(sent).text
    assert "/alerts/" not in alert_rendering(sent).html
    assert "View in your browser" not in digest_rendering([sent], "daily").html


def test_the_archive_only_answers_get(client, alerts):
    assert client.post("/alerts/").status_code == 405


def test_a_correction_of_a_stopped_alert_is_not_public_either(client):
    stopped = make("Stopped after a mistake", status=Alert.Status.CANCELLED, hours_ago=3)
    correction = make("We stopped that alert", kind=Alert.Kind.CORRECTION, follow_up_of=stopped)
    assert client.get(f"/alerts/{correction.pk}/").status_code == 404
    assert "We stopped that alert" not in client.get("/alerts/").content.decode()
