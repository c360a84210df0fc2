"""The signup as two halves: a request that does the same work for every address, and
a worker that runs the state machine; and a confirmation that confirms exactly the
request it was sent for."""

from __future__ import annotations

from urllib.parse import urlsplit

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from alerts.common.addresses import email_hmac
from alerts.common.consent import RequestMeta
from alerts.common.queueing import nudge_key
from alerts.common.redis_cache import raw_client
from alerts.models import ConsentEvent, ConsentRequest, Subscriber, Suppression
from alerts.signup.services import DRAIN_TASK, consent_request_process, signup_request
from tests.factories import make_subscriber
from tests.helpers import API, SIGNUP, link_in

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("eager_celery")]

STATES = ["new", "pending", "confirmed", "unsubscribed", "suppressed"]


def make_state(state: str, email: str) -> None:
    if state == "pending":
        make_subscriber(email, status=Subscriber.Status.PENDING)
    elif state == "confirmed":
        make_subscriber(email)
    elif state == "unsubscribed":
        make_subscriber(email, status=Subscriber.Status.UNSUBSCRIBED)
    elif state == "suppressed":
        make_subscriber(email)
        Suppression.objects.create(email_hmac=email_hmac(email), reason="complained")


def answer(client, django_capture_on_commit_callbacks, email: str):
    """POST the form; return the response, the queries it ran and what it queued."""
    raw_client().delete(nudge_key(DRAIN_TASK))  # as if the last drain had just started
    with CaptureQueriesContext(connection) as queries, \
            django_capture_on_commit_callbacks(execute=False) as queued:
        response = client.post(SIGNUP, {"email": email}, REMOTE_ADDR="203.0.113.9")
    return response, len(queries), len(queued)


def comparable_headers(response) -> dict:
    # The CSRF cookie is the one thing allowed to differ (it is per client, not per address),
    # and Expires, the clock's second.
    return {name: value for name, value in response.headers.items()
            if name.lower() not in ("set-cookie", "expires")}


def test_every_state_of_an_address_gets_the_same_answer_and_the_same_work(
        client, django_capture_on_commit_callbacks):
    answer(client, django_capture_on_commit_callbacks, "warm-up@example.com")  # wording rows created once
    seen = {}
    for index, state in enumerate(STATES):
        email = f"reader{index}@example.com"
        make_state(state, email)
        response, queries, queued = answer(client, django_capture_on_commit_callbacks, email)
        body = response.content.decode().replace(email, "ADDRESS")
        seen[state] = (response.status_code, comparable_headers(response), body, queries, queued)
    reference = seen["new"]
    for state, result in seen.items():
        assert result == reference, f"a {state} address is answered differently"
    assert reference[0] == 200 and reference[4] == 1  # one nudge of the drain, for everyone
    assert reference[3] == 1  # one SQL statement: the INSERT of the request


@pytest.mark.parametrize("state", STATES)
def test_the_json_endpoint_does_one_statement_whatever_the_address(
        state, client, django_assert_num_queries, django_capture_on_commit_callbacks):
    client.post(API, '{"email": "warm-up@example.com"}', content_type="application/json",
                REMOTE_ADDR="203.0.113.9")  # this process resolves the wording ids once
    make_state(state, "reader@example.com")
    raw_client().delete(nudge_key(DRAIN_TASK))
    with django_assert_num_queries(1), django_capture_on_commit_callbacks(execute=False) as nudges:
        response = client.post(API, '{"email": "reader@example.com"}', content_type="application/json",
                               REMOTE_ADDR="203.0.113.9")
    assert response.status_code == 200 and response.json()["ok"] is True
    assert len(nudges) == 1


def test_the_worker_does_what_the_request_did_not(client, post_signup, mailoutbox):
    make_subscriber("known@example.com")
    post_signup(client, email="known@example.com")
    post_signup(client, email="new@example.com")
    assert [m.to for m in mailoutbox] == [["new@example.com"]]
    assert ConsentRequest.objects.filter(processed_at__isnull=False).count() == 2


def test_processing_a_request_twice_changes_nothing_more(mailoutbox):
    request_id = signup_request(email="alice@example.com", marketing=False, source="web", meta=RequestMeta())
    assert consent_request_process(request_id=request_id) is True
    assert consent_request_process(request_id=request_id) is False
    assert len(mailoutbox) == 1
    assert ConsentEvent.objects.filter(action="requested").count() == 1


# --- Someone else's tick -------------------------------------------------------------


def confirm_path(message) -> str:
    return urlsplit(link_in(message.body, "/confirm/")).path


def test_a_tick_added_by_someone_else_is_not_adopted_by_the_readers_own_link(
        client, post_signup, mailoutbox):
    post_signup(client, email="reader@example.com")  # the reader: alerts only
    mine = confirm_path(mailoutbox[0])
    from django.core.cache import cache

    cache.clear()  # past the cooldown, so the third party's request is mailed too
    post_signup(client, email="reader@example.com", marketing="on")  # a third party ticks the box
    client.post(mine)
    reader = Subscriber.objects.get()
    assert reader.status == Subscriber.Status.CONFIRMED
    assert reader.marketing_consent is False
    assert not reader.consent_events.filter(purpose="marketing", action="confirmed").exists()


def test_the_confirmation_of_a_ticked_request_names_what_it_confirms(client, post_signup, mailoutbox):
    post_signup(client, marketing="on")
    message = mailoutbox[0]
    assert "breaking news emails and emails about offers, events and updates" in message.body
    page = client.get(confirm_path(message)).content.decode()
    assert "offers, events and updates" in page
    client.post(confirm_path(message))
    assert Subscriber.objects.get().marketing_consent is True


def test_a_request_overtaken_by_an_unsubscribe_no_longer_confirms(client, post_signup, mailoutbox):
    post_signup(client)
    path = confirm_path(mailoutbox[0])
    reader = Subscriber.objects.get()
    reader.mark_confirmed()
    reader.save()
    reader.mark_unsubscribed()
    reader.save()
    assert client.post(path).status_code == 400
    reader.refresh_from_db()
    assert reader.status == Subscriber.Status.UNSUBSCRIBED


def test_a_confirmation_link_shows_no_subscriber_id():
    from alerts.common.tokens import confirm_tokens

    token = confirm_tokens.make_token(12345)
    assert "12345" not in token and ":" not in token and "." not in token


def test_a_request_whose_task_was_lost_is_found_for_the_sweeper(mailoutbox):
    from datetime import timedelta

    from django.utils import timezone

    from alerts.signup.services import consent_requests_unqueued

    lost = signup_request(email="alice@example.com", marketing=False, source="web", meta=RequestMeta())
    assert consent_requests_unqueued(before=timezone.now() + timedelta(seconds=1)) == [lost]
    consent_request_process(request_id=lost)
    assert consent_requests_unqueued(before=timezone.now() + timedelta(seconds=1)) == []
    assert len(mailoutbox) == 1
