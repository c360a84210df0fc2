"""One bounded per-process cache, for what a worker would otherwise read or build once
per batch: a published alert, its audience SQL, its rendering, a provider connection.

Each cache is keyed by everything that could change the value (an alert's id and its
`updated_at`, say), so an entry never goes stale; it is only ever too many. When full,
it is emptied whole: simpler than LRU bookkeeping, and refilling costs one read.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

V = TypeVar("V")

_all: list[ProcessCache] = []


class ProcessCache(Generic[V]):
    """A dict that lives as long as the process and holds at most `size` entries."""

    def __init__(self, name: str, size: int) -> None:
        self.name, self.size = name, size
        self._entries: dict[Hashable, V] = {}
        _all.append(self)

    def get(self, key: Hashable, build: Callable[[], V]) -> V:
        """The value for `key`, built (and kept) on first use."""
        try:
            return self._entries[key]
        except KeyError:
            pass
        if len(self._entries) >= self.size:
            self._entries.clear()
        value = self._entries[key] = build()
        return value

    def pop(self, key: Hashable) -> V | None:
        """Forget `key` (a connection that broke, say); its value, if there was one."""
        return self._entries.pop(key, None)

    def clear(self) -> None:
        self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)


def clear_all() -> None:
    """Empty every process cache (tests; a worker never needs to)."""
    for cache in _all:
        cache.clear()
