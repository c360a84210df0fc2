from __future__ import annotations

from django.conf import settings
from django.contrib import admin
from django.urls import include, path

urlpatterns = [
    path("admin/", admin.site.urls),
    # Anymail's tracking webhooks, with replay protection (alerts/webhooks.py).
    path("anymail/", include("alerts.webhooks")),
    path("", include("alerts.urls")),
]

if settings.DEBUG:
    urlpatterns += [path("dev/", include("alerts.dev.urls"))]
