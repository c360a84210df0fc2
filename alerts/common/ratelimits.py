"""Rate limits: per client on the forms anyone can post (answered 429), and per
address on the mail a form can make us send (list-bombing defence).

The per-address limits are checked where the mail is sent, never in the response, so
they reveal nothing about whether an address is known. Counters live in the cache's
Redis database, not the broker's.
"""

from __future__ import annotations

from django.conf import settings
from django.core.cache import cache
from django_ratelimit.decorators import ratelimit

from .network import ratelimit_key

# The signup page, the embedded form and the JSON endpoint are one door with three
# handles: they share this group, so a client has one budget across all three.
SIGNUP = "stoppress.signup"


def per_client_limit(group: str | None = None):
    """SIGNUP_RATE_PER_IP POSTs per client (network.client_address) per `group`; the
    view's own name when None. Past it, RATELIMIT_VIEW answers 429."""
    return ratelimit(group=group, key=ratelimit_key, rate=lambda g, r: settings.SIGNUP_RATE_PER_IP,
                     method="POST", block=True)

DAY = 24 * 3600


def allow_confirmation_email(email_hmac: str, *, kind: str = "signup") -> bool:
    """True if one more confirmation may go to this address now (at most one per
    CONFIRM_COOLDOWN_SECONDS and CONFIRM_DAILY_LIMIT per day); counts it if so.

    Signups and marketing ticked in the preference centre count separately, so a
    reader who confirms and then ticks the box at once is not held back."""
    return _allow(f"confirm:{kind}", email_hmac, settings.CONFIRM_COOLDOWN_SECONDS,
                  settings.CONFIRM_DAILY_LIMIT)


def allow_preferences_email(email_hmac: str) -> bool:
    """True if one more preferences-link email may go to this address now (at most one
    per PREFERENCES_LINK_COOLDOWN_SECONDS and PREFERENCES_LINK_DAILY_LIMIT per day)."""
    return _allow("prefs", email_hmac, settings.PREFERENCES_LINK_COOLDOWN_SECONDS,
                  settings.PREFERENCES_LINK_DAILY_LIMIT)


def allow_data_link_email(email_hmac: str, purpose: str) -> bool:
    """True if one more download or erasure link may go to this address now (the same
    limits as preferences links, counted per purpose)."""
    return _allow(f"data-{purpose}", email_hmac, settings.PREFERENCES_LINK_COOLDOWN_SECONDS,
                  settings.PREFERENCES_LINK_DAILY_LIMIT)


def _allow(kind: str, email_hmac: str, cooldown: int, daily_limit: int) -> bool:
    if not cache.add(f"{kind}-cooldown:{email_hmac}", 1, timeout=cooldown):
        return False
    day_key = f"{kind}-day:{email_hmac}"
    cache.add(day_key, 0, timeout=DAY)
    return cache.incr(day_key) <= daily_limit
