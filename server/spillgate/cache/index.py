"""The semantic index: per scope, a matrix of unit vectors searched by one matrix-vector
product (numpy brute force).

Chosen by measurement (scripts/bench_cache.py, docs/cache-eval.md): with 256-d float32 rows a
scan of 100k entries is one BLAS sgemv of 100 MB, a few milliseconds, exact (no recall lost
to an approximate graph), with O(1) insert and delete and no native index to rebuild. A scope
is one tenant x route x conversation prefix, so real scopes are far smaller than the whole
cache. Removed rows are zeroed (they can never score above a positive threshold) and their
slots reused.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

Vector = npt.NDArray[np.float32]
_INITIAL_ROWS = 16
TOP_K = 8  # candidates handed to the guards, best first


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


class SemanticIndex:
    """One ScopeIndex per scope; a scope's index disappears with its last entry."""

    def __init__(self, dims: int) -> None:
        self.dims = dims
        self._scopes: dict[str, ScopeIndex] = {}

    def add(self, scope: str, key: str, vector: Vector) -> int:
        index = self._scopes.get(scope)
        if index is None:
            index = self._scopes[scope] = ScopeIndex(self.dims)
        return index.add(key, vector)

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
