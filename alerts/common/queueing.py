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
import time
from functools import partial

from celery import current_app
from django.db import transaction
from kombu.exceptions import OperationalError
from redis.exceptions import RedisError

from .redis_cache import raw_client, raw_key

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


# --- Nudging a drain ---------------------------------------------------------------
# Work recorded in the database (signups, outbox emails) is not queued one message per
# row: a task drains the rows in batches, and a request only makes sure one drain is
# queued. The key below is set while a drain is queued and not yet started; the drain
# deletes it as it starts, before it reads, so a row committed while the key was set
# is always seen by that drain. The key expires by itself in case the message that
# set it was lost; the sweeper finds anything left behind.
NUDGE_TTL = 2  # seconds


def nudge_key(task_name: str) -> str:
    """The Redis key (raw_client) set while a drain of `task_name` is queued."""
    return raw_key(f"nudge:{task_name}")


def nudge(task_name: str) -> bool:
    """Queue `task_name` unless a copy is already queued and not started. One Redis
    round trip for most callers, and never raises: with Redis down it returns False
    at once and the sweeper queues the drain when Redis is back."""
    try:
        if not raw_client().set(nudge_key(task_name), 1, nx=True, ex=NUDGE_TTL):
            return False
    except RedisError as error:
        warn_unqueued(task_name, error)
        return False
    return enqueue(task_name)


def nudge_on_commit(task_name: str, *, reserved: bool | None = None) -> None:
    """After the commit: nudge (reserved None); queue the drain, the caller having set
    the nudge key itself in an earlier round trip (True); or nothing, the key being
    set already, so a drain is queued that will see this commit (False)."""
    if reserved is None:
        transaction.on_commit(partial(nudge, task_name))
    elif reserved:
        transaction.on_commit(partial(enqueue, task_name))


def nudged(task_name: str) -> None:
    """Called by the drain as it starts: from now on a new row needs a new nudge."""
    try:
        raw_client().delete(nudge_key(task_name))
    except RedisError:
        pass


_last_warning: dict[str, float] = {}


def warn_unqueued(task_name: str, error: Exception) -> None:
    # Once every 10 seconds per task at most: at hundreds of signups a second a line
    # each would bury the log.
    now = time.monotonic()
    if now - _last_warning.get(task_name, 0.0) > 10:
        _last_warning[task_name] = now
        logger.warning("Could not nudge %s (%s): the sweeper will queue it", task_name, error)
