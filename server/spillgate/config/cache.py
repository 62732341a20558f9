"""`cache:` bounds and threshold of the response cache (spillgate.cache)."""

from __future__ import annotations

from pydantic import Field

from spillgate.config.base import StrictModel


class CacheSettings(StrictModel):
    ttl_s: float = Field(3600.0, gt=0, description="Seconds a cached answer may be served.")
    max_entries: int = Field(100_000, ge=1, description="Cached answers kept (all tenants).")
    max_bytes: int = Field(
        256 << 20, ge=1024, description="Bytes of cached answers kept; the least recently "
        "used go first when either bound is reached."
    )
    threshold: float = Field(
        0.905, gt=0, le=1, description="Semantic routes: least cosine similarity of a "
        "paraphrase hit (calibrated in docs/cache-eval.md); a candidate must also pass the "
        "guards (numbers, negation, names, units)."
    )
