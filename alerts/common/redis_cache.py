"""Django's Redis cache backend, keeping its redis-py client objects.

Django's RedisCacheClient builds a new `redis.Redis` for every cache call. Its pool
(the connections) is kept, but redis-py 8 fills a case-insensitive table of some 170
response callbacks in every new client: about 0.2 ms of CPU a call, and a signup
makes two (its rate limit and the drain's nudge), 0.4 ms of a request that otherwise
costs about 1.5 ms of Python. A redis-py client is thread-safe and holds nothing but
its pool, so one per pool serves every call.
"""

from __future__ import annotations

import redis
from django.conf import settings
from django.core.cache.backends.redis import RedisCache as DjangoRedisCache
from django.core.cache.backends.redis import RedisCacheClient as DjangoRedisCacheClient


class RedisCacheClient(DjangoRedisCacheClient):
    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._clients: dict[int, object] = {}

    def get_client(self, key=None, *, write=False):
        pool = self._get_connection_pool(write)
        client = self._clients.get(id(pool))
        if client is None:
            client = self._clients[id(pool)] = self._client(connection_pool=pool)
        return client


class RedisCache(DjangoRedisCache):
    def __init__(self, server, params) -> None:
        super().__init__(server, params)
        self._class = RedisCacheClient


_raw_clients: dict[tuple, redis.Redis] = {}


def raw_client() -> redis.Redis:
    """A redis-py client of the cache's Redis (same database and timeouts), for the few
    callers that need several commands in one round trip (a pipeline): the signup's
    rate limit and drain nudge. Keys made with `raw_key` share the cache's prefix."""
    config = settings.CACHES["default"]
    options = config.get("OPTIONS", {})
    key = (config["LOCATION"], tuple(sorted(options.items())))
    client = _raw_clients.get(key)
    if client is None:
        client = _raw_clients[key] = redis.Redis.from_url(config["LOCATION"], **options)
    return client


def raw_key(name: str) -> str:
    return f"{settings.CACHES['default'].get('KEY_PREFIX', '')}:raw:{name}"
