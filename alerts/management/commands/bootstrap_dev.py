"""Prepare a local development database: a login for the admin, topics, demo content."""

from __future__ import annotations

import secrets

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand

from alerts.dev import demo


class Command(BaseCommand):
    help = "Create a local admin (printing its login), the standard topics and a demo alert."

    def handle(self, *args, **options) -> None:
        User = get_user_model()
        user = User.objects.filter(username="admin").first()
        if user is None:
            password = secrets.token_urlsafe(9)
            user = User.objects.create_superuser("admin", "admin@localhost", password)
            self.stdout.write(self.style.SUCCESS(f"Admin login: admin / {password}"))
        else:
            self.stdout.write("Admin login: admin (password as first printed; "
                              "change it with: .venv/bin/python manage.py changepassword admin)")
        demo.ensure_topics()
        demo.ensure_demo_alert(author=user)
