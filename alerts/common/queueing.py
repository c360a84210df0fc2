"""Putting tasks on the broker by name, without letting a broker outage lose a request.

Services name the task they want (`enqueue("alerts.send_confirmation", ...)`) rather
than import it, as Zulip's library publishes to a queue by name: `alerts.tasks` sits
above every capability and imports them, so nothing below it may import it back. The
name is looked up in Celery's registry, so routing, eager mode in tests and anything
patched onto the task object apply exactly as for `task.delay()`.

A request that committed its work must not turn into a 500 because Redis blinked while
the task was being queued: the commit stands, the failure is logged, and the sweeper
(`alerts.sweeper`) queues what was committed but never queued.
"""

from __future__ import annotations

import logging
from functools import partial

from celery import current_app
from django.db import transaction
from kombu.exceptions import OperationalError

logger = logging.getLogger(__name__)


def enqueue(task_name: str, **kwargs) -> bool:
    """Queue the task named `task_name` now; False (logged) if the broker cannot be
    reached. Raises KeyError for a name no task is registered under (a typo)."""
    task = current_app.tasks[task_name]
    try:
        task.delay(**kwargs)
    except OperationalError as error:
        logger.error("Could not queue %s%s: %s", task_name, kwargs, error)
        return False
    return True


def enqueue_on_commit(task_name: str, **kwargs) -> None:
    """Queue the task once the current transaction commits, never failing the caller."""
    transaction.on_commit(partial(enqueue, task_name, **kwargs))
