"""The engine's Prometheus metrics, on a registry of its own (never the process default).

Names are listed in the package docstring; `spillgate.telemetry.engine_metrics` parses them.
All metric objects are thread-safe: the decode thread updates them directly.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

_TTFT_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 7.5, 10.0,
                 20.0, 40.0, 80.0)
_E2E_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 15.0, 30.0, 60.0, 120.0, 300.0)


class EngineMetrics:
    """Gauges of load, token counters and latency histograms of one engine process."""

    def __init__(self, queue_capacity: int, max_batch: int) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.running = Gauge("spillgate_engine_requests_running",
                             "Sequences being decoded now.", registry=r)
        self.waiting = Gauge("spillgate_engine_requests_waiting",
                             "Requests queued for a decode slot.", registry=r)
        self.queue_capacity = Gauge("spillgate_engine_queue_capacity",
                                    "Waiting requests accepted before answering 429.", registry=r)
        self.batch_capacity = Gauge("spillgate_engine_batch_capacity",
                                    "Sequences decoded together at most.", registry=r)
        self.prompt_tokens = Counter("spillgate_engine_prompt_tokens",
                                     "Prompt tokens processed.", registry=r)
        self.prompt_tokens_cached = Counter(
            "spillgate_engine_prompt_tokens_cached",
            "Prompt tokens a slot's KV cache still held from its previous request (not "
            "computed again).", registry=r)
        self.generation_tokens = Counter("spillgate_engine_generation_tokens",
                                         "Tokens generated.", registry=r)
        self.ttft = Histogram("spillgate_engine_time_to_first_token_seconds",
                              "Arrival to first generated token, queueing included.",
                              buckets=_TTFT_BUCKETS, registry=r)
        self.queue_time = Histogram("spillgate_engine_request_queue_time_seconds",
                                    "Arrival to getting a decode slot.",
                                    buckets=_TTFT_BUCKETS, registry=r)
        self.e2e = Histogram("spillgate_engine_e2e_request_latency_seconds",
                             "Arrival to last token.", buckets=_E2E_BUCKETS, registry=r)
        self.success = Counter("spillgate_engine_request_success",
                               "Requests finished, by finish_reason (stop, length).",
                               ["finish_reason"], registry=r)
        self.aborted = Counter("spillgate_engine_requests_aborted",
                               "Requests dropped because the client went away.", registry=r)
        self.rejected = Counter("spillgate_engine_requests_rejected",
                                "Requests answered 429 because the queue was full.", registry=r)
        self.queue_capacity.set(queue_capacity)
        self.batch_capacity.set(max_batch)
        for reason in ("stop", "length"):
            self.success.labels(finish_reason=reason)

    def render(self) -> bytes:
        return generate_latest(self.registry)
