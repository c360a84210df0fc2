from __future__ import annotations

from django.apps import AppConfig


class AlertsConfig(AppConfig):
    name = "alerts"
    verbose_name = "Stop Press"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # Registers the system checks, connects the provider tracking receiver, and
        # registers every Celery task: services queue tasks by name, and only a worker
        # runs Celery's own autodiscovery, so a web process would not know the names.
        # Also connects the observability hooks on Celery's task signals.
        from . import checks, tasks, tracking  # noqa: F401
        from .observability import celery_signals  # noqa: F401
