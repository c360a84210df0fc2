"""The one per-process cache: built once per key, bounded, emptied whole when full."""

from __future__ import annotations

from alerts.common.cache import ProcessCache, clear_all


def test_it_builds_a_value_once_per_key():
    cache: ProcessCache[list[int]] = ProcessCache("test", size=4)
    builds = []
    for _ in range(3):
        value = cache.get("key", lambda: builds.append(1) or [1, 2])
    assert value == [1, 2]
    assert builds == [1]


def test_it_never_holds_more_than_its_size():
    cache: ProcessCache[int] = ProcessCache("test", size=3)
    for n in range(10):
        cache.get(n, lambda n=n: n * n)
        assert len(cache) <= 3
    assert cache.get(9, lambda: -1) == 81  # the latest entry survived the last clear


def test_a_popped_key_is_built_again():
    cache: ProcessCache[str] = ProcessCache("test", size=3)
    cache.get("connection", lambda: "first")
    assert cache.pop("connection") == "first"
    assert cache.pop("connection") is None
    assert cache.get("connection", lambda: "second") == "second"


def test_clear_all_empties_every_cache():
    one, two = ProcessCache("one", size=2), ProcessCache("two", size=2)
    one.get("a", lambda: 1)
    two.get("b", lambda: 2)
    clear_all()
    assert len(one) == len(two) == 0
