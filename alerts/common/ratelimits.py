"""Rate limits: per client on the forms anyone can post (answered 429), and per
address on the mail a form can make us send (list-bombing defence).

The per-address limits are checked where the mail is sent, never in the response, so
they reveal nothing about whether an address is known. Counters live in the cache's
Redis database, not the broker's.

When that Redis cannot be reached, a form must still be accepted: the per-client
limits fall back to a counter in each web process's own memory (`LocalWindow`), with
a warning in the log, so a reader is never shown an error page because Redis blinked
and a flood is still slowed (each process counts on its own, so the limit is looser by
the number of processes for as long as Redis is away).
"""

from __future__ import annotations

import hashlib
import logging
import re
import threading
import time
from functools import wraps

from django.conf import settings
from django.core.cache import cache
from django_ratelimit.exceptions import Ratelimited
from redis.exceptions import RedisError

from .network import ratelimit_key
from .queueing import NUDGE_TTL, nudge_key
from .redis_cache import raw_client, raw_key

logger = logging.getLogger(__name__)

# The signup page, the embedded form and the JSON endpoint are one door with three
# handles: they share this group, so a client has one budget across all three.
SIGNUP = "stoppress.signup"


def per_client_limit(group: str | None = None, *, nudge: str | None = None):
    """SIGNUP_RATE_PER_IP POSTs per client (network.client_address) per `group`; the
    view's own name when None. Past it, RATELIMIT_VIEW answers 429. Counted in Redis
    (a fixed window, as django-ratelimit counts), or in this process's memory while
    Redis cannot be reached.

    `nudge` names a drain task whose nudge key (queueing.nudge_key) is set in the same
    round trip as the count: `request.drain_nudge` is then True if this request set
    it (and must queue the drain once it has committed), False if a drain was already
    queued, None if Redis could not be reached."""

    def decorator(view):
        name = group or f"{view.__module__}.{view.__qualname__}"

        @wraps(view)
        def limited(request, *args, **kwargs):
            if request.method == "POST":
                over, request.drain_nudge = _count(request, name, nudge)
                if over:
                    raise Ratelimited()
            return view(request, *args, **kwargs)

        return limited

    return decorator


EXPIRATION_FUDGE = 5  # seconds a window's counter outlives it, as django-ratelimit keeps


def _count(request, group: str, nudge: str | None) -> tuple[bool, bool | None]:
    """(over the limit, nudge key set by us) in one Redis round trip."""
    rate = settings.SIGNUP_RATE_PER_IP
    limit, period = split_rate(rate)
    client = ratelimit_key(group, request)
    window = int(time.time()) // period
    key = raw_key("rl:" + hashlib.sha256(f"{group}|{client}|{rate}|{window}".encode()).hexdigest())
    keys = [key, nudge_key(nudge)] if nudge else [key]
    try:
        count, nudged = _script(raw_client(), COUNT_SCRIPT)(keys=keys, args=[period + EXPIRATION_FUDGE, NUDGE_TTL])
    except RedisError as error:
        _warn_redis_down(error)
        return _local.over(f"{group}:{client}", rate), None
    return count > limit, bool(nudged) if nudge else None


# The count, its expiry and the nudge as one command: a pipeline of three costs the
# web process three commands to pack and three replies to parse, and this is on
# every signup. The window's key expires from its first count (a fixed window, as
# django-ratelimit keeps). KEYS: the window's counter, then the nudge key if any.
COUNT_SCRIPT = """
local count = redis.call('INCR', KEYS[1])
if count == 1 then redis.call('EXPIRE', KEYS[1], ARGV[1]) end
local nudged = 0
if KEYS[2] and redis.call('SET', KEYS[2], 1, 'NX', 'EX', ARGV[2]) then nudged = 1 end
return {count, nudged}
"""
_scripts: dict[tuple[int, str], object] = {}


def _script(client, source: str):
    # redis-py's Script sends EVALSHA, and the script itself once if this Redis has
    # not seen it (a restarted Redis forgets scripts): one round trip as a rule.
    script = _scripts.get((id(client), source))
    if script is None:
        script = _scripts[(id(client), source)] = client.register_script(source)
    return script


class LocalWindow:
    """A fixed-window counter in this process's memory: the fallback while Redis is
    down. Bounded: every window starts with an empty table."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._window: tuple[int, int] = (0, 0)
        self._counts: dict[str, int] = {}

    def over(self, key: str, rate: str) -> bool:
        limit, period = split_rate(rate)
        window = (period, int(time.time()) // period)
        with self._lock:
            if window != self._window or len(self._counts) > 100_000:
                self._window, self._counts = window, {}
            count = self._counts[key] = self._counts.get(key, 0) + 1
        return count > limit


_local = LocalWindow()
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_RATE = re.compile(r"^(\d+)/(\d*)([smhd])$")


def split_rate(rate: str) -> tuple[int, int]:
    """"10/h" -> (10, 3600); "5/10m" -> (5, 600): django-ratelimit's notation."""
    match = _RATE.match(rate.strip())
    if not match:
        raise ValueError(f"not a rate: {rate!r}")
    return int(match[1]), int(match[2] or 1) * _UNITS[match[3]]


_last_warning = [0.0]


def _warn_redis_down(error: Exception) -> None:
    # Once every 10 seconds at most: at hundreds of signups a second, one line each
    # would bury everything else in the log.
    now = time.monotonic()
    if now - _last_warning[0] > 10:
        _last_warning[0] = now
        logger.warning("Rate limits counted in process memory: the cache's Redis is unreachable (%s)", error)

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


def release_preferences_email(email_hmac: str) -> None:
    """Give back what allow_preferences_email counted, for an email that then could not
    be sent."""
    cache.delete(f"prefs-cooldown:{email_hmac}")
    try:
        cache.decr(f"prefs-day:{email_hmac}")
    except ValueError:
        pass


def allow_data_link_email(email_hmac: str, purpose: str) -> bool:
    """True if one more download or erasure link may go to this address now (the same
    limits as preferences links, counted per purpose)."""
    return _allow(f"data-{purpose}", email_hmac, settings.PREFERENCES_LINK_COOLDOWN_SECONDS,
                  settings.PREFERENCES_LINK_DAILY_LIMIT)


def allow_confirmation_emails(requests: list[tuple[str, str]]) -> list[bool]:
    """allow_confirmation_email for many (email_hmac, kind) at once, in one round trip
    and one command (a script) instead of three commands per address: the outbox
    reserves a whole provider batch of a thousand this way, and packing and parsing
    three thousand commands in Python cost more than the send. The same keys and
    values as the one-at-a-time path."""
    keys = []
    for email_hmac, kind in requests:
        keys += [cache.make_key(f"confirm:{kind}-cooldown:{email_hmac}"), cache.make_key(f"confirm:{kind}-day:{email_hmac}")]
    verdicts = _script(raw_client(), RESERVE_SCRIPT)(
        keys=keys, args=[settings.CONFIRM_COOLDOWN_SECONDS, DAY, settings.CONFIRM_DAILY_LIMIT])
    return [bool(verdict) for verdict in verdicts]


# KEYS: a (cooldown, day counter) pair per address. An address passes if its
# cooldown key was not set (and is now), and its day's count, now one more, is
# within the limit; as _allow below, key for key.
RESERVE_SCRIPT = """
local verdicts = {}
for i = 1, #KEYS, 2 do
  local ok = 0
  if redis.call('SET', KEYS[i], 1, 'NX', 'EX', ARGV[1]) then
    redis.call('SET', KEYS[i + 1], 0, 'NX', 'EX', ARGV[2])
    if redis.call('INCR', KEYS[i + 1]) <= tonumber(ARGV[3]) then ok = 1 end
  end
  verdicts[#verdicts + 1] = ok
end
return verdicts
"""


def release_confirmation_email(email_hmac: str, *, kind: str = "signup") -> None:
    """Give back what allow_confirmation_email counted, for an email that then could
    not be sent (the provider failed): the cooldown counts emails sent, not tried."""
    cache.delete(f"confirm:{kind}-cooldown:{email_hmac}")
    try:
        cache.decr(f"confirm:{kind}-day:{email_hmac}")
    except ValueError:  # the day's counter expired meanwhile: nothing to give back
        pass


def _allow(kind: str, email_hmac: str, cooldown: int, daily_limit: int) -> bool:
    if not cache.add(f"{kind}-cooldown:{email_hmac}", 1, timeout=cooldown):
        return False
    day_key = f"{kind}-day:{email_hmac}"
    cache.add(day_key, 0, timeout=DAY)
    return cache.incr(day_key) <= daily_limit
