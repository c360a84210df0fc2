"""System checks for configuration that would otherwise fail quietly."""

from __future__ import annotations

import ipaddress

from django.conf import settings
from django.core.checks import Error, Tags, register, run_checks
from django.core.exceptions import ImproperlyConfigured


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


# Hosts that only ever name this machine or a private network: DEBUG is for these.
LOCAL_SUFFIXES = (".localhost", ".local", ".test", ".internal", ".example", ".invalid")
LOCAL_NAMES = {"localhost", "testserver"}


def is_local_host(host: str) -> bool:
    """Whether an ALLOWED_HOSTS entry can only be this machine or a private network
    (loopback and private addresses, localhost, reserved names). `*` is public."""
    name = host.strip().lower().rstrip(".")
    if name.startswith("[") and name.endswith("]"):
        name = name[1:-1]
    try:
        address = ipaddress.ip_address(name)
    except ValueError:
        return name in LOCAL_NAMES or name.lstrip(".").endswith(LOCAL_SUFFIXES) or \
            name.lstrip(".") in {suffix[1:] for suffix in LOCAL_SUFFIXES}
    return address.is_loopback or address.is_private or address.is_link_local


@register(Tags.security)
def debug_is_local_only(app_configs, **kwargs) -> list[Error]:
    """DEBUG serves tracebacks with settings in them, the development mailbox, and runs
    on the public development keys (SECRET_KEY and EMAIL_HASH_KEY defaults anyone can
    read here): a site that answers a public name must never run with it."""
    if not settings.DEBUG:
        return []
    public = [host for host in settings.ALLOWED_HOSTS if not is_local_host(host)]
    if not public:
        return []
    return [Error(
        f"DEBUG is on while ALLOWED_HOSTS names a public host ({', '.join(public)}).",
        hint="Unset DEBUG in production; DEBUG=1 is for localhost only.",
        id="stoppress.E004",
    )]


@register()
def fallback_provider_loads(app_configs, **kwargs) -> list[Error]:
    """A fallback provider that cannot even be loaded would only be found out in the
    outage it is there for."""
    path = settings.EMAIL_BACKEND_FALLBACK
    if not path:
        return []
    from django.utils.module_loading import import_string

    try:
        import_string(path)
    except ImportError as error:
        return [Error(f"EMAIL_BACKEND_FALLBACK cannot be loaded: {error}",
                      hint="Name an email backend class, e.g. anymail.backends.sendgrid.EmailBackend.",
                      id="stoppress.E020")]
    return []


def refuse_to_start_on_security_errors() -> None:
    """For servers that run no checks of their own (gunicorn loads config.wsgi):
    raise ImproperlyConfigured on any security error, as `runserver` and `migrate`
    would stop on it."""
    errors = [error for error in run_checks(tags=[Tags.security]) if error.is_serious()]
    if errors:
        raise ImproperlyConfigured("; ".join(f"{error.id}: {error.msg}" for error in errors))
