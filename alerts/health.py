"""The health endpoints for load balancers, orchestrators and monitoring.

- /healthz/live: liveness, the process answers (touches nothing else, so a database
  outage does not make an orchestrator restart every web process);
- /healthz/ready: readiness, the database and the broker are reachable (503 naming
  what is down), so a load balancer stops sending requests the app cannot serve;
- /healthz/: the same as ready, kept for existing monitors.
"""

from __future__ import annotations

import logging

from django.conf import settings
from django.db import connection
from django.http import HttpRequest, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET
from kombu import Connection

logger = logging.getLogger(__name__)


@never_cache
@require_GET
def live(request: HttpRequest) -> JsonResponse:
    """The process answers."""
    return JsonResponse({"status": "ok"})


@never_cache
@require_GET
def ready(request: HttpRequest) -> JsonResponse:
    """Database and broker reachability: 200, or 503 naming what is down."""
    return healthz(request)


@never_cache
@require_GET
def healthz(request: HttpRequest) -> JsonResponse:
    """Database and broker reachability, for load balancers and monitoring."""
    checks = {"database": _check_database(), "broker": _check_broker()}
    healthy = all(value == "ok" for value in checks.values())
    return JsonResponse({"status": "ok" if healthy else "error", **checks},
                        status=200 if healthy else 503)


def _check_database() -> str:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        return "ok"
    except Exception as exc:  # noqa: BLE001  (report, don't crash, the health check)
        logger.warning("Health check: database unreachable: %s", exc)
        return "unreachable"


def _check_broker() -> str:
    try:
        with Connection(settings.CELERY_BROKER_URL, connect_timeout=2) as conn:
            conn.ensure_connection(max_retries=1, timeout=2)
        return "ok"
    except Exception as exc:  # noqa: BLE001
        logger.warning("Health check: broker unreachable: %s", exc)
        return "unreachable"
