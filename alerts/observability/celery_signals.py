"""Celery's task signals: each task's duration into the stoppress_task_seconds
histogram (alerts.send_batch's is a batch's send), and its ids into the log context."""

from __future__ import annotations

import time

from celery.signals import task_postrun, task_prerun

from ..common import metrics
from . import logcontext

_started: dict[str, float] = {}


@task_prerun.connect(dispatch_uid="stoppress.observability.prerun")
def task_started(task_id: str | None = None, task=None, kwargs: dict | None = None, **extra) -> None:
    kwargs = kwargs or {}
    logcontext.clear()
    logcontext.bind(task_id=task_id, task=getattr(task, "name", None),
                    alert_id=kwargs.get("alert_id"), batch_id=kwargs.get("batch_id"))
    if task_id:
        _started[task_id] = time.monotonic()


@task_postrun.connect(dispatch_uid="stoppress.observability.postrun")
def task_finished(task_id: str | None = None, task=None, **extra) -> None:
    started = _started.pop(task_id, None) if task_id else None
    if started is not None and task is not None:
        metrics.TASK_SECONDS.labels(task=task.name).observe(time.monotonic() - started)
    logcontext.clear()
