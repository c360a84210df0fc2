"""Fixtures of the publishing tests: staff who may write alerts, and may publish them."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Permission, User


@pytest.fixture
def editor(client):
    """Can write drafts, cannot publish."""
    user = User.objects.create_user("writer", "writer@news.example.com", "pw", is_staff=True)
    user.user_permissions.set(Permission.objects.filter(codename__in=["add_alert", "change_alert", "view_alert"]))
    client.force_login(user)
    return user


@pytest.fixture
def publisher(editor):
    editor.user_permissions.add(Permission.objects.get(codename="publish_alert"))
    return editor
