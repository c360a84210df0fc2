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


def webhook_security_errors() -> list[Error]:
    """What is missing for provider webhooks to be safe to expose, if tracking is on."""
    if not settings.TRACKING_WEBHOOKS_ENABLED:
        return []
    errors = []
    if not settings.ANYMAIL.get("WEBHOOK_SECRET"):
        errors.append(Error(
            "Tracking webhooks are on but ANYMAIL['WEBHOOK_SECRET'] is empty: anyone could "
            "post forged bounces and complaints and suppress your readers.",
            hint="Set ANYMAIL_WEBHOOK_SECRET=user:password (or TRACKING_WEBHOOKS_ENABLED=0).",
            id="stoppress.E002",
        ))
    if "mailgun" in settings.TRACKING_WEBHOOK_ESPS and not settings.ANYMAIL.get(
        "MAILGUN_WEBHOOK_SIGNING_KEY"
    ):
        errors.append(Error(
            "Mailgun tracking is on but MAILGUN_WEBHOOK_SIGNING_KEY is empty.",
            hint="Copy the HTTP webhook signing key from the Mailgun dashboard.",
            id="stoppress.E003",
        ))
    return errors


@register(Tags.security)
def webhooks_are_authenticated(app_configs, **kwargs) -> list[Error]:
    # A normal check, so `migrate` and `runserver` refuse to run in production; DEBUG
    # (local development) may go without.
    return [] if settings.DEBUG else webhook_security_errors()


@register(Tags.security, deploy=True)
def webhooks_are_authenticated_for_deploy(app_configs, **kwargs) -> list[Error]:
    # `check --deploy` also runs the normal check above; only report here when that one
    # stayed quiet because of DEBUG, so each problem is listed once.
    return webhook_security_errors() if settings.DEBUG else []
