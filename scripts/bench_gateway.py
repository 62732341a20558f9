"""Gateway overhead benchmark: side by side, one run, printed as a table and written as JSON.

(a) latency the gateway adds over calling a loopback fake upstream directly (the upstream
    answers after 20 ms): p50/p99 at concurrency 1, 16, 64, throughput as a share of direct;
(b) generated tokens/s through the gateway vs straight to the llama.cpp engine, c = 1 and 4
    (medians of interleaved rounds): as a burst (C identical requests at once, timed to the
    last one's end) and in steady state (scripts/stream_share.py: C clients back to back, the
    engine's own token counter over a window);
(c) gateway RSS idle and while holding 64 concurrent streams;
(d) gateway CPU time per request (user + system of the gateway process, from psutil, over a
    fixed number of requests at c = 1 and 16): the figure that stays honest on a loaded machine,
    where wall-clock latency is mostly other processes' noise; with each thread's share, the
    ledger writer thread's printed when py-spy is installed (it names the threads);
(e) the machine's floor (scripts/wake_rtt.py): a loopback round trip between two processes,
    back to back and with both asleep 20 ms between messages, the hop a proxy adds at c = 1;
    and its caches (scripts/cold_cache.py): the path's own steps warm and after 20 ms idle,
    which is what one client's requests find (c = 1's figure moves with it).
Direct and proxied runs alternate so drift on this shared 2-core machine hits both alike.

    .venv/bin/python scripts/bench_gateway.py [--quick] [--out var/bench_gateway.json]
    .venv/bin/python scripts/bench_gateway.py --cpu-only [--profile var/gateway.prof]
    .venv/bin/python scripts/bench_gateway.py --cpu-only --py-spy var/gateway.spy

Part (a) runs two floors beside the gateway: scripts/passthrough_floor.py (uvicorn, uvloop,
httptools and one aiohttp session: the server stack, nothing of the gateway's own) and its
`--raw` mode (an asyncio protocol and the gateway's plain_http client: no ASGI server).

--profile runs the gateway under cProfile and prints its top functions (cProfile slows the
gateway several-fold and misreads time across greenlet and coroutine switches: use it to see
where the time goes, not for the CPU figure; `py-spy record --gil --pid <gateway>` samples a
running gateway with less distortion; --py-spy does that around part (d), when py-spy is
installed, and prints the share of samples in each function, inclusive and on its own).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import pstats
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.support import REPO, bundled_gguf, free_port, spawn, write_config

import cold_cache
import host_cpu
import stream_share  # scripts/, beside this file
import wake_rtt
from bench_gateway_table import render
from spy_tables import spy_layers, spy_table

CHAT = {"model": "smollm2", "messages": [{"role": "user", "content": "Say ok."}],
        "max_tokens": 8}


async def _load(url: str | list[str], body: dict[str, Any], concurrency: int,
                total: int) -> dict[str, float]:
    """`concurrency` closed-loop clients sending `total` requests; with several URLs, client
    i sends to url[i % len(url)] (scripts/core_budget.py's gateways side by side)."""
    targets = [url] if isinstance(url, str) else url
    latencies: list[float] = []
    payload = json.dumps(body).encode()
    headers = {"content-type": "application/json"}
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        remaining = total

        async def worker(target: str) -> None:
            nonlocal remaining
            while remaining > 0:
                remaining -= 1
                t0 = time.perf_counter()
                async with session.post(target, data=payload, headers=headers) as r:
                    await r.read()
                    if r.status != 200:
                        raise RuntimeError(f"{target} answered {r.status}")
                latencies.append(time.perf_counter() - t0)

        began = time.perf_counter()
        await asyncio.gather(*(worker(targets[i % len(targets)]) for i in range(concurrency)))
        wall = time.perf_counter() - began
    latencies.sort()
    return {"p50_ms": 1000 * latencies[len(latencies) // 2],
            "p99_ms": 1000 * latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))],
            "rps": len(latencies) / wall}


async def _tokens(url: str, concurrency: int, rounds: int, model: str = "smollm2") -> float:
    """Generated tokens/s of `rounds` bursts of `concurrency` identical greedy streams."""
    body = {"model": model, "max_tokens": 96, "temperature": 0, "stream": True,
            "stream_options": {"include_usage": True},
            "messages": [{"role": "user", "content": "Write a long story about a robot."}]}
    tokens = 0
    # No total deadline: on a loaded machine one 96-token stream can outlast aiohttp's 5 min.
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None)) as session:
        async def one() -> None:
            nonlocal tokens
            async with session.post(url, json=body) as r:
                async for line in r.content:
                    if line.startswith(b"data: {") and b'"usage"' in line:
                        usage = json.loads(line[6:]).get("usage")
                        if usage:
                            tokens += usage["completion_tokens"]

        began = time.perf_counter()
        for _ in range(rounds):
            await asyncio.gather(*(one() for _ in range(concurrency)))
        return tokens / (time.perf_counter() - began)


async def _rss_under_streams(gateway_url: str, pid: int, streams: int) -> float:
    body = {**CHAT, "stream": True}
    peak = 0.0
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=streams)) as s:
        async def one() -> None:
            async with s.post(gateway_url, json=body) as r:
                async for _ in r.content:
                    pass

        task = asyncio.gather(*(one() for _ in range(streams)))
        while not task.done():
            peak = max(peak, psutil.Process(pid).memory_info().rss / 2**20)
            await asyncio.sleep(0.05)
        await task
    return peak


def _gateway_config(tmp: Path, upstream: str, port: int, shared: bool = False) -> Path:
    """One gateway's config; `shared`: the ledger file and hardware pool of every gateway
    started so (replicas on one host, each its own node_id), instead of its own ledger."""
    ledger = ({"dsn": f"sqlite+aiosqlite:///{tmp}/ledger-shared.db", "node_id": f"gw-{port}"}
              if shared else {"dsn": f"sqlite+aiosqlite:///{tmp}/ledger-{port}.db"})
    return write_config(tmp / f"gw-{port}.yaml", {
        "server": {"port": port},
        "local": [{"name": "upstream", "model": "smollm2", "base_urls": [upstream]}],
        "ledger": ledger,
        **({"cost": {"pool": "bench"}} if shared else {}),
    })


def _start_gateway(tmp: Path, upstream: str, profile: Path | None = None,
                   shared: bool = False) -> Any:
    port = free_port()
    config = _gateway_config(tmp, upstream, port, shared)
    argv = ["-m", "spillgate", "serve", "--config", str(config)]
    if profile is not None:
        argv = ["-m", "cProfile", "-o", str(profile), *argv]
    return spawn(argv, tmp / f"gw-{port}.log", f"http://127.0.0.1:{port}/v1",
                 f"http://127.0.0.1:{port}/readyz")


@contextlib.contextmanager
def probed_gateway(tmp: Path, upstream: str, probes: str, **env: str) -> Iterator[Any]:
    """A gateway whose interpreter first imports `probes` as its `sitecustomize` (from a
    folder under `tmp`), with `env` added to its environment: the gateway alone gets them.
    Stop it with SIGINT for the probes' `atexit` to run (uvicorn re-raises SIGTERM)."""
    site = tmp / "site"
    site.mkdir(exist_ok=True)
    (site / "sitecustomize.py").write_text(probes)
    with contextlib.ExitStack() as stack:
        saved = dict(os.environ)
        os.environ.update(env, PYTHONPATH=os.pathsep.join(
            [str(site), os.environ.get("PYTHONPATH", "")]))
        try:
            gateway = stack.enter_context(_start_gateway(tmp, upstream))
        finally:
            os.environ.clear()
            os.environ.update(saved)
        yield gateway


def _start_floor(tmp: Path, upstream: str, raw: bool = False) -> Any:
    port = free_port()
    argv = [str(REPO / "scripts" / "passthrough_floor.py"), "--upstream", upstream,
            "--port", str(port), *(["--raw"] if raw else [])]
    return spawn(argv, tmp / f"floor-{port}.log", f"http://127.0.0.1:{port}/v1",
                 f"http://127.0.0.1:{port}/health")


def _cpu_s(pid: int) -> float:
    times = psutil.Process(pid).cpu_times()
    return times.user + times.system


def part_d(proxied: str, pid: int, quick: bool,
           levels: tuple[int, ...] = (1, 16)) -> dict[str, Any]:
    """Gateway CPU per request: the process's CPU seconds over a fixed request count, and
    each thread's share (named when py-spy is installed: the ledger writer's, the loop's)."""
    out: dict[str, Any] = {}
    names = _thread_names(pid)
    for c in levels:
        total = (300 if quick else 1000) * (1 if c == 1 else 2 if c <= 16 else 6)
        before, threads_before = _cpu_s(pid), _thread_cpu(pid)
        asyncio.run(_load(proxied, CHAT, c, total))
        threads = {names.get(tid, f"thread {tid}"): 1e6 * (cpu - threads_before.get(tid, 0.0))
                   / total for tid, cpu in _thread_cpu(pid).items()}  # fmt: skip
        out[str(c)] = {"requests": total, "cpu_us_per_request": 1e6 * (_cpu_s(pid) - before)
                       / total, "threads_us_per_request": {k: v for k, v in threads.items() if v}}
    return out


def _thread_cpu(pid: int) -> dict[int, float]:
    return {t.id: t.user_time + t.system_time for t in psutil.Process(pid).threads()}


def _thread_names(pid: int) -> dict[int, str]:
    """Native thread id -> Python thread name, from `py-spy dump` (py-spy next to this
    Python or on PATH); empty without py-spy."""
    where = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    spy = shutil.which("py-spy", path=where)
    if spy is None:
        return {}
    dump = subprocess.run([spy, "dump", "--pid", str(pid)], capture_output=True, text=True,
                          timeout=60, check=False).stdout  # fmt: skip
    return {int(tid, 0): name for tid, name in
            re.findall(r'Thread (0x[0-9A-Fa-f]+|\d+) \(\w+\): "([^"]*)"', dump)}


def _upstream(tmp: Path) -> tuple[Any, str]:
    up_port = free_port()
    upstream = f"http://127.0.0.1:{up_port}/v1"
    up_argv = [str(REPO / "scripts" / "fake_upstream.py"), "--port", str(up_port),
               "--delay-ms", "20", "--chunks", "50", "--chunk-ms", "20"]
    return spawn(up_argv, tmp / "upstream.log", upstream,
                 f"http://127.0.0.1:{up_port}/health"), upstream


def cpu_only(tmp: Path, quick: bool, profile: Path | None, spy: Path | None = None,
             levels: tuple[int, ...] = (1, 16)) -> dict[str, Any]:
    up, upstream = _upstream(tmp)
    with up, _start_gateway(tmp, upstream, profile) as gw:
        proxied = gw.base_url + "/chat/completions"
        asyncio.run(_load(proxied, CHAT, 4, 200))  # warm-up: connections, caches
        with _sampled(gw.popen.pid, spy):
            result = {"cpu": part_d(proxied, gw.popen.pid, quick, levels)}
        # uvicorn re-raises the signal it stopped on: SIGINT's KeyboardInterrupt lets
        # cProfile write its file on the way out (SIGTERM would kill it first).
        gw.stop(signal.SIGINT)
        return result


@contextlib.contextmanager
def _sampled(pid: int, out: Path | None) -> Iterator[None]:
    """py-spy samples the gateway (collapsed stacks written to `out`) while the block runs."""
    if out is None:
        yield
        return
    argv = [str(Path(sys.executable).with_name("py-spy")), "record", "--pid", str(pid),
            "--gil", "--nonblocking", "--rate", "250", "--format", "raw", "-o", str(out)]
    spy = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(1.0)  # attached before the load starts
    try:
        yield
    finally:
        spy.send_signal(signal.SIGINT)
        spy.wait(timeout=60)


def part_a_and_c(tmp: Path, quick: bool) -> dict[str, Any]:
    up, upstream = _upstream(tmp)
    results: dict[str, Any] = {"latency": {}}
    with up, _start_gateway(tmp, upstream) as gw, _start_floor(tmp, upstream) as fl, \
            _start_floor(tmp, upstream, raw=True) as rf:
        direct, proxied = upstream + "/chat/completions", gw.base_url + "/chat/completions"
        floor, raw = fl.base_url + "/chat/completions", rf.base_url + "/chat/completions"
        asyncio.run(_load(proxied, CHAT, 4, 200))  # warm-up: connections, caches
        asyncio.run(_load(floor, CHAT, 4, 200))
        asyncio.run(_load(raw, CHAT, 4, 200))
        results["cpu"] = part_d(proxied, gw.popen.pid, quick)
        results["floor_cpu"] = part_d(floor, fl.popen.pid, quick)
        idle_rss = psutil.Process(gw.popen.pid).memory_info().rss / 2**20
        for c in (1, 16, 64):
            total = (150 if quick else 400) if c == 1 else (c * (15 if quick else 40))
            urls = {"direct": direct, "gateway": proxied, "floor": floor, "raw": raw}
            runs: dict[str, list[dict[str, float]]] = {kind: [] for kind in urls}
            # Rounds at c = 16 and 64 take a second or two each: five of them cost little
            # and steady the paired medians, where the machine's knee swings single rounds.
            began, host_before = time.perf_counter(), host_cpu.machine_times()
            for _ in range(2 if quick else (3 if c == 1 else 5)):
                for kind, url in urls.items():
                    runs[kind].append(asyncio.run(_load(url, CHAT, c, total)))
            host = host_cpu.cores(host_before, host_cpu.machine_times(),
                                  time.perf_counter() - began)  # fmt: skip
            results["latency"][str(c)] = _summarize(runs) | {"rounds": runs, "host": host}
        results["rss_mb"] = {
            "idle": idle_rss,
            "64_streams_peak": asyncio.run(_rss_under_streams(proxied, gw.popen.pid, 64)),
        }
    return results


def _summarize(runs: dict[str, list[dict[str, float]]]) -> dict[str, float]:
    def med(kind: str, key: str) -> float:
        return statistics.median(r[key] for r in runs[kind])

    def paired(diff: Callable[[dict[str, float], dict[str, float]], float]) -> float:
        return statistics.median(diff(g, d) for g, d in zip(runs["gateway"], runs["direct"],
                                                             strict=True))

    return {
        "direct_p50_ms": med("direct", "p50_ms"), "direct_p99_ms": med("direct", "p99_ms"),
        "gateway_p50_ms": med("gateway", "p50_ms"), "gateway_p99_ms": med("gateway", "p99_ms"),
        "added_p50_ms": med("gateway", "p50_ms") - med("direct", "p50_ms"),
        "added_p99_ms": med("gateway", "p99_ms") - med("direct", "p99_ms"),
        "throughput_share": med("gateway", "rps") / med("direct", "rps"),
        # the Python floor (scripts/passthrough_floor.py), same run: what any Python proxy
        # on this server stack adds before doing anything of its own
        "floor_added_p50_ms": med("floor", "p50_ms") - med("direct", "p50_ms"),
        "floor_added_p99_ms": med("floor", "p99_ms") - med("direct", "p99_ms"),
        "floor_throughput_share": med("floor", "rps") / med("direct", "rps"),
        # the raw floor (passthrough_floor.py --raw): no ASGI server, no client library
        "raw_added_p50_ms": med("raw", "p50_ms") - med("direct", "p50_ms"),
        "raw_added_p99_ms": med("raw", "p99_ms") - med("direct", "p99_ms"),
        "raw_throughput_share": med("raw", "rps") / med("direct", "rps"),
        # paired: each round's gateway run against the direct run just before it, then the
        # median over rounds, so drift between rounds (this VM's knee at c = 64) cancels
        "paired_added_p50_ms": paired(lambda g, d: g["p50_ms"] - d["p50_ms"]),
        "paired_added_p99_ms": paired(lambda g, d: g["p99_ms"] - d["p99_ms"]),
        "paired_throughput_share": paired(lambda g, d: g["rps"] / d["rps"]),
    }


def part_b(tmp: Path, quick: bool, engine_args: list[str] | None = None) -> dict[str, Any]:
    port = free_port()
    engine_url = f"http://127.0.0.1:{port}/v1"
    argv = ["-m", "spillgate.engines.llamacpp", "--model-path", bundled_gguf(),
            "--served-name", "smollm2", "--port", str(port), "--max-batch", "4",
            *(engine_args or [])]
    out: dict[str, Any] = {}
    with spawn(argv, tmp / "engine.log", engine_url, f"http://127.0.0.1:{port}/health"), \
            _start_gateway(tmp, engine_url) as gw:
        # Unmeasured bursts first, both paths: the first rounds after the engine starts ran
        # at about half speed on both (pages of the weights, caches), moving the medians.
        for base in (engine_url, gw.base_url):
            asyncio.run(_tokens(base + "/chat/completions", 4, 1 if quick else 3))
        for c in (1, 4):
            out[str(c)] = _burst_share(engine_url, gw.base_url, c, 3 if quick else 15)
        # The same in steady state (closed loop, arrivals spread by the streams' own ends).
        out["steady"] = stream_share.share(engine_url, gw.base_url, (1, 4),
                                           2 if quick else 6, 2.0, 6.0)
    return out


def _burst_share(engine_url: str, gateway_url: str, c: int, rounds: int) -> dict[str, Any]:
    """Tokens/s of c-stream bursts straight to the engine and through the gateway, in
    pairs. One round is a few seconds of decoding and single rounds swing by 10% here, so
    the medians of many rounds are compared; each pair runs back to back (the machine's
    drift hits both alike) in alternating order, and the median of the pairs' own ratios is
    reported beside the ratio of the medians."""
    runs: dict[str, list[float]] = {"direct": [], "gateway": []}
    for i in range(rounds):
        pair = [("direct", engine_url), ("gateway", gateway_url)]
        for kind, base in pair[::-1] if i % 2 else pair:
            runs[kind].append(asyncio.run(_tokens(base + "/chat/completions", c, 1)))
    d, g = statistics.median(runs["direct"]), statistics.median(runs["gateway"])
    paired = statistics.median(v / w for v, w in zip(runs["gateway"], runs["direct"],
                                                     strict=True))
    return {"direct_tps": d, "gateway_tps": g, "share": g / d, "paired_share": paired,
            "runs": runs}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer requests (smoke run)")
    parser.add_argument("--out", type=Path, default=REPO / "var" / "bench_gateway.json")
    parser.add_argument("--skip-engine", action="store_true", help="skip part (b)")
    parser.add_argument("--cpu-only", action="store_true", help="part (d) alone")
    parser.add_argument("--engine-only", action="store_true", help="part (b) alone")
    parser.add_argument("--engine-arg", action="append", default=[], dest="engine_args",
                        help="extra engine flag for part (b), e.g. --engine-arg=--weights "
                             "--engine-arg=iq4_nl (repeatable)")
    parser.add_argument("--profile", type=Path, help="with --cpu-only: cProfile output file")
    parser.add_argument("--py-spy", type=Path, dest="spy",
                        help="with --cpu-only: py-spy's collapsed stacks, written here")
    parser.add_argument("--levels", type=int, nargs="+", default=[1, 16],
                        help="with --cpu-only: the concurrencies measured (default 1 16)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        if args.cpu_only:
            results = cpu_only(tmp, args.quick, args.profile, args.spy, tuple(args.levels))
        elif args.engine_only:
            results = {"tokens_per_s": part_b(tmp, args.quick, args.engine_args)}
        else:
            results = part_a_and_c(tmp, args.quick)
            results["wake_rtt"] = wake_rtt.measure()
            results["cold_cache"] = cold_cache.measure(
                CHAT, rounds=60, idle_ms=20.0, evict_mib=64, gaps=[0.0, 20.0])
            if not args.skip_engine:
                _write(args.out, results)  # parts a, c, d kept if the engine part fails
                results["tokens_per_s"] = part_b(tmp, args.quick, args.engine_args)
    _write(args.out, results)
    print(render(results))
    if args.profile is not None:
        stats = pstats.Stats(str(args.profile))
        stats.sort_stats("tottime").print_stats(30)
        stats.sort_stats("cumulative").print_stats(40)
    if args.spy is not None:
        print(spy_table(args.spy))
        print(spy_layers(args.spy))
    print(f"\nwritten to {args.out}")


def _write(out: Path, results: dict[str, Any]) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
