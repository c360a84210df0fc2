"""System checks for configuration that would otherwise fail quietly."""

from __future__ import annotations

from django.conf import settings
from django.core.checks import Error, Tags, register


@register(Tags.security, deploy=True)
def site_url_is_https(app_configs, **kwargs) -> list[Error]:
    if settings.SITE_URL.startswith("https://"):
        return []
    return [Error(
        "SITE_URL must be an https:// URL in production: List-Unsubscribe needs one.",
        id="stoppress.E001",
    )]
