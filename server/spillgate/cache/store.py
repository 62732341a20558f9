"""The response cache: answers by exact key, bounded in entries and bytes, with a time to
live; semantic entries are also in the per-scope vector index.

One process, one event loop: no locks. Eviction is least recently used; an entry past its
TTL is dropped when met. Every removal also removes the entry's row from the semantic index,
so the index never points at an answer that is gone.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Literal

import numpy as np
import orjson

from spillgate.cache.guards import Facts, disagreement
from spillgate.cache.index import GRAPH_FROM, SemanticIndex, Vector
from spillgate.cache.keys import CacheKeys
from spillgate.types import JSON

HitKind = Literal["exact", "semantic"]
Eviction = Literal["entries", "bytes", "ttl"]  # why an entry left before being replaced
_OVERHEAD_BYTES = 512  # bookkeeping per entry, counted against max_bytes


@dataclass(slots=True)
class Entry:
    answer: JSON  # choices (messages, finish reasons), usage, model
    avoided_usd: Decimal  # what the original request cost
    saved_tokens: int  # its prompt + completion tokens
    expires_at: float
    nbytes: int
    scope: str | None = None  # semantic entries: their index scope, slot and facts
    slot: int = -1
    facts: Facts | None = None


@dataclass(frozen=True, slots=True)
class Hit:
    entry: Entry
    kind: HitKind
    similarity: float = 1.0


class ResponseCache:
    def __init__(self, *, ttl_s: float, max_entries: int, max_bytes: int, dims: int,
                 clock: Callable[[], float] = time.monotonic,
                 graph_from: int = GRAPH_FROM) -> None:
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self._clock = clock
        self._entries: OrderedDict[str, Entry] = OrderedDict()
        self.index = SemanticIndex(dims, graph_from)
        self.nbytes = 0
        # Told of each eviction and each candidate a guard refused (the node's metrics).
        self.on_evict: Callable[[Eviction], None] = _ignore
        self.on_reject: Callable[[str], None] = _ignore

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: str) -> bool:
        return key in self._entries

    def entries(self) -> list[Entry]:
        return list(self._entries.values())

    def get(self, key: str) -> Entry | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        if entry.expires_at <= self._clock():
            self._drop(key)
            self.on_evict("ttl")
            return None
        self._entries.move_to_end(key)
        return entry

    def find(self, keys: CacheKeys, vector: Vector | None, facts: Facts | None,
             threshold: float) -> Hit | None:
        """The exact entry, else (with a vector) the most similar one in the scope that
        passes the guards."""
        entry = self.get(keys.exact)
        if entry is not None:
            return Hit(entry, "exact")
        if vector is None or facts is None or keys.semantic_scope is None:
            return None
        for key, similarity in self.index.search(keys.semantic_scope, vector, threshold):
            candidate = self.get(key)
            if candidate is None or candidate.facts is None:
                continue
            guard = disagreement(facts, candidate.facts)
            if guard is None:
                return Hit(candidate, "semantic", similarity)
            self.on_reject(guard)
        return None

    def put(self, keys: CacheKeys, answer: JSON, *, avoided_usd: Decimal, saved_tokens: int,
            vector: Vector | None = None, facts: Facts | None = None) -> bool:
        """Store an answer; False when it alone is larger than the byte bound."""
        nbytes = len(orjson.dumps(answer)) + _OVERHEAD_BYTES + (
            0 if vector is None else 2 * vector.nbytes)  # the index's row (and graph copy)
        if nbytes > self.max_bytes:
            return False
        self._drop(keys.exact)
        entry = Entry(answer, avoided_usd, saved_tokens, self._clock() + self.ttl_s, nbytes)
        if vector is not None and keys.semantic_scope is not None:
            entry.scope, entry.facts = keys.semantic_scope, facts
            entry.slot, moved = self.index.add(keys.semantic_scope, keys.exact, vector)
            for key, slot in moved.items():  # the scope moved to a graph: new slots
                self._entries[key].slot = slot
        self._entries[keys.exact] = entry
        self.nbytes += nbytes
        self._evict_over_bounds()
        return True

    def put_many(self, items: list[tuple[CacheKeys, JSON, Vector, Facts]], *,
                 threads: int = 1) -> None:
        """Store many semantic answers (cost 0) at once, each scope's index filled in one
        batch on `threads` threads: a bulk load (the benchmark's 100k entries); answers
        served on the path are stored one by one by `put`."""
        by_scope: dict[str, list[tuple[str, Entry, Vector]]] = {}
        if len({keys.exact for keys, _, _, _ in items}) != len(items):
            raise ValueError("put_many got one key twice")
        for keys, answer, vector, facts in items:
            if keys.semantic_scope is None:
                raise ValueError("put_many stores semantic entries only")
            self._drop(keys.exact)
            nbytes = len(orjson.dumps(answer)) + _OVERHEAD_BYTES + 2 * vector.nbytes
            entry = Entry(answer, Decimal(0), 0, self._clock() + self.ttl_s, nbytes,
                          keys.semantic_scope, facts=facts)
            self._entries[keys.exact] = entry
            self.nbytes += nbytes
            by_scope.setdefault(keys.semantic_scope, []).append((keys.exact, entry, vector))
        for scope, rows in by_scope.items():
            slots, moved = self.index.add_many(scope, [key for key, _, _ in rows],
                                               np.stack([v for _, _, v in rows]), threads)
            for key, slot in moved.items():
                self._entries[key].slot = slot
            for (_, entry, _), slot in zip(rows, slots, strict=True):
                entry.slot = slot
        self._evict_over_bounds()

    def _evict_over_bounds(self) -> None:
        """Least recently used first, until both bounds hold."""
        while len(self._entries) > self.max_entries or self.nbytes > self.max_bytes:
            reason: Eviction = "entries" if len(self._entries) > self.max_entries else "bytes"
            self._drop(next(iter(self._entries)))
            self.on_evict(reason)

    def _drop(self, key: str) -> None:
        entry = self._entries.pop(key, None)
        if entry is None:
            return
        self.nbytes -= entry.nbytes
        if entry.scope is not None:
            self.index.remove(entry.scope, entry.slot)


def _ignore(_: str) -> None:
    pass
