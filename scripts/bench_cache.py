"""Semantic-cache lookup latency at 1k / 10k / 100k entries in one scope: the node's own path
(numpy scan below 4,096 entries, a usearch HNSW graph from there), and the candidates alone:
numpy brute force, usearch, hnswlib, faiss-cpu (flat) and sqlite-vec (hnswlib, faiss and
sqlite-vec are measured when importable; they are not dependencies of the node).

A lookup is what the request path does on a miss of the exact store: embed the question
(WordLlama, 256-d), search the scope for the best candidates above the threshold, check the
guards of the few returned. Entries are random unit vectors plus the embeddings of real
questions, so the guards see real candidates. One scope holding every entry is the worst case
(real scopes are one tenant x route x conversation prefix).

    python scripts/bench_cache.py [--sizes 1000,10000,100000] [--queries 2000]
                                  [--json out.json] [--extra-path DIR ...]
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import statistics
import sys
import time
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import numpy as np

from spillgate.cache.guards import facts_of
from spillgate.cache.index import ScopeIndex
from spillgate.cache.keys import build_keys, comparable_text
from spillgate.cache.store import ResponseCache
from spillgate.embeddings import load_local_embedder

DIMS = 256
THRESHOLD = 0.905
QUESTIONS = [f"What is the {w} of {c}?" for w in ("capital", "population", "currency", "area")
             for c in ("France", "Peru", "Japan", "Kenya", "Chile", "Norway", "Egypt")]
Searcher = Callable[[np.ndarray], object]


def unit_rows(n: int, seed: int = 16) -> np.ndarray:
    rows = np.random.default_rng(seed).normal(size=(n, DIMS)).astype(np.float32)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def percentiles(samples_s: list[float]) -> dict[str, float]:
    ordered = sorted(samples_s)
    def at(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000, 4)
    return {"p50_ms": at(0.50), "p99_ms": at(0.99),
            "mean_ms": round(statistics.fmean(ordered) * 1000, 4)}


def timed(search: Searcher, queries: np.ndarray) -> dict[str, float]:
    for q in queries[:50]:  # warm up
        search(q)
    samples = []
    for q in queries:
        start = time.perf_counter()
        search(q)
        samples.append(time.perf_counter() - start)
    return percentiles(samples)


def node_lookup(n: int, queries: list[str]) -> dict[str, float]:
    """The node's own path: ResponseCache.find (exact miss, index scan, guards) after
    embedding, n entries in one scope."""
    embedder = load_local_embedder()
    cache = ResponseCache(ttl_s=3600, max_entries=n + 1, max_bytes=1 << 40, dims=DIMS)
    real = embedder.embed([comparable_text(q) for q in QUESTIONS])
    rows = unit_rows(n)
    rows[: len(real)] = real
    answer = {"choices": [], "usage": {}, "model": "m"}
    scope_body = {"model": "r", "messages": [{"role": "user", "content": ""}]}
    for i in range(n):
        text = QUESTIONS[i % len(QUESTIONS)] if i < len(real) else f"entry {i}"
        keys = build_keys("t", "r", {**scope_body, "messages": [
            {"role": "user", "content": text}]})
        cache.put(keys, answer, avoided_usd=Decimal(0), saved_tokens=0, vector=rows[i],
                  facts=facts_of(text))
    samples = []
    for text in queries:
        start = time.perf_counter()
        keys = build_keys("t", "r", {**scope_body, "messages": [
            {"role": "user", "content": text}]})
        vector = embedder.embed([comparable_text(text)])[0]
        cache.find(keys, vector, facts_of(text), THRESHOLD)
        samples.append(time.perf_counter() - start)
    return percentiles(samples)


def numpy_search(rows: np.ndarray) -> Searcher:
    index = ScopeIndex(DIMS)
    for i, row in enumerate(rows):
        index.add(str(i), row)
    return lambda q: index.search(q, THRESHOLD)


def usearch_search(rows: np.ndarray) -> Searcher:
    from spillgate.cache.index import GraphIndex

    index = GraphIndex(DIMS)
    for i, row in enumerate(rows):
        index.add(str(i), row)
    return lambda q: index.search(q, THRESHOLD)


def hnswlib_search(rows: np.ndarray) -> Searcher | None:
    try:
        import hnswlib  # type: ignore[import-not-found]
    except ImportError:
        return None
    index = hnswlib.Index(space="ip", dim=DIMS)
    index.init_index(max_elements=len(rows), ef_construction=100, M=16)
    index.add_items(rows, np.arange(len(rows)))
    index.set_ef(64)
    index.set_num_threads(1)
    return lambda q: index.knn_query(q, k=8)


def faiss_search(rows: np.ndarray) -> Searcher | None:
    try:
        import faiss  # type: ignore[import-not-found]
    except ImportError:
        return None
    faiss.omp_set_num_threads(1)
    index = faiss.IndexFlatIP(DIMS)
    index.add(rows)
    return lambda q: index.search(q.reshape(1, -1), 8)


def sqlite_vec_search(rows: np.ndarray) -> Searcher | None:
    try:
        import sqlite_vec  # type: ignore[import-not-found]
    except ImportError:
        return None
    db = sqlite3.connect(":memory:")
    if not hasattr(db, "enable_load_extension"):  # this Python's sqlite3 cannot load it
        return None
    db.enable_load_extension(True)
    sqlite_vec.load(db)
    db.execute(f"CREATE VIRTUAL TABLE v USING vec0(embedding float[{DIMS}])")
    db.executemany("INSERT INTO v(rowid, embedding) VALUES (?, ?)",
                   ((i, row.tobytes()) for i, row in enumerate(rows)))
    query = "SELECT rowid, distance FROM v WHERE embedding MATCH ? ORDER BY distance LIMIT 8"
    return lambda q: db.execute(query, (q.tobytes(),)).fetchall()


def run(sizes: list[int], n_queries: int, skip: set[str]) -> dict[str, Any]:
    queries = unit_rows(n_queries, seed=1601)
    texts = [QUESTIONS[i % len(QUESTIONS)].replace("What is", "Tell me") for i in
             range(n_queries)]
    results: dict[str, Any] = {"dims": DIMS, "queries": n_queries, "sizes": {}}
    for n in sizes:
        rows = unit_rows(n)
        row: dict[str, Any] = {"node_lookup_with_embedding": node_lookup(n, texts)}
        for name, build in (("numpy", numpy_search), ("usearch", usearch_search),
                            ("hnswlib", hnswlib_search),
                            ("faiss_flat", faiss_search), ("sqlite_vec", sqlite_vec_search)):
            if name in skip:
                continue
            start = time.perf_counter()
            search = build(rows)
            if search is None:
                row[name] = "not available"
                continue
            row[name] = {**timed(search, queries),
                         "build_s": round(time.perf_counter() - start, 3)}
        results["sizes"][str(n)] = row
        print(f"{n:>7} entries: " + "  ".join(
            f"{k} p50 {v['p50_ms']} / p99 {v['p99_ms']} ms" if isinstance(v, dict) else
            f"{k} {v}" for k, v in row.items()), flush=True)
    return results


def table(results: dict[str, Any]) -> str:
    lines = ["| entries | index | p50 ms | p99 ms | build s |", "|---|---|---|---|---|"]
    for n, row in results["sizes"].items():
        for name, r in row.items():
            if isinstance(r, dict):
                lines.append(f"| {n} | {name} | {r['p50_ms']} | {r['p99_ms']} | "
                             f"{r.get('build_s', '')} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000,10000,100000")
    parser.add_argument("--queries", type=int, default=2000)
    parser.add_argument("--json", default=None)
    parser.add_argument("--skip", default="", help="candidates to leave out, comma-separated")
    parser.add_argument("--extra-path", action="append", default=[],
                        help="a folder holding the optional libraries (pip --target)")
    args = parser.parse_args(argv)
    sys.path.extend(args.extra_path)
    results = run([int(s) for s in args.sizes.split(",")], args.queries,
                  set(filter(None, args.skip.split(","))))
    print(table(results))
    if args.json:
        with open(args.json, "w") as out:
            json.dump(results, out, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
