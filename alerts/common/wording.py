"""The versioned wording readers are shown when we ask for consent.

Texts come from settings, so each newsroom words its own form; every distinct text
is stored once, immutably, and consent events point at the version shown.
"""

from __future__ import annotations

from django.conf import settings

from ..models import Wording
from .cache import ProcessCache

SIGNUP_HEADING = "Sign up to our free breaking news emails"


def alerts_text() -> str:
    return f"{SIGNUP_HEADING}. We will email you breaking news alerts from {settings.PUBLICATION_NAME}."


def marketing_label() -> str:
    return (
        "I would like to be emailed about offers, events and updates from "
        f"{settings.PUBLICATION_NAME}"
    )


PREFERENCES_HEADING = "Your email preferences"


def preferences_alerts_label() -> str:
    return f"Send me breaking news emails from {settings.PUBLICATION_NAME}"


def preferences_text() -> str:
    """Everything the preference centre shows a reader, as consent evidence."""
    return (
        f"{PREFERENCES_HEADING}. {preferences_alerts_label()}. Topics (none ticked means "
        "every topic). How often: as it happens, a daily digest or a weekly digest. "
        f"{marketing_label()}. Your time zone, used for digests."
    )


def current(kind: str) -> Wording:
    """The Wording row for the text now in force, created on first use."""
    text, version = _text_of(kind)
    digest = Wording.digest_for(kind, version, text)
    wording, _ = Wording.objects.get_or_create(
        digest=digest, defaults={"kind": kind, "version": version, "text": text}
    )
    return wording


# Wording rows are immutable and never deleted (consent events PROTECT them), so the id
# of a text, keyed by its digest, never goes stale: a signup resolves its texts without
# a query once its process has seen them.
_ids: ProcessCache[int] = ProcessCache("wording ids", size=64)


def current_id(kind: str) -> int:
    """The id of current(kind), from the per-process cache after the first call."""
    text, version = _text_of(kind)
    return _ids.get(Wording.digest_for(kind, version, text), lambda: current(kind).pk)


def _text_of(kind: str) -> tuple[str, str]:
    if kind == Wording.Kind.ALERTS:
        text, version = alerts_text(), ""
    elif kind == Wording.Kind.MARKETING:
        text, version = marketing_label(), ""
    elif kind == Wording.Kind.PREFERENCES:
        text, version = preferences_text(), ""
    elif kind == Wording.Kind.PRIVACY:
        text, version = settings.PRIVACY_NOTICE_TEXT, settings.PRIVACY_NOTICE_VERSION
    else:
        raise ValueError(f"no current wording for {kind!r}")
    return text, version
