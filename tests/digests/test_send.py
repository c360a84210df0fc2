"""Sending a digest batch: what the digest holds, the unsubscribe headers, and a batch
whose worker died sent once."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from django.utils import timezone

from alerts import sweeper
from alerts.common.tokens import link_tokens
from alerts.digests.schedule import digest_tick
from alerts.digests.send import digest_batch_send
from alerts.models import Batch, Delivery, DigestRun, Topic
from tests.factories import published
from tests.helpers import LONDON_7AM, TOKYO_7AM, digest_recipients, tick

pytestmark = pytest.mark.django_db


def call_for(mailgun, email: str):
    return [call for call in mailgun.calls if email in call.recipients][-1]


def test_the_digest_lists_new_alerts_newest_first_with_links_and_unsubscribe_headers(readers, mailgun):
    published("Older story", LONDON_7AM - timedelta(hours=10))
    published("Newer <story>", LONDON_7AM - timedelta(hours=2))
    tick(LONDON_7AM)
    call = call_for(mailgun, "london@example.com")
    assert call.recipients == ["london@example.com"]
    assert call.first("subject") == "Your daily breaking news digest from The Daily Courier: 2 alerts"
    html = call.first("html")
    assert html.index("Newer &lt;story&gt;") < html.index("Older story")
    assert "About Older story" in call.first("text")
    assert call.first("h:List-Unsubscribe-Post") == "List-Unsubscribe=One-Click"
    assert call.first("h:List-Unsubscribe") == "<https://news.example.com/u/%recipient.t%/>"
    token = json.loads(call.first("recipient-variables"))["london@example.com"]["t"]
    assert link_tokens.read(token).subject_id == readers[1].pk


def test_a_reader_with_nothing_new_gets_no_email(readers, mailgun):
    tick(LONDON_7AM)
    tick(TOKYO_7AM + timedelta(days=1))
    assert mailgun.calls == []
    assert set(Delivery.objects.values_list("status", flat=True)) == {Delivery.Status.SKIPPED}


def test_the_next_digest_holds_only_what_came_after_the_last_one(readers, mailgun):
    published("Day one", LONDON_7AM - timedelta(hours=3))
    tick(LONDON_7AM)
    published("Day two", LONDON_7AM + timedelta(hours=5))
    tick(LONDON_7AM + timedelta(days=1))
    second = call_for(mailgun, "london@example.com")
    assert "Day two" in second.first("text") and "Day one" not in second.first("text")


def test_a_run_killed_mid_send_finishes_once(readers, mailgun):
    published("Missiles fired", LONDON_7AM - timedelta(hours=3))
    digest_tick(now=LONDON_7AM)
    batch = Batch.objects.get(digest_run__time_zone="Europe/London", status=Batch.Status.PENDING)
    # A worker claimed it and died: the lease runs out, the sweeper queues it again.
    Batch.objects.filter(pk=batch.pk).update(status=Batch.Status.SENDING,
                                             lease_expires_at=timezone.now() - timedelta(seconds=1))
    assert sweeper.sweep()["batches"] >= 1
    digest_batch_send(batch_id=batch.pk)
    digest_batch_send(batch_id=batch.pk)
    assert digest_recipients(mailgun).count("london@example.com") == 1
    run = DigestRun.objects.get(time_zone="Europe/London")
    assert run.status == DigestRun.Status.SENT and run.finished_at


def test_topics_filter_the_digest(readers, mailgun):
    world = Topic.objects.create(name="World", slug="world")
    sport = Topic.objects.create(name="Sport", slug="sport")
    readers[1].topics.set([world])
    published("World story", LONDON_7AM - timedelta(hours=3), world)
    published("Sport story", LONDON_7AM - timedelta(hours=2), sport)
    tick(LONDON_7AM)
    text = call_for(mailgun, "london@example.com").first("text")
    assert "World story" in text and "Sport story" not in text
