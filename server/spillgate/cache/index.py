"""The semantic index, one per scope: a numpy matrix while small, an HNSW graph when large.

Chosen by measurement (scripts/bench_cache.py, docs/cache-eval.md). A small scope is searched
exactly by one matrix-vector product (a few microseconds at a thousand rows, no recall lost,
O(1) insert and delete). A brute-force scan grows with the scope: at 100k 256-d rows it reads
100 MB per lookup, tens of milliseconds, far over the 5 ms goal; an hnswlib graph answers in
well under a millisecond there. So a scope moves to hnswlib once it holds GRAPH_FROM rows. A
scope is one tenant x route x conversation prefix, so most stay small. Removed rows are
zeroed (numpy: they never score above a positive threshold) or marked deleted (hnswlib), and
their slots reused.
"""

from __future__ import annotations

from typing import Protocol

import hnswlib
import numpy as np
import numpy.typing as npt

Vector = npt.NDArray[np.float32]
_INITIAL_ROWS = 16
TOP_K = 8  # candidates handed to the guards, best first
GRAPH_FROM = 4096  # rows at which a scope's exact scan is replaced by an HNSW graph
_EF_SEARCH = 64  # hnswlib's search breadth: recall of the true top 8 stays near 1


class Index(Protocol):
    size: int

    def add(self, key: str, vector: Vector) -> int: ...
    def remove(self, slot: int) -> None: ...
    def search(self, vector: Vector, threshold: float,
               k: int = TOP_K) -> list[tuple[str, float]]: ...


class ScopeIndex:
    def __init__(self, dims: int) -> None:
        self._rows: Vector = np.zeros((_INITIAL_ROWS, dims), dtype=np.float32)
        self._keys: list[str | None] = []
        self._free: list[int] = []
        self.size = 0

    def add(self, key: str, vector: Vector) -> int:
        if self._free:
            slot = self._free.pop()
            self._keys[slot] = key
        else:
            slot = len(self._keys)
            if slot == len(self._rows):
                grown = np.zeros((2 * len(self._rows), self._rows.shape[1]), dtype=np.float32)
                grown[:slot] = self._rows
                self._rows = grown
            self._keys.append(key)
        self._rows[slot] = vector
        self.size += 1
        return slot

    def remove(self, slot: int) -> None:
        if self._keys[slot] is None:
            return
        self._rows[slot] = 0.0
        self._keys[slot] = None
        self._free.append(slot)
        self.size -= 1

    def search(self, vector: Vector, threshold: float, k: int = TOP_K) -> list[tuple[str, float]]:
        """Up to k (key, similarity) pairs at or above the threshold, most similar first."""
        used = len(self._keys)
        if not used:
            return []
        scores = self._rows[:used] @ vector
        above = np.flatnonzero(scores >= threshold)
        if len(above) > k:
            above = above[np.argpartition(scores[above], -k)[-k:]]
        ranked = above[np.argsort(-scores[above])]
        found = []
        for slot in ranked.tolist():
            key = self._keys[slot]
            if key is not None:
                found.append((key, float(scores[slot])))
        return found

    def live(self) -> list[tuple[str, Vector]]:
        return [(key, self._rows[slot]) for slot, key in enumerate(self._keys)
                if key is not None]


class GraphIndex:
    """hnswlib (inner product on unit vectors = cosine), grown by doubling. Every entry gets a
    new label (never reused: hnswlib ties a reused label to the storage it replaces); the
    storage of deleted entries is reused (`replace_deleted`)."""

    def __init__(self, dims: int, capacity: int) -> None:
        self._graph = hnswlib.Index(space="ip", dim=dims)
        self._graph.init_index(max_elements=capacity, ef_construction=100, M=16,
                               allow_replace_deleted=True)
        self._graph.set_ef(_EF_SEARCH)
        self._graph.set_num_threads(1)  # one request's lookup; the event loop's thread
        self._keys: dict[int, str] = {}
        self._next_label = 0
        self._deleted = 0  # marked deleted, storage not yet reused
        self.size = 0

    def add(self, key: str, vector: Vector) -> int:
        label, self._next_label = self._next_label, self._next_label + 1
        reuse = self._deleted > 0
        if not reuse and self._graph.get_current_count() >= self._graph.get_max_elements():
            self._graph.resize_index(2 * self._graph.get_max_elements())
        self._graph.add_items(vector.reshape(1, -1), [label], replace_deleted=reuse)
        self._deleted -= reuse
        self._keys[label] = key
        self.size += 1
        return label

    def remove(self, slot: int) -> None:
        if self._keys.pop(slot, None) is None:
            return
        self._graph.mark_deleted(slot)
        self._deleted += 1
        self.size -= 1

    def search(self, vector: Vector, threshold: float, k: int = TOP_K) -> list[tuple[str, float]]:
        if self.size == 0:
            return []
        labels, distances = self._graph.knn_query(vector.reshape(1, -1), k=min(k, self.size))
        found = []
        for label, distance in zip(labels[0].tolist(), distances[0].tolist(), strict=True):
            similarity = 1.0 - distance  # hnswlib's "ip" distance is 1 - dot product
            key = self._keys.get(label)
            if key is not None and similarity >= threshold:
                found.append((key, similarity))
        return found


class SemanticIndex:
    """One index per scope; a scope's index disappears with its last entry.

    `add` returns the entry's slot; a scope that moves to a graph re-adds its entries, so
    `add` reports the moved slots through `moved` (key -> new slot) for the store to keep."""

    def __init__(self, dims: int, graph_from: int = GRAPH_FROM) -> None:
        self.dims = dims
        self.graph_from = graph_from
        self._scopes: dict[str, Index] = {}

    def add(self, scope: str, key: str, vector: Vector) -> tuple[int, dict[str, int]]:
        index = self._scopes.get(scope)
        if index is None:
            index = self._scopes[scope] = ScopeIndex(self.dims)
        moved: dict[str, int] = {}
        if isinstance(index, ScopeIndex) and index.size + 1 >= self.graph_from:
            graph = GraphIndex(self.dims, 2 * self.graph_from)
            moved = {old_key: graph.add(old_key, row) for old_key, row in index.live()}
            index = self._scopes[scope] = graph
        return index.add(key, vector), moved

    def remove(self, scope: str, slot: int) -> None:
        index = self._scopes.get(scope)
        if index is None:
            return
        index.remove(slot)
        if index.size == 0:
            del self._scopes[scope]

    def search(self, scope: str, vector: Vector, threshold: float) -> list[tuple[str, float]]:
        index = self._scopes.get(scope)
        return [] if index is None else index.search(vector, threshold)

    def __len__(self) -> int:
        return sum(index.size for index in self._scopes.values())
