"""Many signups of one address at the same moment (a double-click, a retrying proxy,
a bot): one subscriber row, no errors."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from django.db import connection

from alerts.common.consent import RequestMeta
from alerts.models import ConsentEvent, Subscriber
from alerts.signup.services import consent_request_process, signup_request

THREADS = 8


def subscribe_together(emails: list[str]) -> None:
    """Record one signup per address, then have workers process them all at the same
    instant."""
    requests = [signup_request(email=email, marketing=False, source="web", meta=RequestMeta())
                for email in emails]
    barrier = threading.Barrier(len(emails))

    def signup(request_id: int) -> None:
        try:
            barrier.wait(timeout=10)
            consent_request_process(request_id=request_id)
        finally:
            connection.close()  # each thread has its own connection; don't leak it

    with ThreadPoolExecutor(max_workers=len(emails)) as pool:
        for future in [pool.submit(signup, request_id) for request_id in requests]:
            future.result()  # re-raises anything a thread hit


@pytest.mark.parametrize("round_", range(3))
def test_concurrent_signups_of_one_address_make_one_subscriber(transactional_db, no_mail, round_):
    subscribe_together(["race@example.com"] * THREADS)
    assert Subscriber.objects.filter(email="race@example.com").count() == 1
    assert ConsentEvent.objects.filter(action="requested").count() == THREADS


def test_concurrent_signups_differing_only_in_case_make_one_subscriber(transactional_db, no_mail):
    subscribe_together(["race@example.com", "Race@example.com", "RACE@example.com", "race@example.com"] * 2)
    assert Subscriber.objects.count() == 1


def test_concurrent_signups_of_different_addresses_each_get_a_row(transactional_db, no_mail):
    subscribe_together([f"r{i}@example.com" for i in range(THREADS)])
    assert Subscriber.objects.count() == THREADS
