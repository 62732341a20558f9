"""Semantic-cache lookup latency at 1k / 10k / 100k entries in one scope: the node's own path
(numpy scan below 4,096 entries, a usearch HNSW graph from there), and the candidates alone:
numpy brute force, usearch, hnswlib, faiss-cpu (flat) and sqlite-vec (hnswlib, faiss and
sqlite-vec are measured when importable; they are not dependencies of the node).

A lookup is what the request path does on a miss of the exact store: embed the question
(WordLlama, 256-d), search the scope for the best candidates above the threshold, check the
guards of the few returned. Entries are random unit vectors plus the embeddings of real
questions, so the guards see real candidates. One scope holding every entry is the worst case
(real scopes are one tenant x route x conversation prefix).

Each index is filled in one batch (`ResponseCache.put_many`, usearch's `Index.add` with every
key at once on `--threads` threads), so the 100k row builds in a minute or two; the node adds
entries one at a time as answers arrive, which builds the same graph, only slower. Each row
reports the build time, lookup p50/p99 and memory: the process's resident-set growth while
the index was built (the node row: entries, answers, keys and index), and usearch's own count
of its graph.

    python scripts/bench_cache.py [--sizes 1000,10000,100000] [--queries 2000] [--threads 2]
                                  [--json out.json] [--skip numpy,hnswlib] [--extra-path DIR]
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sqlite3
import statistics
import sys
import time
from collections.abc import Callable
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


def rss_mb() -> float:
    """This process's resident set now (Linux /proc; 0 elsewhere)."""
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:
        return 0.0


def timed(search: Searcher, queries: np.ndarray) -> dict[str, float]:
    for q in queries[:50]:  # warm up
        search(q)
    samples = []
    for q in queries:
        start = time.perf_counter()
        search(q)
        samples.append(time.perf_counter() - start)
    return percentiles(samples)


def node_lookup(n: int, queries: list[str], threads: int) -> dict[str, Any]:
    """The node's own path: ResponseCache.find (exact miss, index search, guards) after
    embedding, n entries in one scope, filled in one batch."""
    embedder = load_local_embedder()
    cache = ResponseCache(ttl_s=3600, max_entries=n + 1, max_bytes=1 << 40, dims=DIMS)
    real = embedder.embed([comparable_text(q) for q in QUESTIONS])
    rows = unit_rows(n)
    rows[: len(real)] = real
    answer = {"choices": [], "usage": {}, "model": "m"}
    scope_body = {"model": "r", "messages": [{"role": "user", "content": ""}]}
    gc.collect()
    rss_before, start = rss_mb(), time.perf_counter()
    items = []
    for i in range(n):
        text = QUESTIONS[i % len(QUESTIONS)] if i < len(real) else f"entry {i}"
        keys = build_keys("t", "r", {**scope_body, "messages": [
            {"role": "user", "content": text}]})
        items.append((keys, answer, rows[i], facts_of(text)))
    cache.put_many(items, threads=threads)
    build_s = time.perf_counter() - start
    print(f"{n:>7} entries: node cache filled in {build_s:.1f} s", file=sys.stderr, flush=True)
    del items
    gc.collect()
    grown_mb = rss_mb() - rss_before
    samples = []
    for text in queries:
        start = time.perf_counter()
        keys = build_keys("t", "r", {**scope_body, "messages": [
            {"role": "user", "content": text}]})
        vector = embedder.embed([comparable_text(text)])[0]
        cache.find(keys, vector, facts_of(text), THRESHOLD)
        samples.append(time.perf_counter() - start)
    scope = keys.semantic_scope or ""
    return {**percentiles(samples), "build_s": round(build_s, 3),
            "memory_mb": round(grown_mb, 1),
            "index_mb": round(cache.index.memory_bytes() / 2**20, 1),
            "index": cache.index.kind(scope)}


class ScanSearch:
    """The node's exact scan alone (what a scope below the graph size searches)."""

    def __init__(self, rows: np.ndarray, threads: int) -> None:
        self.index = ScopeIndex(DIMS)
        for i, row in enumerate(rows):
            self.index.add(str(i), row)
        self.index_mb = self.index.memory_bytes() / 2**20

    def __call__(self, q: np.ndarray) -> object:
        return self.index.search(q, THRESHOLD)


class GraphSearch:
    """The node's usearch graph alone, filled in one batch; knows its own memory."""

    def __init__(self, rows: np.ndarray, threads: int) -> None:
        from spillgate.cache.index import GraphIndex  # usearch only now (see GraphIndex)

        self.index = GraphIndex(DIMS)
        self.index.add_many([str(i) for i in range(len(rows))], rows, threads)
        self.index_mb = self.index.memory_bytes() / 2**20

    def __call__(self, q: np.ndarray) -> object:
        return self.index.search(q, THRESHOLD)


def hnswlib_search(rows: np.ndarray, threads: int) -> Searcher | None:
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


def faiss_search(rows: np.ndarray, threads: int) -> Searcher | None:
    try:
        import faiss  # type: ignore[import-not-found]
    except ImportError:
        return None
    faiss.omp_set_num_threads(1)
    index = faiss.IndexFlatIP(DIMS)
    index.add(rows)
    return lambda q: index.search(q.reshape(1, -1), 8)


def sqlite_vec_search(rows: np.ndarray, threads: int) -> Searcher | None:
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


def run(sizes: list[int], n_queries: int, skip: set[str], threads: int,
        json_path: str | None = None) -> dict[str, Any]:
    """Every size's rows; with `json_path` the JSON is rewritten after each size, so a run
    cut short keeps what it measured."""
    queries = unit_rows(n_queries, seed=1601)
    texts = [QUESTIONS[i % len(QUESTIONS)].replace("What is", "Tell me") for i in
             range(n_queries)]
    results: dict[str, Any] = {"dims": DIMS, "queries": n_queries, "threads": threads,
                               "load_1m": round(os.getloadavg()[0], 2), "sizes": {}}
    for n in sizes:
        rows = unit_rows(n)
        row: dict[str, Any] = {}
        if "node" not in skip:
            row["node_lookup_with_embedding"] = node_lookup(n, texts, threads)
        for name, build in (("numpy", ScanSearch), ("usearch", GraphSearch),
                            ("hnswlib", hnswlib_search),
                            ("faiss_flat", faiss_search), ("sqlite_vec", sqlite_vec_search)):
            if name in skip:
                continue
            gc.collect()
            rss_before, start = rss_mb(), time.perf_counter()
            search = build(rows, threads)
            if search is None:
                row[name] = "not available"
                continue
            built = {"build_s": round(time.perf_counter() - start, 3),
                     "memory_mb": round(rss_mb() - rss_before, 1)}
            if isinstance(search, ScanSearch | GraphSearch):
                built["index_mb"] = round(search.index_mb, 1)
            row[name] = {**timed(search, queries), **built}
            del search
        results["sizes"][str(n)] = row
        print(f"{n:>7} entries: " + "  ".join(
            f"{k} p50 {v['p50_ms']} / p99 {v['p99_ms']} ms" if isinstance(v, dict) else
            f"{k} {v}" for k, v in row.items()), flush=True)
        results["load_1m_end"] = round(os.getloadavg()[0], 2)
        if json_path:
            with open(json_path, "w") as out:
                json.dump(results, out, indent=2)
    return results


def table(results: dict[str, Any]) -> str:
    lines = ["| entries | index | p50 ms | p99 ms | build s | RSS growth MB | index MB |",
             "|---|---|---|---|---|---|---|"]
    for n, row in results["sizes"].items():
        for name, r in row.items():
            if isinstance(r, dict):
                label = f"{name} ({r['index']})" if "index" in r else name
                lines.append(f"| {n} | {label} | {r['p50_ms']} | {r['p99_ms']} | "
                             f"{r['build_s']} | {r['memory_mb']} | {r.get('index_mb', '')} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000,10000,100000")
    parser.add_argument("--queries", type=int, default=2000)
    parser.add_argument("--json", default=None)
    parser.add_argument("--skip", default="", help="rows to leave out, comma-separated: node, "
                        "numpy, usearch, hnswlib, faiss_flat, sqlite_vec")
    parser.add_argument("--threads", type=int, default=2,
                        help="threads that build a graph (lookups use one)")
    parser.add_argument("--extra-path", action="append", default=[],
                        help="a folder holding the optional libraries (pip --target)")
    args = parser.parse_args(argv)
    sys.path.extend(args.extra_path)
    results = run([int(s) for s in args.sizes.split(",")], args.queries,
                  set(filter(None, args.skip.split(","))), args.threads, args.json)
    print(table(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
