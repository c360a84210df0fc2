"""Putting tasks on the broker without letting a broker outage lose a reader's request.

A request that committed its work must not turn into a 500 because Redis blinked while
the task was being queued: the commit stands, the failure is logged, and the sweeper
(`publishing.sweep`) queues what was committed but never queued.
"""

from __future__ import annotations

import logging
from functools import partial

from django.db import transaction
from kombu.exceptions import OperationalError

logger = logging.getLogger(__name__)


def enqueue(task, **kwargs) -> bool:
    """Queue `task` now; False (logged) if the broker cannot be reached."""
    try:
        task.delay(**kwargs)
    except OperationalError as error:
        logger.error("Could not queue %s%s: %s", task.name, kwargs, error)
        return False
    return True


def enqueue_on_commit(task, **kwargs) -> None:
    """Queue `task` once the current transaction commits, never failing the caller."""
    transaction.on_commit(partial(enqueue, task, **kwargs))
