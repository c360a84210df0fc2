from __future__ import annotations

from django.urls import path

from . import dev_views

urlpatterns = [
    path("mail/", dev_views.mailbox, name="dev_mailbox"),
    path("mail/<str:name>/", dev_views.message_html, name="dev_message"),
    path("mail/<str:name>/raw", dev_views.message_raw, name="dev_message_raw"),
]
