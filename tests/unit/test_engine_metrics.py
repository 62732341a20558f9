"""Engine /metrics parsers on exposition text in vLLM's real format (tests/fixtures), and the
sampler that runs them every period."""

from __future__ import annotations

import asyncio
import itertools
import math
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest

from spillgate.errors import ConfigError
from spillgate.telemetry.engine_metrics import PARSERS, parse_llamacpp, parse_vllm
from spillgate.telemetry.sampler import TelemetrySampler, metrics_url
from spillgate.telemetry.snapshot import (
    CapacitySnapshot,
    EngineReading,
    GpuReading,
    HistogramSummary,
)

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
URL = "http://127.0.0.1:8001/metrics"


def fixture(name: str) -> str:
    return (FIXTURES / name).read_text()


def test_vllm_gauges_counters_and_histograms() -> None:
    r = parse_vllm(fixture("vllm_metrics_v010.txt"), backend="gpu", url=URL, at=12.5)
    assert (r.ok, r.backend, r.url, r.at) == (True, "gpu", URL, 12.5)
    assert (r.running, r.waiting, r.kv_cache_usage) == (3.0, 2.0, 0.4375)
    assert (r.prompt_tokens_total, r.generation_tokens_total) == (18432.0, 7421.0)
    assert r.requests_completed_total == 42.0  # stop + length + abort label sets
    assert r.ttft is not None and r.queue_time is not None
    assert r.ttft.count == 10.0
    assert math.isclose(r.ttft.sum, 3.376, rel_tol=1e-9)
    assert r.ttft.buckets[-1] == (math.inf, 10.0)
    assert dict(r.ttft.buckets)[0.25] == 7.0  # cumulative: 7 of 10 first tokens within 250 ms
    assert r.queue_time.count == 7.0


def test_vllm_sums_data_parallel_engines_and_takes_fullest_kv_cache() -> None:
    r = parse_vllm(fixture("vllm_metrics_dp2.txt"), backend="gpu", url=URL, at=0.0)
    assert (r.running, r.waiting) == (6.0, 5.0)
    assert r.kv_cache_usage == 0.93
    assert r.generation_tokens_total == 2000.0
    assert r.requests_completed_total == 31.0
    assert r.ttft is not None and r.ttft.count == 6.0
    assert dict(r.ttft.buckets)[0.1] == 2.0  # engine 0: 0.05, 0.07 ; engine 1: none


def test_vllm_before_0_10_uses_deprecated_kv_cache_name() -> None:
    text = fixture("vllm_metrics_legacy.txt")
    assert "vllm:kv_cache_usage_perc" not in text
    r = parse_vllm(text, backend="gpu", url=URL, at=0.0)
    assert r.ok and r.kv_cache_usage == 0.125 and r.running == 1.0


def test_current_kv_cache_name_wins_when_both_present() -> None:
    text = (
        "vllm:num_requests_running 0\n"
        "vllm:gpu_cache_usage_perc 0.1\n"
        "vllm:kv_cache_usage_perc 0.7\n"
    )
    assert parse_vllm(text, backend="b", url=URL, at=0.0).kv_cache_usage == 0.7


def test_page_without_engine_gauges_is_a_failed_reading() -> None:
    r = parse_vllm(fixture("vllm_metrics_v010.txt").replace("vllm:num_requests", "other"),
                   backend="gpu", url=URL, at=3.0)
    assert not r.ok and r.running is None and "vllm:num_requests_running" in (r.error or "")


@pytest.mark.parametrize("text", ["<html>not metrics</html>", 'x{le="a"} 1\n', "a b c d\n"])
def test_garbage_never_raises(text: str) -> None:
    r = parse_vllm(text, backend="gpu", url=URL, at=1.0)
    assert not r.ok and r.error


LLAMACPP_TEXT = """\
# HELP spillgate_engine_requests_running Requests being decoded.
# TYPE spillgate_engine_requests_running gauge
spillgate_engine_requests_running{model="smollm2"} 4.0
# HELP spillgate_engine_requests_waiting Requests queued for a decode slot.
# TYPE spillgate_engine_requests_waiting gauge
spillgate_engine_requests_waiting{model="smollm2"} 7.0
# HELP spillgate_engine_queue_capacity Waiting requests accepted before 429.
# TYPE spillgate_engine_queue_capacity gauge
spillgate_engine_queue_capacity{model="smollm2"} 16.0
# HELP spillgate_engine_prompt_tokens_total Prompt tokens processed.
# TYPE spillgate_engine_prompt_tokens_total counter
spillgate_engine_prompt_tokens_total{model="smollm2"} 900.0
spillgate_engine_prompt_tokens_created{model="smollm2"} 1.7e+09
# HELP spillgate_engine_generation_tokens_total Tokens generated.
# TYPE spillgate_engine_generation_tokens_total counter
spillgate_engine_generation_tokens_total{model="smollm2"} 300.0
# HELP spillgate_engine_time_to_first_token_seconds Time to first token.
# TYPE spillgate_engine_time_to_first_token_seconds histogram
spillgate_engine_time_to_first_token_seconds_bucket{le="0.1",model="smollm2"} 2.0
spillgate_engine_time_to_first_token_seconds_bucket{le="1.0",model="smollm2"} 5.0
spillgate_engine_time_to_first_token_seconds_bucket{le="+Inf",model="smollm2"} 6.0
spillgate_engine_time_to_first_token_seconds_sum{model="smollm2"} 4.5
spillgate_engine_time_to_first_token_seconds_count{model="smollm2"} 6.0
"""


def test_llamacpp_engine_metrics() -> None:
    r = parse_llamacpp(LLAMACPP_TEXT, backend="cpu", url=URL, at=2.0)
    assert r.ok and (r.running, r.waiting, r.queue_capacity) == (4.0, 7.0, 16.0)
    assert (r.prompt_tokens_total, r.generation_tokens_total) == (900.0, 300.0)
    assert r.kv_cache_usage is None and r.queue_time is None
    assert r.ttft == HistogramSummary(((0.1, 2.0), (1.0, 5.0), (math.inf, 6.0)), 4.5, 6.0)


def test_parsers_do_not_read_each_others_pages() -> None:
    assert not parse_llamacpp(fixture("vllm_metrics_v010.txt"), backend="b", url=URL, at=0).ok
    assert not parse_vllm(LLAMACPP_TEXT, backend="b", url=URL, at=0).ok
    assert set(PARSERS) == {"vllm", "llamacpp"}


def test_histogram_delta_mean_and_quantile() -> None:
    older = HistogramSummary(((0.1, 2.0), (1.0, 4.0), (math.inf, 4.0)), 1.0, 4.0)
    newer = HistogramSummary(((0.1, 2.0), (1.0, 8.0), (math.inf, 10.0)), 9.0, 10.0)
    delta = newer.since(older)
    assert delta is not None
    assert delta.count == 6.0 and delta.mean() == pytest.approx(8.0 / 6.0)
    assert delta.buckets == ((0.1, 0.0), (1.0, 4.0), (math.inf, 6.0))
    assert delta.quantile(0.5) == pytest.approx(0.1 + 0.9 * 0.75)
    assert delta.quantile(0.99) == 1.0  # in the +Inf bucket: its lower edge
    assert older.since(newer) is None  # counters went down: the engine restarted


# --- the sampler that feeds these parsers ------------------------------------------------------


class FakeGpus:
    """A GPU reader: one board, or an exception to raise."""

    def __init__(self, available: bool = True, read_s: float = 0.0) -> None:
        self.available = available
        self.fail: Exception | None = None
        self.reads = 0
        self.read_s = read_s

    def read(self) -> tuple[GpuReading, ...]:
        time.sleep(self.read_s)  # a slow board: stop() may come while a read is in its thread
        self.reads += 1
        if self.fail:
            raise self.fail
        return (GpuReading(0, 0.5, 1, 2, 300.0, 60.0, float(self.reads)),)


class Pages:
    """scrape(url): the page text, or an exception / a hang per URL."""

    def __init__(self, pages: dict[str, str | Exception | None]) -> None:
        self.pages = pages

    async def __call__(self, url: str) -> str:
        page = self.pages[url]
        if page is None:
            await asyncio.sleep(3600)
        if isinstance(page, Exception):
            raise page
        return str(page)


def counting_clock() -> Callable[[], float]:
    ticks = itertools.count(100)
    return lambda: float(next(ticks))


async def test_sampler_round_builds_one_snapshot() -> None:
    gpu_url, cpu_url, down = (f"http://127.0.0.1:{p}/metrics" for p in (1, 2, 3))
    pages = Pages({gpu_url: fixture("vllm_metrics_v010.txt"), cpu_url: LLAMACPP_TEXT,
                   down: ConnectionRefusedError("refused")})
    sampler = TelemetrySampler(
        FakeGpus(), pages, {"gpu": [(gpu_url, "vllm")], "cpu": [(cpu_url, "llamacpp"),
                                                                 (down, "llamacpp")]},
        inflight=lambda: {"cpu": 3}, clock=counting_clock(),
    )
    snap = await sampler.sample_once()
    assert snap.nvml_available and [g.utilization_ratio for g in snap.gpus] == [0.5]
    assert snap.inflight == {"cpu": 3}
    assert [r.running for r in snap.engines["gpu"]] == [3.0]
    ok, failed = snap.engines["cpu"]
    assert ok.ok and ok.waiting == 7.0
    assert not failed.ok and "ConnectionRefusedError" in (failed.error or "")
    assert failed.at >= 100.0 and snap.taken_at > failed.at
    assert snap.fresh_engines("cpu", snap.taken_at, 5.0) == (ok,)


async def test_hung_scrape_times_out_as_failed_reading() -> None:
    url = "http://127.0.0.1:9/metrics"
    sampler = TelemetrySampler(FakeGpus(False), Pages({url: None}), {"cpu": [(url, "llamacpp")]},
                               inflight=dict, scrape_timeout_s=0.05)
    (reading,) = (await sampler.sample_once()).engines["cpu"]
    assert not reading.ok and "TimeoutError" in (reading.error or "")


async def test_loop_survives_failures_and_stops() -> None:
    url = "http://127.0.0.1:9/metrics"
    gpus = FakeGpus(read_s=0.02)
    calls = itertools.count()

    def inflight() -> dict[str, int]:
        if next(calls) == 1:
            raise RuntimeError("boom")
        return {"cpu": 1}

    sampler = TelemetrySampler(gpus, Pages({url: LLAMACPP_TEXT}), {"cpu": [(url, "llamacpp")]},
                               inflight=inflight, interval_s=0.01)
    await sampler.start()
    first = sampler.snapshot()
    gpus.fail = RuntimeError("GPU is lost")
    for _ in range(200):
        await asyncio.sleep(0.01)
        if next(iter(sampler.snapshot().engines["cpu"])).at > first.taken_at + 0.05:
            break
    await sampler.stop()
    later = sampler.snapshot()
    assert later.taken_at > first.taken_at and later.engines["cpu"][0].ok
    assert later.gpus == first.gpus  # kept (and ageing) while the reader fails
    rounds = gpus.reads
    await asyncio.sleep(0.05)
    assert gpus.reads == rounds  # stopped means stopped


def test_sampler_rejects_unknown_engine_kind() -> None:
    with pytest.raises(ConfigError):
        TelemetrySampler(FakeGpus(), Pages({}), {"x": [("u", "tgi")]}, inflight=dict)


@pytest.mark.parametrize("base", ["http://127.0.0.1:8081/v1", "http://127.0.0.1:8081/v1/",
                                  "http://127.0.0.1:8081"])
def test_metrics_url(base: str) -> None:
    assert metrics_url(base) == "http://127.0.0.1:8081/metrics"


def _gpu(watts: float | None, at: float) -> GpuReading:
    return GpuReading(0, 0.5, 1, 2, watts, 50.0, at)


def test_gpu_power_is_known_only_when_every_gpu_has_a_fresh_reading() -> None:
    two = (_gpu(300.0, 9.0), replace(_gpu(250.0, 9.0), index=1))
    assert CapacitySnapshot(gpus=two, nvml_available=True).gpu_power(10.0, 5.0) == 275.0
    stale = (two[0], replace(two[1], at=1.0))
    assert CapacitySnapshot(gpus=stale, nvml_available=True).gpu_power(10.0, 5.0) is None
    silent = (two[0], replace(two[1], power_watts=None))
    assert CapacitySnapshot(gpus=silent, nvml_available=True).gpu_power(10.0, 5.0) is None
    assert CapacitySnapshot(nvml_available=False).gpu_power(10.0, 5.0) is None


def test_external_running_is_what_the_engines_run_beyond_our_requests() -> None:
    def engine(running: float, at: float = 9.0) -> EngineReading:
        return EngineReading("gpu", "u", True, at, running=running, waiting=0.0)

    snap = CapacitySnapshot(engines={"gpu": (engine(3.0), engine(2.0))}, inflight={"gpu": 4})
    assert snap.external_running(10.0, 5.0) == 1
    ours_queued = CapacitySnapshot(engines={"gpu": (engine(2.0),)}, inflight={"gpu": 6})
    assert ours_queued.external_running(10.0, 5.0) == 0
    stale = CapacitySnapshot(engines={"gpu": (engine(8.0, at=1.0),)}, inflight={})
    assert stale.external_running(10.0, 5.0) == 0  # unknown is not busy
