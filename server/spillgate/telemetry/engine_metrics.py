"""Pure parsers: an engine's Prometheus /metrics text → one EngineReading.

Built on `prometheus_client.parser`. Samples are read by sample name (not family name) so the
parser does not depend on how the exposition groups `_total`/`_created`/`_bucket` lines, and
values are combined over label sets: a vLLM server with data-parallel engines reports one
series per `engine` label, and the node cares about the whole server.

Combination rules: gauges of work (running, waiting) and counters are summed over label sets;
KV-cache usage takes the maximum (the fullest engine is the one that preempts first);
histograms are summed bucket by bucket.

A page that parses but holds none of the engine's request gauges is a failed reading
(`ok=False`): that is what a wrong URL or a different server looks like, and treating it as
"zero load" would hide the problem.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Protocol

from prometheus_client.parser import text_string_to_metric_families

from spillgate.telemetry.snapshot import EngineReading, HistogramSummary


@dataclass(frozen=True, slots=True)
class EngineMetricNames:
    """Sample names of one engine kind. `kv_cache` lists names in order of preference."""

    running: str
    waiting: str
    kv_cache: tuple[str, ...]
    queue_capacity: str | None
    prompt_tokens: str
    generation_tokens: str
    completed: str | None
    ttft: str
    queue_time: str | None


VLLM_NAMES = EngineMetricNames(
    running="vllm:num_requests_running",
    waiting="vllm:num_requests_waiting",
    # vLLM 0.10 renamed gpu_cache_usage_perc; older servers only have the deprecated name.
    kv_cache=("vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc"),
    queue_capacity=None,
    prompt_tokens="vllm:prompt_tokens_total",
    generation_tokens="vllm:generation_tokens_total",
    completed="vllm:request_success_total",
    ttft="vllm:time_to_first_token_seconds",
    queue_time="vllm:request_queue_time_seconds",
)

LLAMACPP_NAMES = EngineMetricNames(
    running="spillgate_engine_requests_running",
    waiting="spillgate_engine_requests_waiting",
    kv_cache=(),
    queue_capacity="spillgate_engine_queue_capacity",
    prompt_tokens="spillgate_engine_prompt_tokens_total",
    generation_tokens="spillgate_engine_generation_tokens_total",
    completed="spillgate_engine_request_success_total",
    ttft="spillgate_engine_time_to_first_token_seconds",
    queue_time="spillgate_engine_request_queue_time_seconds",
)


@dataclass(frozen=True, slots=True)
class _Samples:
    """Sample values by name: the per-label-set values, and histogram buckets summed by `le`."""

    values: Mapping[str, tuple[float, ...]]
    buckets: Mapping[str, Mapping[float, float]]

    def total(self, name: str | None) -> float | None:
        found = self.values.get(name or "")
        return math.fsum(found) if found else None

    def largest(self, names: tuple[str, ...]) -> float | None:
        for name in names:
            found = self.values.get(name)
            if found:
                return max(found)
        return None

    def histogram(self, name: str | None) -> HistogramSummary | None:
        if name is None or name + "_count" not in self.values:
            return None
        buckets = tuple(sorted(self.buckets.get(name + "_bucket", {}).items()))
        return HistogramSummary(
            buckets=buckets,
            sum=self.total(name + "_sum") or 0.0,
            count=self.total(name + "_count") or 0.0,
        )


def _collect(text: str) -> _Samples:
    values: dict[str, list[float]] = defaultdict(list)
    buckets: dict[str, dict[float, float]] = defaultdict(dict)
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name.endswith("_bucket") and "le" in sample.labels:
                bound = float(sample.labels["le"])
                per_le = buckets[sample.name]
                per_le[bound] = per_le.get(bound, 0.0) + sample.value
            else:
                values[sample.name].append(sample.value)
    return _Samples(
        values={k: tuple(v) for k, v in values.items()},
        buckets={k: MappingProxyType(v) for k, v in buckets.items()},
    )


def parse_engine_metrics(
    text: str, names: EngineMetricNames, *, backend: str, url: str, at: float
) -> EngineReading:
    """Parse any engine's exposition with the given names; never raises on bad text."""
    try:
        samples = _collect(text)
    except (ValueError, IndexError) as exc:  # what the prometheus parser raises on bad text
        return EngineReading.failed(backend, url, at, f"unparsable /metrics: {exc}")
    running = samples.total(names.running)
    waiting = samples.total(names.waiting)
    if running is None and waiting is None:
        return EngineReading.failed(
            backend, url, at, f"no {names.running} or {names.waiting} on the page"
        )
    return EngineReading(
        backend=backend,
        url=url,
        ok=True,
        at=at,
        running=running,
        waiting=waiting,
        kv_cache_usage=samples.largest(names.kv_cache),
        queue_capacity=samples.total(names.queue_capacity),
        prompt_tokens_total=samples.total(names.prompt_tokens),
        generation_tokens_total=samples.total(names.generation_tokens),
        requests_completed_total=samples.total(names.completed),
        ttft=samples.histogram(names.ttft),
        queue_time=samples.histogram(names.queue_time),
    )


def parse_vllm(text: str, *, backend: str, url: str, at: float) -> EngineReading:
    """A vLLM server's /metrics (V1 engine, 0.10+; the pre-0.10 KV-cache name is accepted)."""
    return parse_engine_metrics(text, VLLM_NAMES, backend=backend, url=url, at=at)


def parse_llamacpp(text: str, *, backend: str, url: str, at: float) -> EngineReading:
    """Our llama.cpp engine's /metrics (`spillgate_engine_*`)."""
    return parse_engine_metrics(text, LLAMACPP_NAMES, backend=backend, url=url, at=at)


class Parser(Protocol):
    def __call__(self, text: str, *, backend: str, url: str, at: float) -> EngineReading: ...


PARSERS: Mapping[str, Parser] = MappingProxyType(
    {"vllm": parse_vllm, "llamacpp": parse_llamacpp}
)
