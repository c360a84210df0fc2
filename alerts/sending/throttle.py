"""The send rate of a provider account, shared by every worker on every host: a token
bucket in Redis, in recipients a second (EMAIL_SEND_RATE).

Before a call, `wait_for(key, n)` reserves n recipients' worth of tokens in one Lua
script (atomic, on Redis's clock, so hosts' clocks do not matter) and sleeps until
the bucket would have held them: callers queue up behind each other's reservations,
and the account sees the rate it was given, spread over all workers, instead of
bursts that come back as 429s. A 429 that still comes back (`slow_down`) halves the
rate for SLOW_DOWN_SECONDS, down to a tenth, and each window passes without one
lets it back up.
"""

from __future__ import annotations

import hashlib
import logging
import time

import redis
from django.conf import settings

from ..common.cache import ProcessCache

logger = logging.getLogger(__name__)

# A bucket holds at most one second of tokens: an idle account may take a second's
# worth at once, never more.
BURST_SECONDS = 1.0
SLOW_DOWN_SECONDS = 30
MIN_FACTOR = 0.1

_RESERVE = """
local now_parts = redis.call('TIME')
local now = tonumber(now_parts[1]) + tonumber(now_parts[2]) / 1000000
local factor = tonumber(redis.call('GET', KEYS[2]) or '1')
local rate = tonumber(ARGV[1]) * factor
local n = tonumber(ARGV[2])
local burst = math.max(rate * tonumber(ARGV[3]), 1)
local state = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens = tonumber(state[1]) or burst
local at = tonumber(state[2]) or now
tokens = math.min(burst, tokens + (now - at) * rate) - n
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'at', tostring(now))
redis.call('EXPIRE', KEYS[1], 3600)
if tokens >= 0 then return '0' end
return tostring(-tokens / rate)
"""

_clients: ProcessCache = ProcessCache("send-rate redis", size=2)


def _redis() -> redis.Redis:
    url = settings.CACHE_REDIS_URL
    return _clients.get(url, lambda: redis.Redis.from_url(url))


def rate_for(esp_name: str | None) -> float:
    """EMAIL_SEND_RATE for this provider (0: no limit). The setting is one number for
    any provider, or per provider: "Mailgun=500,SendGrid=1000,SMTP=3000"."""
    rates = settings.EMAIL_SEND_RATE
    if isinstance(rates, int | float):
        return float(rates)
    return float(rates.get((esp_name or "SMTP").lower(), 0))


def account_key(backend_path: str, esp_name: str | None) -> str:
    """One bucket per provider account: the backend and its settings (key, API URL)."""
    account = repr((backend_path, sorted(settings.ANYMAIL.items()), settings.EMAIL_HOST, settings.EMAIL_PORT))
    digest = hashlib.sha256(account.encode()).hexdigest()[:16]
    return f"stoppress:send-rate:{(esp_name or 'smtp').lower().replace(' ', '-')}:{digest}"


def wait_for(key: str, rate: float, recipients: int) -> float:
    """Reserve `recipients` tokens at `rate` a second and sleep until they are due.
    Returns the seconds slept."""
    if rate <= 0 or recipients <= 0:
        return 0.0
    try:
        wait = float(_redis().eval(_RESERVE, 2, key, key + ":factor", rate, recipients, BURST_SECONDS))
    except redis.RedisError:
        # Without Redis there is no shared bucket: send, as before the limit existed,
        # rather than hold a breaking alert back.
        logger.warning("Send-rate bucket %s unavailable; sending unthrottled", key, exc_info=True)
        return 0.0
    if wait > 0:
        time.sleep(wait)
    return wait


def slow_down(key: str) -> None:
    """The provider answered 429 despite the bucket: halve the rate for a while."""
    factor_key = key + ":factor"
    try:
        client = _redis()
        factor = float(client.get(factor_key) or 1)
        client.set(factor_key, max(factor / 2, MIN_FACTOR), ex=SLOW_DOWN_SECONDS)
    except redis.RedisError:
        logger.warning("Could not slow the send rate of %s down", key, exc_info=True)
