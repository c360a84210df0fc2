"""The ids a log line is about (alert, batch, task), carried in a context variable
and added to every record by ContextFilter, so that the JSON logs of a batch's send
can be found by its alert's id without every log call naming it.

Celery's task_prerun binds the task's id and its alert_id/batch_id arguments; code
that learns more (a batch's alert) binds it too; task_postrun clears it. Imports
nothing of the app: the logging configuration loads it before Django is ready.
"""

from __future__ import annotations

import logging
from contextvars import ContextVar

FIELDS = ("alert_id", "batch_id", "task_id", "task")

_ids: ContextVar[dict | None] = ContextVar("stoppress_log_ids", default=None)


def bind(**ids) -> None:
    """Add ids to the current context (None values are ignored)."""
    current = dict(_ids.get() or {})
    current.update({key: value for key, value in ids.items() if value is not None})
    _ids.set(current)


def clear() -> None:
    _ids.set(None)


def current() -> dict:
    return dict(_ids.get() or {})


class ContextFilter(logging.Filter):
    """Adds alert_id, batch_id, task_id and task to every record (None where unknown)."""

    def filter(self, record: logging.LogRecord) -> bool:
        ids = _ids.get() or {}
        for name in FIELDS:
            if not hasattr(record, name):
                setattr(record, name, ids.get(name))
        return True
