"""Where signups come from: the embedding article (or the Referer) and the campaign
tags, carried on the request, kept on the subscriber, and shown in the admin as
"top articles by signups"."""

from __future__ import annotations

import pytest

from alerts.models import ConsentRequest, Subscriber
from alerts.signup import drain
from tests.helpers import API

pytestmark = pytest.mark.django_db

ARTICLE = "https://news.example.com/2026/12/01/storm?utm_source=push&utm_medium=web&utm_campaign=storm"


def post(client, payload: str, **headers):
    return client.post(API, payload, content_type="application/json", REMOTE_ADDR="203.0.113.9", **headers)


def test_the_embedding_article_and_its_campaign_tags_are_kept_with_the_reader(client):
    post(client, f'{{"email": "a@example.com", "page": "{ARTICLE}#comments"}}', HTTP_REFERER="https://t.co/x")
    drain.consent_requests_drain()
    reader = Subscriber.objects.get()
    assert reader.signup_page == ARTICLE  # the fragment dropped
    assert reader.signup_referrer == "https://t.co/x"
    assert (reader.utm_source, reader.utm_medium, reader.utm_campaign) == ("push", "web", "storm")


def test_without_a_page_the_referer_is_the_page_and_junk_is_dropped_not_refused(client):
    response = post(client, '{"email": "a@example.com", "page": "javascript:alert(1)", "utm_source": 7}',
                    HTTP_REFERER="https://news.example.com/live?utm_campaign=" + "x" * 300)
    assert response.status_code == 200
    request = ConsentRequest.objects.get()
    assert request.signup_page == request.signup_referrer and request.signup_page.startswith("https://news.")
    assert request.utm_source == "" and request.utm_campaign == "x" * 100


def test_the_embedded_box_posts_back_the_article_it_was_embedded_in(client):
    page = client.get("/embed/", {"page": ARTICLE}).content.decode()
    assert 'name="page" value="https://news.example.com/2026/12/01/storm?utm_source=push&amp;' in page


def test_the_admin_shows_top_articles_by_signups(client, admin_client):
    for index in range(3):
        post(client, f'{{"email": "r{index}@example.com", "page": "https://news.example.com/storm"}}')
    post(client, '{"email": "s@example.com", "page": "https://news.example.com/election"}')
    drain.consent_requests_drain()
    page = admin_client.get("/admin/alerts/subscriber/top-articles/?days=7").content.decode()
    assert page.index("https://news.example.com/storm") < page.index("https://news.example.com/election")
    assert "<td>3</td><td>0</td>" in page
    assert "Top articles by signups" in admin_client.get("/admin/alerts/subscriber/").content.decode()
