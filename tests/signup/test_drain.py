"""The drain: unprocessed signups taken in batches, the state machine applied in bulk,
their confirmation emails recorded in the outbox; and the nudge that queues it."""

from __future__ import annotations

import pytest
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext

from alerts.common.consent import RequestMeta
from alerts.common.queueing import nudge, nudge_key
from alerts.common.redis_cache import raw_client
from alerts.models import ConsentEvent, ConsentRequest, OutboxEmail, Subscriber
from alerts.signup import drain
from alerts.signup.services import DRAIN_GATHER_SECONDS, DRAIN_TASK, signup_request
from tests.factories import make_subscriber

pytestmark = pytest.mark.django_db


def sign_up(email: str, **extra) -> int:
    return signup_request(email=email, marketing=False, source="api", meta=RequestMeta(ip="203.0.113.7"), **extra)


def drain_queries(count: int, prefix: str) -> int:
    for index in range(count):
        sign_up(f"{prefix}{index}@example.com")
    with CaptureQueriesContext(connection) as queries:
        assert drain.consent_requests_drain() == count
    return len(queries)


def test_one_drain_processes_every_waiting_request_and_records_their_emails():
    make_subscriber("confirmed@example.com")
    make_subscriber("pending@example.com", status=Subscriber.Status.PENDING)
    for email in ("new@example.com", "confirmed@example.com", "pending@example.com", "New@example.com"):
        sign_up(email)
    assert drain.consent_requests_drain() == 4
    assert not ConsentRequest.objects.filter(processed_at__isnull=True).exists()
    assert Subscriber.objects.count() == 3  # the two spellings of new@ are one reader
    assert sorted(OutboxEmail.objects.values_list("address", flat=True)) == [
        "New@example.com", "new@example.com", "pending@example.com"]
    assert ConsentEvent.objects.filter(action="requested").count() == 3


def test_the_drain_costs_the_same_queries_for_ten_requests_as_for_fifty():
    assert drain_queries(10, "a") == drain_queries(50, "b")


def test_a_drain_over_a_full_batch_takes_the_next_one_in_the_same_task(monkeypatch):
    monkeypatch.setattr(drain, "DRAIN_BATCH", 3)
    for index in range(7):
        sign_up(f"reader{index}@example.com")
    assert drain.consent_requests_drain() == 7
    assert OutboxEmail.objects.count() == 7


class RolledBack(Exception):
    pass


def drained_rows(vendor: str, monkeypatch) -> dict:
    """Sign up readers in every state, drain with the raw statements (postgresql) or
    their portable twins, and return what the drain left, then roll it all back."""
    from alerts.common.addresses import email_hmac
    from alerts.models import Suppression
    from alerts.signup.origin import SignupOrigin

    found: dict = {}
    try:
        with transaction.atomic():
            make_subscriber("confirmed@example.com")
            make_subscriber("gone@example.com", status=Subscriber.Status.UNSUBSCRIBED)
            Suppression.objects.create(email_hmac=email_hmac("bounced@example.com"), reason="bounce")
            origin = SignupOrigin(page="https://news.example.com/a/1", utm_source="app", utm_campaign="storm")
            for email, marketing in (("new@example.com", True), ("New@example.com", False),
                                     ("confirmed@example.com", True), ("gone@example.com", False),
                                     ("bounced@example.com", False), ("other@example.com", False)):
                signup_request(email=email, marketing=marketing, source="api", origin=origin,
                               meta=RequestMeta(ip="203.0.113.7", user_agent="Mozilla/5.0"), timezone_name="Europe/Paris")
            with monkeypatch.context() as patch:
                patch.setattr(connection, "vendor", vendor)
                drain.consent_requests_drain()
            found["subscribers"] = sorted(Subscriber.objects.values_list(
                "email", "status", "source", "time_zone", "signup_page", "utm_source", "utm_campaign"))
            found["events"] = sorted(ConsentEvent.objects.values_list(
                "subscriber__email", "purpose", "action", "source", "wording_id", "privacy_notice_id", "ip_address",
                "user_agent"))
            found["outbox"] = sorted(OutboxEmail.objects.values_list(
                "kind", "address", "subscriber__email", "request__email", "status", "attempts"))
            found["unprocessed"] = ConsentRequest.objects.filter(processed_at__isnull=True).count()
            raise RolledBack
    except RolledBack:
        return found


def test_the_drains_raw_inserts_leave_the_same_rows_as_their_portable_twins(monkeypatch):
    raw, portable = drained_rows("postgresql", monkeypatch), drained_rows("portable", monkeypatch)
    assert raw == portable
    assert len(raw["subscribers"]) == 4  # new (both spellings), confirmed, back from unsubscribed, other
    assert ("new@example.com", "marketing") in {event[:2] for event in raw["events"]}
    assert [row[1] for row in raw["outbox"]] == ["New@example.com", "gone@example.com", "new@example.com",
                                                 "other@example.com"]
    assert raw["unprocessed"] == 0


def test_where_the_signup_came_from_is_kept_with_the_reader():
    from alerts.signup.origin import SignupOrigin

    sign_up("reader@example.com", origin=SignupOrigin(
        page="https://news.example.com/storm", referrer="https://www.google.com/", utm_source="newsletter",
        utm_medium="email", utm_campaign="storm"))
    drain.consent_requests_drain()
    reader = Subscriber.objects.get()
    assert (reader.signup_page, reader.signup_referrer, reader.utm_source, reader.utm_medium,
            reader.utm_campaign) == ("https://news.example.com/storm", "https://www.google.com/", "newsletter",
                                     "email", "storm")


def test_a_nudge_queues_one_drain_until_that_drain_starts(monkeypatch):
    from celery import current_app

    queued = []
    monkeypatch.setattr(current_app.tasks[DRAIN_TASK], "delay", lambda **kw: queued.append(kw))
    raw_client().delete(nudge_key(DRAIN_TASK))
    assert [nudge(DRAIN_TASK) for _ in range(5)] == [True, False, False, False, False]
    drain.consent_requests_drain()  # it starts: the next request must nudge again
    assert nudge(DRAIN_TASK) is True
    assert len(queued) == 2


def test_a_drain_that_found_work_queues_one_more_which_finds_a_signup_that_committed_just_after_its_read(
        monkeypatch):
    # The signup's nudge key is set before its INSERT commits, so a drain may read
    # just before the row exists, and that signup queued nothing (the key was set):
    # the drain queues a follow-up, which finds it.
    from celery import current_app

    queued = []
    monkeypatch.setattr(current_app.tasks[DRAIN_TASK], "delay", lambda **kw: queued.append(kw))
    raw_client().delete(nudge_key(DRAIN_TASK))
    sign_up("first@example.com")
    assert drain.consent_requests_drain() == 1
    sign_up("late@example.com", drain_nudge=False)  # its nudge found the key set
    assert len(queued) == 1
    raw_client().delete(nudge_key(DRAIN_TASK))  # the follow-up starts
    assert drain.consent_requests_drain() == 1
    assert not ConsentRequest.objects.filter(processed_at__isnull=True).exists()
    assert len(queued) == 2  # it found work too, so one more; the one after finds none


def test_a_drain_that_found_nothing_queues_nothing(monkeypatch):
    from celery import current_app

    queued = []
    monkeypatch.setattr(current_app.tasks[DRAIN_TASK], "delay", lambda **kw: queued.append(kw))
    raw_client().delete(nudge_key(DRAIN_TASK))
    assert drain.consent_requests_drain() == 0
    assert queued == []


def test_signups_made_while_a_drain_gathers_ride_on_it_without_queueing_their_own(monkeypatch):
    from celery import current_app

    queued = []
    monkeypatch.setattr(current_app.tasks[DRAIN_TASK], "delay", lambda **kw: queued.append(kw))
    raw_client().delete(nudge_key(DRAIN_TASK))
    assert nudge(DRAIN_TASK) is True  # the first signup's nudge queues this drain
    waits = []

    def gathering(seconds):
        waits.append(seconds)
        for index in range(3):  # signups during the wait find the key set
            assert nudge(DRAIN_TASK) is False
            sign_up(f"meanwhile{index}@example.com")

    monkeypatch.setattr(drain.time, "sleep", gathering)
    assert drain.consent_requests_drain(gather=DRAIN_GATHER_SECONDS) == 3
    assert waits == [DRAIN_GATHER_SECONDS]
    assert len(queued) == 2  # the first nudge, and the follow-up of a drain that found work
