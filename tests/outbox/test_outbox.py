"""The outbox: confirmations sent in batches (one Mailgun call for many readers, each
with their own link), retried after a provider failure without using up the
cooldown, held back by the cooldown only when an email was really sent, and
re-queued by the sweeper."""

from __future__ import annotations

from datetime import timedelta
from urllib.parse import urlsplit

import pytest
from django.utils import timezone

from alerts import sweeper
from alerts.common.consent import RequestMeta
from alerts.models import OutboxEmail, Subscriber
from alerts.outbox.services import outbox_drain
from alerts.signup import drain
from alerts.signup.services import signup_request
from tests.helpers import link_in

pytestmark = pytest.mark.django_db


def signups(*emails: str) -> None:
    for email in emails:
        signup_request(email=email, marketing=False, source="api", meta=RequestMeta())
    drain.consent_requests_drain()


def statuses() -> list[str]:
    return sorted(OutboxEmail.objects.values_list("status", flat=True))


def test_confirmations_go_in_one_provider_call_each_with_its_own_link(mailgun, client):
    signups("a@example.com", "b@example.com", "c@example.com")
    assert outbox_drain() == 3
    [call] = mailgun.calls
    assert sorted(call.recipients) == ["a@example.com", "b@example.com", "c@example.com"]
    links = {email: call.first("text").replace("%recipient.c%", variables["c"])
             for email, variables in call.recipient_variables.items()}
    assert len(set(links.values())) == 3
    client.post(urlsplit(link_in(links["b@example.com"], "/confirm/")).path)
    assert Subscriber.objects.get(status=Subscriber.Status.CONFIRMED).email == "b@example.com"
    assert statuses() == ["sent"] * 3


def test_a_provider_failure_is_retried_with_backoff_and_the_cooldown_is_not_used_up(mailgun):
    signups("a@example.com")
    mailgun.fail_next(1, status=503)
    outbox_drain()
    row = OutboxEmail.objects.get()
    assert row.status == "pending" and row.attempts == 1 and "503" in row.last_error
    assert row.next_attempt_at > timezone.now()
    assert outbox_drain() == 0  # waiting out its backoff
    OutboxEmail.objects.update(next_attempt_at=timezone.now())
    assert outbox_drain() == 1
    assert statuses() == ["sent"] and mailgun.recipient_counts()["a@example.com"] == 1


def test_a_second_confirmation_within_the_cooldown_is_held_not_sent(mailgun):
    signups("a@example.com")
    outbox_drain()
    signups("a@example.com")
    outbox_drain()
    assert statuses() == ["held", "sent"] and mailgun.total_recipients == 1


def test_a_refused_request_fails_for_good(mailgun):
    signups("a@example.com")
    mailgun.fail_next(1, status=400)
    outbox_drain()
    assert statuses() == ["failed"]


def test_the_sweeper_queues_the_sender_for_a_row_whose_task_was_lost(mailgun, settings):
    settings.CELERY_TASK_ALWAYS_EAGER = True
    signups("a@example.com")  # recorded, but its nudge never committed (the test's transaction)
    assert statuses() == ["pending"]
    assert sweeper.sweep(now=timezone.now() + timedelta(seconds=10))["drains"] == 1
    assert statuses() == ["sent"]


def test_a_dead_senders_rows_come_back_when_its_lease_runs_out(mailgun):
    signups("a@example.com")
    OutboxEmail.objects.update(status="sending", lease_expires_at=timezone.now() - timedelta(seconds=1))
    assert outbox_drain() == 1
    assert statuses() == ["sent"]


def test_the_batch_reservation_and_the_one_at_a_time_cooldown_count_alike(settings):
    from alerts.common.ratelimits import allow_confirmation_email, allow_confirmation_emails

    settings.CONFIRM_DAILY_LIMIT = 1
    assert allow_confirmation_email("h1") is True
    assert allow_confirmation_emails([("h1", "signup"), ("h2", "signup"), ("h3", "marketing")]) == [
        False, True, True]
    assert allow_confirmation_email("h2") is False
    assert allow_confirmation_email("h3", kind="signup") is True  # the kinds count apart


def test_a_preferences_link_request_is_one_statement_for_a_known_or_an_unknown_address(
        django_assert_num_queries, django_capture_on_commit_callbacks):
    from alerts.subscribers.services import subscriber_request_preferences_link
    from tests.factories import make_subscriber

    make_subscriber("known@example.com")
    for email in ("known@example.com", "stranger@example.com"):
        with django_assert_num_queries(1), django_capture_on_commit_callbacks(execute=False) as nudges:
            subscriber_request_preferences_link(email=email)
        assert len(nudges) == 1
    assert list(OutboxEmail.objects.values_list("address", "kind")) == [("known@example.com", "preferences")]


def test_a_preferences_link_goes_out_once_inside_its_cooldown_and_never_to_a_suppressed_address(mailoutbox):
    from alerts.common.addresses import email_hmac
    from alerts.models import Suppression
    from alerts.subscribers.services import subscriber_request_preferences_link
    from tests.factories import make_subscriber

    make_subscriber("known@example.com")
    make_subscriber("bounced@example.com")
    Suppression.objects.create(email_hmac=email_hmac("bounced@example.com"), reason="bounced")
    for email in ("known@example.com", "known@example.com", "bounced@example.com"):
        subscriber_request_preferences_link(email=email)
    assert outbox_drain() == 3
    assert [m.to for m in mailoutbox] == [["known@example.com"]]
    assert statuses() == ["failed", "held", "sent"]
