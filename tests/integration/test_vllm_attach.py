"""The node attached to already-running vLLM servers (two fakes), spilling on their telemetry.

Real processes on loopback: two fake vLLM servers (vLLM's routes and /metrics, load under our
control), the recording fake paid provider, and the node with `base_urls` (attach mode).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import run_node
from tests.support import Proc, free_port, spawn, wait_http

MODEL = "llama-3.1-8b-instruct-awq"


@pytest.fixture(scope="module")
def vllms(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[Proc]]:
    tmp = Path(tmp_path_factory.mktemp("vllms"))
    procs = []
    with spawn(*_fake_vllm(tmp, "a")) as a, spawn(*_fake_vllm(tmp, "b")) as b:
        procs = [a, b]
        yield procs


def _fake_vllm(tmp: Path, name: str) -> tuple[list[str], Path, str, str]:
    port = free_port()
    argv = ["-m", "spillgate.fakes.vllm", "--port", str(port), "--served-name", MODEL,
            "--max-concurrency", "4", "--prefill-ms", "20", "--latency-ms", "300"]
    base = f"http://127.0.0.1:{port}"
    return argv, tmp / f"vllm-{name}.log", base, base + "/health"


@pytest.fixture(scope="module")
def attached(vllms: list[Proc], paid_fake: Proc, tmp_path_factory: pytest.TempPathFactory,
             ) -> Iterator[Proc]:
    tmp = Path(tmp_path_factory.mktemp("attached"))
    config = {
        "server": {"port": free_port()},
        "local": [{"name": "gpu", "model": MODEL, "engine": "vllm", "max_batch": 4,
                   "base_urls": [v.base_url + "/v1" for v in vllms]}],
        "providers": [{"name": "openai", "kind": "openai", "base_url": paid_fake.base_url + "/v1",
                       "api_key_env": "FAKE_OPENAI_KEY", "models": ["gpt-4o-mini"]}],
        "routes": [{"name": "auto", "policy": "auto", "local": MODEL,
                    "paid": "openai/gpt-4o-mini", "ttft_slo_ms": 2000}],
        "telemetry": {"interval_s": 0.2, "stale_after_s": 1.0, "min_dwell_s": 0.5},
        "ledger": {"dsn": f"sqlite+aiosqlite:///{tmp}/ledger.db"},
    }
    with run_node(config, tmp) as proc:
        wait_http(proc.base_url.removesuffix("/v1") + "/readyz")
        yield proc


@pytest.fixture
def clean(vllms: list[Proc], fakes: tuple[Proc, Proc]) -> Iterator[None]:
    for v in vllms:
        httpx.delete(v.base_url + "/_fake/load").raise_for_status()
    yield
    for v in vllms:
        httpx.delete(v.base_url + "/_fake/load").raise_for_status()


def _chat(content: str = "Name a colour.") -> dict[str, object]:
    return {"model": "auto", "max_tokens": 8,
            "messages": [{"role": "user", "content": content}]}


def _served(vllm: Proc) -> float:
    text = httpx.get(vllm.base_url + "/metrics").text
    return sum(s.value for f in text_string_to_metric_families(text) for s in f.samples
               if s.name == "vllm:request_success_total")


def _route_of(node: Proc, content: str = "Name a colour.") -> tuple[str, str]:
    r = httpx.post(node.base_url + "/chat/completions", json=_chat(content), timeout=30)
    assert r.status_code == 200, r.text
    return r.headers["x-spillgate-backend"], r.headers["x-spillgate-route"]


def _wait_for_route(node: Proc, expected: str, timeout_s: float = 10.0) -> tuple[str, str]:
    deadline = time.monotonic() + timeout_s
    while True:
        backend, route = _route_of(node)
        if route.endswith(expected) or time.monotonic() > deadline:
            return backend, route
        time.sleep(0.1)


def test_requests_go_to_the_least_loaded_replica(attached: Proc, vllms: list[Proc],
                                                 clean: None) -> None:
    before = [_served(v) for v in vllms]

    async def burst() -> list[httpx.Response]:
        async with httpx.AsyncClient(timeout=30) as client:
            return list(await asyncio.gather(*(
                client.post(attached.base_url + "/chat/completions", json=_chat())
                for _ in range(6))))

    replies = asyncio.run(burst())
    assert all(r.status_code == 200 for r in replies)
    assert all(r.headers["x-spillgate-backend"] == "gpu" for r in replies)
    served = [_served(v) - b for v, b in zip(vllms, before, strict=True)]
    # Six concurrent requests, each replica holding its in-flight ones: an even split.
    assert served == [3, 3]


def test_kv_cache_pressure_spills_auto_and_recovers(attached: Proc, vllms: list[Proc],
                                                    fakes: tuple[Proc, Proc],
                                                    clean: None) -> None:
    _, paid = fakes
    assert _wait_for_route(attached, "reason=local_ok")[0] == "gpu"
    for v in vllms:
        httpx.post(v.base_url + "/_fake/load", json={"kv_cache_usage": 0.97}).raise_for_status()
    backend, route = _wait_for_route(attached, "reason=overflow_kv_cache")
    assert (backend, route) == ("openai", "auto;reason=overflow_kv_cache")
    metrics = httpx.get(attached.base_url.removesuffix("/v1") + "/metrics").text
    assert 'spillgate_route_spilling{route="auto"} 1.0' in metrics
    # A sensitive request under the same pressure stays local.
    card = "Charge 5555 5555 5555 4444 again."
    assert _route_of(attached, card) == ("gpu", "auto;reason=sensitive_local")
    assert not any("5555 5555" in str(r) for r in
                   httpx.get(paid.base_url + "/_fake/requests").json())
    for v in vllms:
        httpx.delete(v.base_url + "/_fake/load").raise_for_status()
    backend, route = _wait_for_route(attached, "reason=local_ok")
    assert (backend, route) == ("gpu", "auto;reason=local_ok")


def test_queue_beyond_the_objective_spills_only_the_excess(attached: Proc, vllms: list[Proc],
                                                           clean: None) -> None:
    for v in vllms:  # each decode takes 1.5 s: slots stay full while the burst lasts
        httpx.post(v.base_url + "/_fake/load", json={"latency_s": 1.5}).raise_for_status()

    async def burst(n: int) -> list[httpx.Response]:
        async with httpx.AsyncClient(timeout=30) as client:
            return list(await asyncio.gather(*(
                client.post(attached.base_url + "/chat/completions", json=_chat())
                for _ in range(n))))

    replies = asyncio.run(burst(16))
    assert all(r.status_code == 200 for r in replies)
    local = [r for r in replies if r.headers["x-spillgate-backend"] == "gpu"]
    spilled = [r for r in replies if r.headers["x-spillgate-backend"] == "openai"]
    # Two replicas x 4 slots hold 8 at once; with no service rate measured yet nothing
    # queues on a guess, so the other 8 spill, each labelled with its reason.
    assert len(local) >= 8 and spilled
    # A scrape that lands mid-burst sees every slot busy, which the fake reports as a full KV
    # cache (running / max_concurrency): that spill is labelled overflow_kv_cache.
    assert {r.headers["x-spillgate-route"] for r in spilled} <= {
        "auto;reason=overflow_queue", "auto;reason=telemetry_unknown",
        "auto;reason=overflow_kv_cache"}
