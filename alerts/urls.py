from __future__ import annotations

from django.urls import path

from . import subscriber_views, views

app_name = "alerts"

urlpatterns = [
    path("", views.signup, name="signup"),
    path("embed/", views.embed, name="embed"),
    path("api/subscribe", views.api_subscribe, name="api_subscribe"),
    path("confirm/<str:token>/", views.confirm, name="confirm"),
    path("confirm/<str:token>/resend/", views.confirm_resend, name="confirm_resend"),
    path("privacy/", views.privacy, name="privacy"),
    path("healthz/", views.healthz, name="healthz"),
    # Subscriber control (alerts/subscriber_views.py). The unsubscribe URL is also the
    # List-Unsubscribe one-click URL in every alert and digest.
    path("u/<str:token>/", subscriber_views.unsubscribe, name="unsubscribe"),
    path("u/<str:token>/undo/", subscriber_views.unsubscribe_undo, name="unsubscribe_undo"),
    path("preferences/", subscriber_views.preferences_request, name="preferences_request"),
    path("preferences/<str:token>/", subscriber_views.preferences, name="preferences"),
    path("data/<str:token>/", subscriber_views.data_export, name="data_export"),
    path("data/<str:token>/erase/", subscriber_views.erase, name="erase"),
]
