"""Many signups of one address at the same moment (a double-click, a retrying proxy,
a bot): one subscriber row, no errors."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from django.db import connection

from alerts.common.consent import RequestMeta
from alerts.models import ConsentEvent, Subscriber
from alerts.signup.services import subscriber_subscribe

THREADS = 8


def subscribe_together(emails: list[str]) -> None:
    """Call subscriber_subscribe once per address, all released at the same instant."""
    barrier = threading.Barrier(len(emails))

    def signup(email: str) -> None:
        try:
            barrier.wait(timeout=10)
            subscriber_subscribe(email=email, marketing=False, source="web", meta=RequestMeta())
        finally:
            connection.close()  # each thread has its own connection; don't leak it

    with ThreadPoolExecutor(max_workers=len(emails)) as pool:
        for future in [pool.submit(signup, email) for email in emails]:
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
