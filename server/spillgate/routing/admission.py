"""How many requests a local backend can hold while a new one still meets a route's TTFT goal.

The overflow controller (routing.overflow) says *whether* a backend is under pressure, with
hysteresis, from telemetry sampled every interval. That is the right tool for signals only the
engine can see (KV-cache pressure, GPU saturation, load from other clients), but switching a
whole route to the paid API while it is "spilling" sends far more traffic away than needed:
at 2x overload the minimum to spill is half, not all.

So the request path also applies an admission limit: a new request stays local while the
backend's requests in flight are below

    limit = slots + floor(rate * (slo * headroom - base_ttft))

(Little's law: beyond the engine's batch slots, each queued request waits about 1/rate
seconds for a slot to free). `rate` (requests admitted per second while the engine was full)
and `base_ttft` come from the controller's EWMA-smoothed engine tracks. With no rate measured
yet the limit is the batch slots alone: nothing queues on a guess. The count it is compared
with is live (the gateway's own in-flight requests at the moment of the decision, plus work
other clients put on the engine as last scraped), so the spilled share tracks the real excess
request by request instead of flapping route-wide.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable

from spillgate.routing.overflow import BackendLimits, EngineTrack

DEFAULT_HEADROOM = 0.8  # plan to 80% of the objective: rate and base TTFT are estimates


def admit_limit(
    slo_s: float,
    limits: BackendLimits,
    engines: int,
    tracks: Iterable[EngineTrack],
    *,
    headroom: float = DEFAULT_HEADROOM,
) -> int:
    """Requests in flight at which a new one spills (it stays local while below)."""
    live = list(tracks)
    slots = limits.batch_capacity * max(1, engines)
    rates = [t.rate_rps for t in live if t.rate_rps is not None and t.rate_rps > 0]
    if not rates:
        return slots
    base = max((t.base_ttft_s for t in live if t.base_ttft_s is not None), default=0.0)
    slack_s = slo_s * headroom - base
    return slots + max(0, math.floor(sum(rates) * slack_s))


class InflightCounter:
    """Requests routed to each local backend and not yet settled, counted at the decision.

    Counted by the service when the router picks a local target, not when the HTTP call
    starts: a burst of requests decided before any call begins must each see the others.
    """

    def __init__(self) -> None:
        self._counts: defaultdict[str, int] = defaultdict(int)

    def enter(self, backend: str) -> None:
        self._counts[backend] += 1

    def leave(self, backend: str) -> None:
        self._counts[backend] -= 1

    def count(self, backend: str) -> int:
        return self._counts[backend]
