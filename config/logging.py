"""The logging configuration: plain lines for a terminal, or one JSON object per line
(LOG_FORMAT=json) for a log pipeline, each with the alert, batch and task ids of the
work it is about (alerts/observability/logcontext.py).

Used by Django (settings.LOGGING), by the Celery worker and beat (which are told not
to replace it: CELERY_WORKER_HIJACK_ROOT_LOGGER = False) and by gunicorn
(gunicorn.conf.py), so every process of a deployment logs alike.
"""

from __future__ import annotations

import logging

from pythonjsonlogger.json import JsonFormatter as _JsonFormatter

FORMATS = ("plain", "json")

# The recovery sweeps (sends, and outgoing webhooks) run every few seconds: Celery's
# own "received", "succeeded" and beat's "sending due task" lines for them would bury
# everything else. Each sweep logs for itself when it acted.
QUIET_TICKS = ("alerts.sweep_sends", "sweep-sends", "alerts.sweep_webhooks", "sweep-webhooks")


class JsonFormatter(_JsonFormatter):
    """python-json-logger's, without the ids that do not apply to this line."""

    def process_log_record(self, log_record: dict) -> dict:
        return {key: value for key, value in log_record.items() if value is not None}


class QuietTicks(logging.Filter):
    """Drops Celery's routine INFO lines about the periodic sweeps."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno > logging.INFO or not record.name.startswith("celery"):
            return True
        try:
            text = record.getMessage()
        except Exception:  # noqa: BLE001  (a bad record is logging's problem, not ours)
            return True
        return not any(name in text for name in QUIET_TICKS)


def logging_config(*, log_format: str = "plain", level: str = "INFO") -> dict:
    """A dictConfig for every process: one console handler on stderr."""
    if log_format not in FORMATS:
        raise ValueError(f"LOG_FORMAT must be one of {', '.join(FORMATS)}, not {log_format!r}")
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {
            "ids": {"()": "alerts.observability.logcontext.ContextFilter"},
            "quiet_ticks": {"()": "config.logging.QuietTicks"},
        },
        "formatters": {
            "plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"},
            "json": {
                "()": "config.logging.JsonFormatter",
                "format": "%(levelname)s %(name)s %(message)s %(process)d",
                "rename_fields": {"levelname": "level", "name": "logger"},
                "timestamp": "time",  # ISO 8601, UTC
            },
        },
        "handlers": {
            "console": {"class": "logging.StreamHandler", "formatter": log_format,
                        "filters": ["ids", "quiet_ticks"]},
        },
        "root": {"handlers": ["console"], "level": level},
        "loggers": {
            # Django's own handlers for these would print plain lines beside ours.
            "django.server": {"handlers": ["console"], "level": "INFO", "propagate": False},
            "gunicorn.error": {"handlers": ["console"], "level": level, "propagate": False},
            "gunicorn.access": {"handlers": ["console"], "level": level, "propagate": False},
            "py.warnings": {"handlers": ["console"], "level": "WARNING", "propagate": False},
        },
    }
