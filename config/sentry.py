"""Error reporting to Sentry, for the web app and the workers, when SENTRY_DSN is set;
nothing at all when it is not.

No personal data leaves: send_default_pii is off (no cookies, no user, no client IP)
and every string of an event (messages, exception values, breadcrumbs, local
variables, request data) has anything shaped like an email address replaced before it
is sent. Readers' addresses are what this service holds; an error report is no place
for them.
"""

from __future__ import annotations

import re

# Deliberately wide: a false positive costs a word of an error report; a miss leaks an address.
ADDRESS = re.compile(r"[^\s<>\"'(),;:@\[\]]+@[^\s<>\"'(),;:@\[\]]+")
# The same, percent-encoded, as in a query string (email=alice%40example.com).
ENCODED_ADDRESS = re.compile(r"[^\s<>\"'(),;:@&=?/\[\]]+%40[^\s<>\"'(),;:@&=?/\[\]]+", re.IGNORECASE)
REPLACEMENT = "[address]"
# Deeper than any real event; a cycle or a pathological structure stops here.
MAX_DEPTH = 40


def init_sentry(*, dsn: str, environment: str = "", release: str = "", traces_sample_rate: float = 0.0) -> bool:
    """Start the SDK with its Django and Celery integrations. False (and nothing done)
    without a DSN."""
    if not dsn:
        return False
    import sentry_sdk
    from sentry_sdk.integrations.celery import CeleryIntegration
    from sentry_sdk.integrations.django import DjangoIntegration

    sentry_sdk.init(
        dsn=dsn, environment=environment or None, release=release or None,
        integrations=[DjangoIntegration(), CeleryIntegration()],
        send_default_pii=False, traces_sample_rate=traces_sample_rate,
        before_send=scrub_event, before_send_transaction=scrub_event, before_breadcrumb=scrub_breadcrumb,
    )
    return True


def scrub_event(event: dict, hint: dict | None = None) -> dict:
    """The event with every email address in it replaced."""
    return scrub(event)


def scrub_breadcrumb(crumb: dict, hint: dict | None = None) -> dict:
    return scrub(crumb)


def scrub(value, depth: int = 0):
    if depth > MAX_DEPTH:
        return None
    if isinstance(value, str):
        if "@" in value:
            value = ADDRESS.sub(REPLACEMENT, value)
        return ENCODED_ADDRESS.sub(REPLACEMENT, value) if "%40" in value else value
    if isinstance(value, dict):
        return {scrub(key, depth + 1): scrub(item, depth + 1) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(scrub(item, depth + 1) for item in value)
    return value
