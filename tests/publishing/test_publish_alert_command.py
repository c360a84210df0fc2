"""`manage.py publish_alert`: an existing alert by id, or a new one written and
published (or scheduled, in the newsroom's time) in one go, for scripts."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from alerts.models import Alert, Delivery, Topic
from tests.factories import make_subscriber

pytestmark = pytest.mark.django_db


@pytest.mark.django_db(transaction=True)  # the fan-out is queued once the command's transaction commits
def test_it_writes_publishes_and_follows_a_new_alert_to_the_end(world, mailgun, settings, capsys):
    settings.CELERY_TASK_ALWAYS_EAGER = True
    reader = make_subscriber("reader@example.com")
    call_command("publish_alert", "--headline", "Storm closes bridge", "--standfirst", "Traffic diverted",
                 "--url", "https://news.example.com/storm", "--topic", "world", "--timeout", "10")
    alert = Alert.objects.get()
    assert (alert.headline, alert.standfirst, alert.url) == (
        "Storm closes bridge", "Traffic diverted", "https://news.example.com/storm")
    assert list(alert.topics.all()) == [world]
    assert alert.status == Alert.Status.SENT
    assert Delivery.objects.get(alert=alert).subscriber == reader
    out = capsys.readouterr().out
    assert f"Created alert {alert.pk}: Storm closes bridge" in out and "sent: sent 1" in out


def test_repeated_topics_are_all_kept(world):
    Topic.objects.create(name="Sport", slug="sport")
    call_command("publish_alert", "--headline", "Final whistle", "--topic", "world", "--topic", "sport",
                 "--no-wait")
    assert sorted(Alert.objects.get().topics.values_list("slug", flat=True)) == ["sport", "world"]


def test_a_schedule_without_an_offset_is_the_newsrooms_local_time(settings, capsys):
    settings.PUBLICATION_TIME_ZONE = "Europe/Berlin"
    local = (timezone.now() + timedelta(days=2)).astimezone(
        __import__("zoneinfo").ZoneInfo("Europe/Berlin")).replace(hour=18, minute=30, second=0, microsecond=0)
    call_command("publish_alert", "--headline", "Budget", "--schedule", local.strftime("%Y-%m-%dT%H:%M"))
    alert = Alert.objects.get()
    assert alert.status == Alert.Status.SCHEDULED
    assert alert.scheduled_for == local  # the same instant, whatever the offset that day
    assert "18:30 CE" in capsys.readouterr().out  # CET or CEST


def test_a_schedule_with_an_offset_is_taken_as_it_is():
    when = (timezone.now() + timedelta(hours=3)).astimezone(UTC).replace(microsecond=0)
    call_command("publish_alert", "--headline", "Budget", "--schedule", when.isoformat())
    assert Alert.objects.get().scheduled_for == when


def test_an_existing_alert_can_be_scheduled(alert):
    when = datetime.now(UTC) + timedelta(hours=1)
    call_command("publish_alert", str(alert.pk), "--schedule", when.isoformat())
    alert.refresh_from_db()
    assert alert.status == Alert.Status.SCHEDULED and alert.scheduled_for == when


@pytest.mark.parametrize("args, message", [
    ([], "Give an ALERT_ID"),
    (["1", "--headline", "x"], "not both"),
    (["--headline", ""], "headline"),
    (["--headline", "x" * 201], "headline"),
    (["--headline", "Storm", "--url", "ftp://x"], "url"),
    (["--headline", "Storm", "--topic", "wrold"], "Unknown topic(s): wrold"),
    (["--headline", "Storm", "--schedule", "tomorrow"], "not an ISO 8601 time"),
    (["--headline", "Storm", "--schedule", "2020-01-01T10:00"], "future"),
    (["424242"], "No alert with id 424242"),
])
def test_bad_arguments_are_errors_that_create_nothing(world, args, message):
    with pytest.raises(CommandError, match=__import__("re").escape(message)):
        call_command("publish_alert", *args, "--no-wait")
    assert not Alert.objects.exists()


def test_past_the_approval_limit_it_says_so_and_sends_nothing(world, settings):
    settings.APPROVAL_REQUIRED_ABOVE = 1
    for name in ("ann", "bob"):
        make_subscriber(f"{name}@example.com")
    with pytest.raises(CommandError, match="more than 1 readers.*Nothing was created"):
        call_command("publish_alert", "--headline", "Storm closes bridge", "--no-wait")
    assert not Alert.objects.exists()
    draft = Alert.objects.create(headline="Storm closes bridge")
    for extra in ([], ["--schedule", (timezone.now() + timedelta(hours=1)).isoformat()]):
        with pytest.raises(CommandError, match=f"Alert {draft.pk} was not sent.*Approve it in the admin"):
            call_command("publish_alert", str(draft.pk), "--no-wait", *extra)
    draft.refresh_from_db()
    assert draft.status == Alert.Status.DRAFT
