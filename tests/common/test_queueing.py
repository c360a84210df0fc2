"""Queueing a task by its name: the registered task runs, with its routing, and a
broker that cannot be reached never fails the caller."""

from __future__ import annotations

import logging

import pytest
from celery import current_app
from kombu.exceptions import OperationalError

from alerts.common.queueing import enqueue, enqueue_on_commit
from tests.factories import make_subscriber

pytestmark = pytest.mark.django_db


def test_a_task_queued_by_name_runs(eager_celery, mailoutbox):
    reader = make_subscriber("reader@example.com")
    assert enqueue("alerts.send_preferences_link", email_hmac=reader.email_hmac) is True
    assert [message.to for message in mailoutbox] == [["reader@example.com"]]


def test_a_name_no_task_has_is_an_error_not_a_silent_loss():
    with pytest.raises(KeyError):
        enqueue("alerts.no_such_task", batch_id=1)


def test_every_name_the_services_queue_is_a_registered_task():
    names = {"alerts.send_confirmation", "alerts.send_preferences_link", "alerts.fan_out_alert",
             "alerts.send_batch", "alerts.send_digest_batch"}
    assert names <= set(current_app.tasks)


def test_an_unreachable_broker_is_logged_and_reported_not_raised(monkeypatch, caplog):
    task = current_app.tasks["alerts.send_batch"]

    def broker_down(**kwargs):
        raise OperationalError("Error 111 connecting to 127.0.0.1:6379. Connection refused.")

    monkeypatch.setattr(task, "delay", broker_down)
    with caplog.at_level(logging.ERROR, logger="alerts.common.queueing"):
        assert enqueue("alerts.send_batch", batch_id=42) is False
    assert "Could not queue alerts.send_batch" in caplog.text


def test_queueing_on_commit_waits_for_the_commit(eager_celery, mailoutbox, django_capture_on_commit_callbacks):
    reader = make_subscriber("later@example.com")
    with django_capture_on_commit_callbacks() as callbacks:
        enqueue_on_commit("alerts.send_preferences_link", email_hmac=reader.email_hmac)
        assert mailoutbox == []
    for callback in callbacks:
        callback()
    assert len(mailoutbox) == 1
