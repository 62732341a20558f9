"""The response cache in Prometheus, on the gateway's registry.

- `spillgate_cache_lookups_total{route,kind,result}`: every request on a node with a cache,
  as its `x-spillgate-cache` header said (`result` hit | miss | bypass). `kind` is what
  matched for a hit (exact | semantic) and the route's cache mode for a miss or a bypass
  (exact | semantic | off), so hits/(hits+misses) per kind is the hit rate a route earns.
- `spillgate_cache_bypasses_total{route,reason}`: why a request skipped the cache: route_off,
  endpoint (not a chat completion), sensitive, no_store, temperature, error (the cache
  failed; the request was served without it).
- `spillgate_cache_guard_rejections_total{guard}`: semantic candidates above the threshold
  that a guard refused (numbers, negation, units, names, opposites).
- `spillgate_cache_entries{kind}` (exact | semantic), `spillgate_cache_bytes`: what the cache
  holds now, read at scrape time.
- `spillgate_cache_evictions_total{reason}`: entries that left before being replaced:
  entries or bytes (the LRU bounds), ttl (expired when met).
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge

from spillgate.cache.store import Eviction, ResponseCache

BypassReason = str  # route_off | endpoint | sensitive | no_store | temperature | error


class CacheMetrics:
    def __init__(self, registry: CollectorRegistry, cache: ResponseCache) -> None:
        self.lookups = Counter(
            "spillgate_cache_lookups", "Requests on a caching node by route, result (hit, "
            "miss, bypass) and kind (the match of a hit, else the route's cache mode).",
            ["route", "kind", "result"], registry=registry,
        )
        self.bypasses = Counter(
            "spillgate_cache_bypasses", "Requests that skipped the response cache, by route "
            "and reason.", ["route", "reason"], registry=registry,
        )
        self.guard_rejections = Counter(
            "spillgate_cache_guard_rejections", "Semantic candidates above the threshold "
            "refused by a guard.", ["guard"], registry=registry,
        )
        self.evictions = Counter(
            "spillgate_cache_evictions", "Entries evicted: LRU bound (entries, bytes) or ttl.",
            ["reason"], registry=registry,
        )
        entries = Gauge("spillgate_cache_entries", "Entries held, by kind (semantic entries "
                        "are also in the vector index).", ["kind"], registry=registry)
        semantic = cache.index.__len__
        entries.labels("exact").set_function(lambda: len(cache) - semantic())
        entries.labels("semantic").set_function(semantic)
        Gauge("spillgate_cache_bytes", "Bytes the cache counts against max_bytes.",
              registry=registry).set_function(lambda: cache.nbytes)
        cache.on_evict = self.evicted
        cache.on_reject = self.rejected

    def looked_up(self, route: str, kind: str, result: str,
                  bypass: BypassReason | None) -> None:
        self.lookups.labels(route, kind, result).inc()
        if bypass is not None:
            self.bypasses.labels(route, bypass).inc()

    def evicted(self, reason: Eviction) -> None:
        self.evictions.labels(reason).inc()

    def rejected(self, guard: str) -> None:
        self.guard_rejections.labels(guard).inc()
