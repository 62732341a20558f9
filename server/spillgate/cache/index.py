"""The semantic index, one per scope: a numpy matrix while small, an HNSW graph when large.

Chosen by measurement (scripts/bench_cache.py, docs/cache-eval.md). A small scope is searched
exactly by one matrix-vector product (microseconds at a thousand rows, no recall lost, O(1)
insert and delete). A brute-force scan grows with the scope: at 100k 256-d rows it reads
100 MB per lookup, tens of milliseconds, far over the 5 ms goal; an HNSW graph answers in well
under a millisecond there. So a scope moves to a graph once it holds GRAPH_FROM rows. The
graph is usearch (Apache-2.0, maintained, binary wheels, removal built in); hnswlib measured
the same but ships no wheels (a C++ compiler at install) and has had no release since 2023.
A scope is one tenant x route x conversation prefix, so most stay small. Removed numpy rows
are zeroed (they never score above a positive threshold) and their slots reused.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np
import numpy.typing as npt

Vector = npt.NDArray[np.float32]
_INITIAL_ROWS = 16
TOP_K = 8  # candidates handed to the guards, best first
GRAPH_FROM = 4096  # rows at which a scope's exact scan is replaced by an HNSW graph
_EF_SEARCH = 64  # the graph's search breadth: recall of the true top 8 stays near 1


class ScopeSearch(Protocol):
    size: int

    def add(self, key: str, vector: Vector) -> int: ...
    def remove(self, slot: int) -> None: ...
    def memory_bytes(self) -> int: ...
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

    def memory_bytes(self) -> int:
        return int(self._rows.nbytes)

    def live(self) -> list[tuple[str, Vector]]:
        return [(key, self._rows[slot]) for slot, key in enumerate(self._keys)
                if key is not None]


class GraphIndex:
    """A usearch HNSW graph (inner product on unit vectors = cosine). Every entry gets a new
    key, never reused; the graph reuses the storage of removed entries itself."""

    def __init__(self, dims: int) -> None:
        # Imported only when a scope first outgrows the exact scan. usearch's compiled module
        # loaded before llama.cpp in one process makes llama.cpp's vocabulary loader fail
        # (std::bad_cast, measured with the bundled GGUF); the gateway never loads llama.cpp
        # (engines are separate processes), but tools and tests that use both must not
        # import usearch at start-up.
        from usearch.index import Index

        self._graph = Index(ndim=dims, metric="ip", dtype="f32", connectivity=16,
                            expansion_add=128, expansion_search=_EF_SEARCH)
        self._keys: dict[int, str] = {}
        self._next_label = 0
        self.size = 0

    def add(self, key: str, vector: Vector) -> int:
        label, self._next_label = self._next_label, self._next_label + 1
        self._graph.add(label, vector, threads=1)
        self._keys[label] = key
        self.size += 1
        return label

    def add_many(self, keys: list[str], vectors: Vector, threads: int = 1) -> list[int]:
        """Add many entries in one call, the graph built on `threads` threads (a bulk load:
        a restore or a benchmark; the request path adds one entry at a time)."""
        if not keys:
            return []
        labels = np.arange(self._next_label, self._next_label + len(keys), dtype=np.uint64)
        self._next_label += len(keys)
        self._graph.add(labels, vectors, threads=threads)
        for label, key in zip(labels.tolist(), keys, strict=True):
            self._keys[label] = key
        self.size += len(keys)
        return [int(label) for label in labels.tolist()]

    def memory_bytes(self) -> int:
        """The graph's own memory (vectors and links), as usearch counts it."""
        return int(self._graph.memory_usage)

    def remove(self, slot: int) -> None:
        if self._keys.pop(slot, None) is None:
            return
        self._graph.remove(slot)
        self.size -= 1

    def search(self, vector: Vector, threshold: float, k: int = TOP_K) -> list[tuple[str, float]]:
        if self.size == 0:
            return []
        matches = self._graph.search(vector, min(k, self.size), threads=1)
        found = []
        for label, distance in zip(matches.keys.tolist(), matches.distances.tolist(),
                                   strict=True):
            similarity = 1.0 - distance  # usearch's "ip" distance is 1 - dot product
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
        self._scopes: dict[str, ScopeSearch] = {}

    def add(self, scope: str, key: str, vector: Vector) -> tuple[int, dict[str, int]]:
        index = self._scopes.get(scope)
        if index is None:
            index = self._scopes[scope] = ScopeIndex(self.dims)
        moved: dict[str, int] = {}
        if isinstance(index, ScopeIndex) and index.size + 1 >= self.graph_from:
            index, moved = self._to_graph(scope, index)
        return index.add(key, vector), moved

    def add_many(self, scope: str, keys: list[str], vectors: Vector,
                 threads: int = 1) -> tuple[list[int], dict[str, int]]:
        """`add` for many entries of one scope; a scope that reaches the graph size is
        built as a graph in one batch on `threads` threads."""
        index = self._scopes.get(scope)
        if index is None:
            index = self._scopes[scope] = ScopeIndex(self.dims)
        moved: dict[str, int] = {}
        if isinstance(index, ScopeIndex) and index.size + len(keys) >= self.graph_from:
            index, moved = self._to_graph(scope, index, threads)
        if isinstance(index, GraphIndex):
            return index.add_many(keys, vectors, threads), moved
        return [index.add(key, row) for key, row in zip(keys, vectors, strict=True)], moved

    def _to_graph(self, scope: str, index: ScopeIndex,
                  threads: int = 1) -> tuple[GraphIndex, dict[str, int]]:
        graph = GraphIndex(self.dims)
        live = index.live()
        if live:
            keys = [key for key, _ in live]
            slots = graph.add_many(keys, np.stack([row for _, row in live]), threads)
            moved = dict(zip(keys, slots, strict=True))
        else:
            moved = {}
        self._scopes[scope] = graph
        return graph, moved

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

    def memory_bytes(self) -> int:
        """The indexes' own memory: matrices and graphs (not the answers)."""
        return sum(index.memory_bytes() for index in self._scopes.values())

    def kind(self, scope: str) -> str | None:
        """"scan" or "graph" (what the scope's lookups search), None for no such scope."""
        index = self._scopes.get(scope)
        return None if index is None else "graph" if isinstance(index, GraphIndex) else "scan"
