"""The response cache's Prometheus series, scraped from the running node's GET /metrics.

Each figure is checked against an independent count: the `x-spillgate-cache` header of every
answer the test received, the requests the fake provider saw, and what the test knows it
made the cache do (which guard a swapped question trips, which entry a bound pushes out)."""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.cache_node import CacheNode, cache_node

pytestmark = pytest.mark.integration
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


async def scrape(node: CacheNode) -> Samples:
    reply = await node.client.get("/metrics")
    assert reply.status_code == 200
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(reply.text)
            for s in family.samples if s.name.startswith("spillgate_cache_")
            and not s.name.endswith("_created")}


def series(samples: Samples, name: str) -> dict[tuple[str, ...], float]:
    """One metric's samples keyed by their label values (in label-name order)."""
    return {tuple(v for _, v in labels): value for (n, labels), value in samples.items()
            if n == name}


async def test_lookups_bypasses_and_guard_rejections_match_what_clients_saw(
        tmp_path: Path) -> None:
    plan = [
        ("What is the capital of France?", "exact", {}),
        ("What is the capital of France?", "exact", {}),  # exact hit
        ("What are the side effects of ibuprofen?", "semantic", {}),
        ("Which side effects does ibuprofen have?", "semantic", {}),  # semantic hit
        ("Convert 5 km to miles.", "semantic", {}),
        ("Convert 50 km to miles.", "semantic", {}),  # refused by the numbers guard
        ("Why is the sky blue?", "exact", {"cache-control": "no-store"}),  # no_store
        ("Hello there", "uncached", {}),  # route_off
        ("My card is 4111 1111 1111 1111, what is my balance?", "mixed", {}),  # sensitive
    ]
    seen: Counter[tuple[str, str]] = Counter()
    async with cache_node(tmp_path) as node:
        for text, route, headers in plan:
            reply = await node.ask(text, model=route, headers=headers)
            assert reply.status_code == 200, reply.text
            seen[(route, reply.headers["x-spillgate-cache"])] += 1
        samples = await scrape(node)
        upstream = node.upstream_calls()

    lookups = series(samples, "spillgate_cache_lookups_total")  # (kind, result, route)
    by_route_result: Counter[tuple[str, str]] = Counter()
    for (_, result, route), value in lookups.items():
        by_route_result[(route, result)] += int(value)
    assert by_route_result == seen  # every answer's header, counted once
    assert lookups[("exact", "hit", "exact")] == 1
    assert lookups[("semantic", "hit", "semantic")] == 1
    assert lookups[("semantic", "miss", "semantic")] == 3
    assert lookups[("off", "bypass", "uncached")] == 1
    hits = sum(v for (_, result, _), v in lookups.items() if result == "hit")
    assert upstream == len(plan) - hits  # a hit never reached the provider
    assert series(samples, "spillgate_cache_bypasses_total") == {
        ("no_store", "exact"): 1, ("route_off", "uncached"): 1, ("sensitive", "mixed"): 1}
    assert series(samples, "spillgate_cache_guard_rejections_total") == {("numbers",): 1}
    entries = series(samples, "spillgate_cache_entries")
    # stored: the exact question, and on the semantic route the three misses
    assert entries == {("exact",): 1, ("semantic",): 3}
    assert series(samples, "spillgate_cache_bytes")[()] > 0


async def test_evictions_are_counted_by_bound_and_by_ttl(tmp_path: Path) -> None:
    async with cache_node(tmp_path, max_entries=2) as node:
        for text in ("one?", "two?", "three?"):
            await node.ask(text)
        samples = await scrape(node)
        assert series(samples, "spillgate_cache_evictions_total") == {("entries",): 1}
        assert series(samples, "spillgate_cache_entries") == {("exact",): 2, ("semantic",): 0}
        assert (await node.ask("one?")).headers["x-spillgate-cache"] == "miss"  # it was out

    (tmp_path / "ttl").mkdir()
    async with cache_node(tmp_path / "ttl", ttl_s=0.2) as node:
        await node.ask("Is it raining?")
        await asyncio.sleep(0.3)
        assert (await node.ask("Is it raining?")).headers["x-spillgate-cache"] == "miss"
        samples = await scrape(node)
        assert series(samples, "spillgate_cache_evictions_total") == {("ttl",): 1}
        assert series(samples, "spillgate_cache_entries")[("exact",)] == 1  # stored again
