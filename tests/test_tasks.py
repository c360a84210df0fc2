"""Routing on the real Redis broker: each kind of task lands in its own queue only."""

from __future__ import annotations

import pytest

from alerts.tasks import send_batch, send_confirmation, send_digest_batch
from config.celery import app

pytestmark = pytest.mark.worker


@pytest.mark.parametrize(("task", "queue"), [
    (send_batch, "alerts"), (send_confirmation, "transactional"), (send_digest_batch, "digests"),
])
def test_a_task_is_queued_once_on_its_own_queue(broker_redis, task, queue):
    broker_redis.flushdb()
    with app.connection_for_write() as connection:  # bind every queue, as a worker does
        for declared in app.conf.task_queues:
            declared(connection.default_channel).declare()
    kwargs = {"subscriber_id": 1} if task is send_confirmation else {"batch_id": 1}
    task.delay(**kwargs)
    lengths = {name: broker_redis.llen(name) for name in ("alerts", "transactional", "digests")}
    assert lengths == {name: int(name == queue) for name in lengths}
    broker_redis.flushdb()


def test_the_worker_loads_its_providers_backends_and_freezes_the_heap_before_forking(settings, monkeypatch):
    import gc

    from alerts.sending.anymail_batch import backend_class
    from config.celery import _preload

    settings.EMAIL_BACKEND = "anymail.backends.postmark.EmailBackend"
    settings.EMAIL_BACKEND_FALLBACK = "anymail.backends.brevo.EmailBackend"
    backend_class.cache_clear()
    freezes = []
    monkeypatch.setattr(gc, "freeze", lambda: freezes.append(backend_class.cache_info().currsize))
    _preload()
    # Both backends were built (and their modules imported) before the heap was frozen.
    assert freezes == [2]
