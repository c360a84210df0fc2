from __future__ import annotations

from django.urls import path

from . import views

urlpatterns = [
    path("mail/", views.mailbox, name="dev_mailbox"),
    path("mail/<str:name>/", views.message_html, name="dev_message"),
    path("mail/<str:name>/raw", views.message_raw, name="dev_message_raw"),
]
