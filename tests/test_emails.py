"""The email builders and renderers."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.django_db


def test_the_worker_preload_covers_every_email_template():
    # Run by the worker before it forks its pool: a template it misses is loaded by
    # every pool process on its first send instead, and a renamed one fails here.
    from pathlib import Path

    from django.conf import settings

    from alerts.emails import EMAIL_TEMPLATES, preload

    preload()
    on_disk = {f"emails/{path.name}" for path in (Path(settings.BASE_DIR) / "templates" / "emails").iterdir()}
    assert set(EMAIL_TEMPLATES) == on_disk
