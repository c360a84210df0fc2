"""The benchmark's yardstick: the least a Django signup view can do, behind the same
gunicorn and middleware as the app. It parses the same JSON, does one INSERT and one
Redis LPUSH, and answers. Mounted only by bench/signup.py (settings bench.bare_settings),
never by the production URLs."""

from __future__ import annotations

import json

import redis
from django.conf import settings
from django.db import connection
from django.http import HttpRequest, JsonResponse
from django.urls import path
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

TABLE = "bench_bare_signup"
_redis = redis.Redis.from_url(settings.CACHE_REDIS_URL)


@csrf_exempt
@require_POST
def bare_subscribe(request: HttpRequest) -> JsonResponse:
    payload = json.loads(request.body)
    # Exactly one statement, as the signup's: no CONN_HEALTH_CHECKS "SELECT 1" first
    # (alerts/signup/sql.py skips it the same way).
    connection.health_check_done = True
    with connection.cursor() as cursor:
        cursor.execute(f"INSERT INTO {TABLE} (email, client) VALUES (%s, %s)",  # noqa: S608
                       [payload["email"], request.META.get("HTTP_X_FORWARDED_FOR", "")])
    _redis.lpush("bench:bare", payload["email"])
    return JsonResponse({"ok": True})


urlpatterns = [path("api/subscribe", bare_subscribe)]
