from __future__ import annotations

from django.conf import settings
from django.contrib import admin
from django.urls import include, path

from alerts.api.views import api

urlpatterns = [
    path("admin/", admin.site.urls),
    # Anymail's tracking webhooks, with replay protection (alerts/webhooks.py).
    path("anymail/", include("alerts.webhooks")),
    # The publishing API: schema at /api/v1/openapi.json, interactive docs at /api/v1/docs.
    path("api/v1/", api.urls),
    path("", include("alerts.urls")),
]

if settings.DEBUG:
    urlpatterns += [path("dev/", include("alerts.dev.urls"))]
