"""The gateway's Prometheus metrics. All names start with `spillgate_` (never `vllm:`).

One `GatewayMetrics` per app, on its own CollectorRegistry, so tests and several apps in one
process never share counters.
"""

from __future__ import annotations

from typing import Generic, TypeVar

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.metrics import MetricWrapperBase

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120)


M = TypeVar("M", bound=MetricWrapperBase)


class Children(Generic[M]):
    """A labelled metric's children, each bound once: `labels()` validates, locks and
    hashes on every call; the request path asks the same few label tuples thousands of
    times. Only for metrics whose children are never removed and whose label values are
    bounded (backend, route, reason, status, kind)."""

    __slots__ = ("_bound", "_metric")

    def __init__(self, metric: M) -> None:
        self._metric = metric
        self._bound: dict[tuple[str, ...], M] = {}

    def __call__(self, *labels: str) -> M:
        child = self._bound.get(labels)
        if child is None:
            child = self._bound[labels] = self._metric.labels(*labels)
        return child


class GatewayMetrics:
    def __init__(self) -> None:
        self.registry = r = CollectorRegistry()
        self.requests = Counter(
            "spillgate_requests", "Requests answered, by serving backend, route and reason.",
            ["backend", "route", "reason", "status"], registry=r,
        )
        self.tokens = Counter(
            "spillgate_tokens", "Tokens processed, by backend and kind (prompt|completion).",
            ["backend", "kind"], registry=r,
        )
        self.api_spend = Counter(
            "spillgate_api_spend_usd", "Paid-API spend in USD.", ["backend"], registry=r
        )
        self.local_cost = Counter(
            "spillgate_local_cost_usd",
            "Amortized local hardware cost in USD: busy (attributed) or idle.",
            ["kind"], registry=r,
        )
        self.ttft = Histogram(
            "spillgate_time_to_first_token_seconds", "Time to first token seen by the gateway.",
            ["backend"], buckets=LATENCY_BUCKETS, registry=r,
        )
        self.duration = Histogram(
            "spillgate_request_duration_seconds", "Whole-request latency.",
            ["backend"], buckets=LATENCY_BUCKETS, registry=r,
        )
        self.inflight = Gauge(
            "spillgate_inflight_requests", "Requests in flight per backend.", ["backend"],
            registry=r,
        )
        self.backend_up = Gauge(
            "spillgate_backend_up", "1 when a local backend is ready to serve.", ["backend"],
            registry=r,
        )
        self.breaker_open = Gauge(
            "spillgate_circuit_open", "1 while a backend's circuit breaker is open.",
            ["backend"], registry=r,
        )
        self.sensitive = Counter(
            "spillgate_sensitive_requests",
            "Requests classified sensitive, by entity class (never values).",
            ["entity"], registry=r,
        )
        self.spill_decisions = Counter(
            "spillgate_spill_decisions",
            "auto-route requests sent to a paid API, by route and reason.",
            ["route", "reason"], registry=r,
        )
        self.cascade = Counter(
            "spillgate_cascade_decisions",
            "Cascade drafts judged, by route and outcome (cascade_kept, cascade_escalated, "
            "cascade_kept_no_budget).",
            ["route", "outcome"], registry=r,
        )
        self.spill_ratio = Gauge(
            "spillgate_spill_ratio", "Share of auto-route requests spilled since start.",
            registry=r,
        )
        self.route_spilling = Gauge(
            "spillgate_route_spilling", "1 while a route's overflow controller spills.",
            ["route"], registry=r,
        )
        self.engine_queue = Gauge(
            "spillgate_engine_queue_depth", "Waiting requests reported by a local engine.",
            ["backend"], registry=r,
        )
        self.gpu_util = Gauge(
            "spillgate_gpu_utilization_ratio", "GPU utilization (0-1) from NVML.", ["gpu"],
            registry=r,
        )
        self.gpu_power = Gauge(
            "spillgate_gpu_power_watts", "GPU power draw from NVML.", ["gpu"], registry=r
        )
        self.gpu_memory = Gauge(
            "spillgate_gpu_memory_used_bytes", "GPU memory used from NVML.", ["gpu"],
            registry=r,
        )
        self.spend_guard_open = Gauge(
            "spillgate_spend_guard_open", "Spend guard state: scope=node is 1 while the "
            "node's guard is open; scope=key counts keys whose own guard is open.",
            ["scope"], registry=r,
        )
        self.budget_alerts = Gauge(
            "spillgate_budget_alert_keys", "Keys whose used share of a paid budget (spent "
            "plus reserved) is at or over an alert threshold, by period and threshold.",
            ["period", "threshold"], registry=r,
        )
        # Series labelled with virtual key ids live apart: /metrics shows them only when
        # server.metrics_key_ids is set (they name customers and their spend).
        self.key_registry = CollectorRegistry()
        self.budget_remaining = Gauge(
            "spillgate_budget_remaining_usd", "Remaining paid budget per key and period.",
            ["key", "period"], registry=self.key_registry,
        )
        self.budget_used = Gauge(
            "spillgate_budget_used_ratio", "Used share (spent plus reserved) of a key's paid "
            "budget per period.", ["key", "period"], registry=self.key_registry,
        )
        self.key_guard_open = Gauge(
            "spillgate_key_spend_guard_open", "1 while a key's own spend guard is open.",
            ["key"], registry=self.key_registry,
        )
        # The request path's children, bound once per label tuple (Children).
        self.request_count = Children(self.requests)
        self.token_count = Children(self.tokens)
        self.ttft_of = Children(self.ttft)
        self.duration_of = Children(self.duration)
        self.sensitive_count = Children(self.sensitive)
        self.spend_guard_open.labels("node").set(0)
        self.spend_guard_open.labels("key").set(0)
        self._auto_total = 0
        self._auto_spilled = 0
        self._spilled_by_route: dict[str, int] = {}

    def record_auto(self, route: str, spilled: bool, reason: str) -> None:
        self._auto_total += 1
        if spilled:
            self._auto_spilled += 1
            self._spilled_by_route[route] = self._spilled_by_route.get(route, 0) + 1
            self.spill_decisions.labels(route, reason).inc()
        self.spill_ratio.set(self._auto_spilled / self._auto_total)

    def spilled_on(self, route: str) -> int:
        """auto requests of `route` sent to a paid API since start."""
        return self._spilled_by_route.get(route, 0)

    def render(self, key_ids: bool = False) -> bytes:
        page = generate_latest(self.registry)
        return page + generate_latest(self.key_registry) if key_ids else page
