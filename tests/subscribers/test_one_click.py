"""RFC 8058 one-click unsubscribe over real HTTP, as a mailbox provider sends it, and
the confirm page a GET shows."""

from __future__ import annotations

import pytest
import requests

from alerts.models import ConsentEvent, Subscriber
from tests.factories import make_subscriber
from tests.helpers import ONE_CLICK, unsubscribe_path, withdrawals

pytestmark = pytest.mark.usefixtures("eager_celery")


def test_a_one_click_post_without_cookies_unsubscribes_at_once(live_server):
    alice = make_subscriber(marketing_consent=True)
    response = requests.post(live_server.url + unsubscribe_path(alice), data=ONE_CLICK,
                             allow_redirects=False, timeout=10)
    assert response.status_code == 200
    assert "Location" not in response.headers
    assert "You have been unsubscribed" in response.text
    alice.refresh_from_db()
    assert alice.status == Subscriber.Status.UNSUBSCRIBED
    assert alice.marketing_consent is True  # the other purpose is untouched
    assert list(withdrawals(alice).values_list("source", flat=True)) == ["one_click"]


def test_a_multipart_one_click_post_works_too(live_server):
    alice = make_subscriber()
    response = requests.post(live_server.url + unsubscribe_path(alice),
                             files={"List-Unsubscribe": (None, "One-Click")},
                             allow_redirects=False, timeout=10)
    assert response.status_code == 200
    alice.refresh_from_db()
    assert alice.status == Subscriber.Status.UNSUBSCRIBED


def test_a_get_or_head_changes_nothing(live_server):
    alice = make_subscriber()
    url = live_server.url + unsubscribe_path(alice)
    page = requests.get(url, allow_redirects=False, timeout=10)
    head = requests.head(url, allow_redirects=False, timeout=10)
    assert page.status_code == head.status_code == 200
    assert "Unsubscribe</button>" in page.text
    alice.refresh_from_db()
    assert alice.status == Subscriber.Status.CONFIRMED
    assert not ConsentEvent.objects.exists()


def test_repeating_the_one_click_post_is_harmless(live_server):
    alice = make_subscriber()
    url = live_server.url + unsubscribe_path(alice)
    codes = [requests.post(url, data=ONE_CLICK, allow_redirects=False, timeout=10).status_code
             for _ in range(3)]
    assert codes == [200, 200, 200]
    assert withdrawals(alice).count() == 1
