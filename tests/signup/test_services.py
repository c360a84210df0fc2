"""What a signup stores and sends, whichever page it came from: the consent evidence,
one confirmation per cooldown, nothing for a suppressed address."""

from __future__ import annotations

import pytest

from alerts.common.addresses import email_hmac
from alerts.models import ConsentEvent, Subscriber, Suppression, Wording

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("eager_celery")]


def test_consent_is_recorded_with_wording_privacy_version_and_origin(client, post_signup):
    post_signup(client, marketing="on")
    events = list(ConsentEvent.objects.order_by("id"))
    assert [(e.purpose, e.action, e.source) for e in events] == [
        ("alerts", "requested", "web"), ("marketing", "requested", "web"),
    ]
    marketing = events[1]
    assert marketing.wording.kind == Wording.Kind.MARKETING
    assert marketing.wording.text == (
        "I would like to be emailed about offers, events and updates from The Daily Courier")
    assert marketing.privacy_notice.version == "2026-01"
    assert marketing.ip_address == "203.0.113.9"
    assert marketing.user_agent == "Mozilla/5.0 (test)"


def test_without_the_box_ticked_no_marketing_consent_is_recorded(client, post_signup):
    post_signup(client)
    assert not ConsentEvent.objects.filter(purpose="marketing").exists()


def test_a_pending_address_is_not_mail_bombed(client, post_signup, mailoutbox):
    for _ in range(5):
        post_signup(client, email="victim@example.com")
    assert len(mailoutbox) == 1
    assert Subscriber.objects.count() == 1


def test_a_suppressed_address_is_never_mailed_from_the_form(client, post_signup, mailoutbox):
    Suppression.objects.create(email_hmac=email_hmac("bounced@example.com"), reason="bounced")
    post_signup(client, email="bounced@example.com")
    assert mailoutbox == []
    assert not Subscriber.objects.exists()


def test_single_opt_in_confirms_at_once(client, post_signup, settings, mailoutbox):
    settings.DOUBLE_OPT_IN = False
    post_signup(client)
    assert Subscriber.objects.get().status == Subscriber.Status.CONFIRMED
    assert mailoutbox == []
