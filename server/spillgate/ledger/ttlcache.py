"""A small expiring, size-bounded cache (keys, budget snapshots and limits in the ledger)."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")


class TTLCache(Generic[K, V]):
    """A bounded map whose entries expire; `get` gives (value,) or None when absent/expired."""

    def __init__(self, ttl_s: float, max_entries: int = 10_000,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._ttl, self._max, self._clock = ttl_s, max_entries, clock
        self._items: OrderedDict[K, tuple[float, V]] = OrderedDict()

    def get(self, key: K) -> tuple[V] | None:
        hit = self._items.get(key)
        if hit is None or hit[0] < self._clock():
            return None
        return (hit[1],)

    def put(self, key: K, value: V, ttl_s: float | None = None) -> None:
        self._items[key] = (self._clock() + (self._ttl if ttl_s is None else ttl_s), value)
        self._items.move_to_end(key)
        while len(self._items) > self._max:
            self._items.popitem(last=False)

    def discard(self, key: K) -> None:
        self._items.pop(key, None)

    def clear(self) -> None:
        self._items.clear()
