"""The reader's URLs. The unsubscribe URL is also the List-Unsubscribe one-click URL
in every alert and digest; every page reached from an email carries a signed token."""

from __future__ import annotations

from django.urls import path

from . import health
from .archive import feeds as archive_feeds
from .archive import views as archive
from .observability import views as observability
from .rights import views as rights
from .signup import views as signup
from .subscribers import views as subscribers

app_name = "alerts"

urlpatterns = [
    path("", signup.signup, name="signup"),
    path("embed/", signup.embed, name="embed"),
    path("api/subscribe", signup.api_subscribe, name="api_subscribe"),
    path("confirm/<str:token>/", signup.confirm, name="confirm"),
    path("confirm/<str:token>/resend/", signup.confirm_resend, name="confirm_resend"),
    path("privacy/", rights.privacy, name="privacy"),
    path("healthz/", health.healthz, name="healthz"),
    path("healthz/live", health.live, name="healthz_live"),
    path("healthz/ready", health.ready, name="healthz_ready"),
    path("metrics", observability.metrics, name="metrics"),
    path("u/<str:token>/", subscribers.unsubscribe, name="unsubscribe"),
    path("u/<str:token>/undo/", subscribers.unsubscribe_undo, name="unsubscribe_undo"),
    path("still-subscribed/<str:token>/", subscribers.reengage_keep, name="reengage_keep"),
    path("preferences/", subscribers.preferences_request, name="preferences_request"),
    path("preferences/<str:token>/", subscribers.preferences, name="preferences"),
    path("preferences/<str:token>/data/", rights.data_request, name="data_request"),
    path("data/<str:token>/", rights.data_export, name="data_export"),
    path("data/<str:token>/erase/", rights.erase, name="erase"),
    path("alerts/", archive.index, name="archive"),
    path("alerts/<int:pk>/", archive.alert_page, name="archive_alert"),
    path("alerts/feed/rss/", archive_feeds.AlertsFeed(), name="archive_rss"),
    path("alerts/feed/atom/", archive_feeds.AtomAlertsFeed(), name="archive_atom"),
]
