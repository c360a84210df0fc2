"""Failover to a second provider (EMAIL_BACKEND_FALLBACK) when the primary keeps failing.

The primary's health is one record in Redis per provider account, shared by every
worker: since when its calls have been failing with no call getting through in
between. Every transient failure of a primary call (`primary_failed`) returns how long
that has been; any call that gets through (`primary_succeeded`) clears it. Once it has
been failing for FAILOVER_AFTER_SECONDS (5xx, timeouts, network errors; 429s only
after FAILOVER_AFTER_RATE_LIMITED_SECONDS, since a 429 means the provider is up and
we are too fast for it), the owner of the batch that saw it (its alert or digest run)
goes over to the fallback (`fail_over_if_due`: Alert.failover_at or
DigestRun.failover_at, set once by the owner's caller) and the rest of its batches
are sent there.

The decision is per owner, never a global switch: a new alert or digest run always
tries the primary first, so the primary gets it back as soon as it answers again.
While the record says the primary is down (an owner failed over in the last
DOWN_REMEMBERED_SECONDS and nothing got through since), the first failure of a new
owner's batch fails it over at once instead of waiting the whole delay again: that
one failed call is the probe.

Failures are only "sustained" while they keep coming: a record whose last failure is
older than FAILOVER_AFTER_SECONDS plus the longest retry delay starts over, so that a
blip an hour ago does not count toward an outage now.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable

import redis
from django.conf import settings

from .batches import BatchOwner, wake_waiting
from .provider import TransientSendError, sending_profile
from .throttle import _redis, account_key

logger = logging.getLogger(__name__)

# An alert or digest run failed over this recently, and no call has got through
# since: a new one's first failed call is enough to send it to the fallback too.
DOWN_REMEMBERED_SECONDS = 3600
DOWN = 1e9  # "failing for ever": the primary is known to be down

_FAILED = """
local now_parts = redis.call('TIME')
local now = tonumber(now_parts[1]) + tonumber(now_parts[2]) / 1000000
local state = redis.call('HMGET', KEYS[1], 'since', 'last', 'down')
local since, last, down = tonumber(state[1]), tonumber(state[2]), tonumber(state[3])
if down and now - down < tonumber(ARGV[2]) then
  redis.call('HSET', KEYS[1], 'last', tostring(now))
  return tostring(ARGV[3])
end
if not since or not last or now - last > tonumber(ARGV[1]) then since = now end
redis.call('HSET', KEYS[1], 'since', tostring(since), 'last', tostring(now))
redis.call('HDEL', KEYS[1], 'down')
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[2]))
return tostring(now - since)
"""


def enabled() -> bool:
    """Whether a fallback provider is configured."""
    return bool(settings.EMAIL_BACKEND_FALLBACK)


def fallback_backend() -> str:
    return settings.EMAIL_BACKEND_FALLBACK


def _key() -> str:
    profile = sending_profile()
    return "stoppress:failover:" + account_key(profile.backend_path, profile.esp_name).rsplit(":", 1)[-1]


def primary_failed() -> float:
    """Record a transient failure of a primary call; the seconds the primary has been
    failing without a call getting through (DOWN if it is known to be down), or 0.0
    when Redis cannot say (no failover without the shared record)."""
    gap = settings.FAILOVER_AFTER_SECONDS + settings.RETRY_MAX_DELAY_SECONDS
    try:
        return float(_redis().eval(_FAILED, 1, _key(), gap, DOWN_REMEMBERED_SECONDS, DOWN))
    except redis.RedisError:
        logger.warning("Failover record unavailable; staying on the primary provider", exc_info=True)
        return 0.0


def primary_succeeded() -> None:
    """A primary call got through: the primary is up."""
    try:
        _redis().delete(_key())
    except redis.RedisError:
        logger.warning("Could not clear the failover record", exc_info=True)


def mark_down() -> None:
    """An owner has failed over: new owners' first failure fails them over at once."""
    try:
        _redis().hset(_key(), "down", _redis().time()[0])
    except redis.RedisError:
        logger.warning("Could not mark the primary provider down", exc_info=True)


def threshold(rate_limited: bool) -> float:
    """How long the primary must fail before an owner goes to the fallback."""
    return settings.FAILOVER_AFTER_RATE_LIMITED_SECONDS if rate_limited else settings.FAILOVER_AFTER_SECONDS


def seconds_left(failing_for: float, rate_limited: bool) -> float:
    """Seconds until an owner whose primary has failed for `failing_for` fails over (0:
    now). A failed batch retries no later than that, so that some batch is there to
    make the switch when it is due."""
    return max(threshold(rate_limited) - failing_for, 0.0)


def fail_over_if_due(owner: BatchOwner, error: TransientSendError, *, switch: Callable[[], bool],
                     task_name: str) -> float:
    """The primary failed a batch of `owner`: once it has been failing for the failover
    delay, send the rest of the owner through the fallback. `switch()` is the caller's
    own conditional update of its alert or digest run (set failover_at if unset; True
    if this call set it), so the engine never learns which it is; the first switch
    marks the primary down and wakes every batch of the owner waiting for a retry
    (`task_name` sends one). The most the failed batch's retry may wait: 0 once the
    owner goes to the fallback, else until the failover is due."""
    left = seconds_left(primary_failed(), error.rate_limited)
    if left > 0:
        return left + random.uniform(0.05, 0.5)
    if switch():
        logger.warning("%s: the primary provider has been failing (%s); the rest goes through %s",
                       owner, error, fallback_backend())
        mark_down()
        wake_waiting(owner, task_name)
    return 0.0
