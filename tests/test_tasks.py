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
