"""Spend-guard benchmark: a 10x spend spike against the fake provider.

Real parts on loopback: the node (`spillgate serve`), the fake provider as the paid API, and
a second fake as the local engine, slowed to a 400 ms first token so every `auto` stream
misses its 50 ms local deadline and spills (reason overflow_deadline): paid spend follows the
request rate. The script offers open-loop `auto` streams (all non-sensitive) at a baseline
rate for several guard windows, then at ten times that rate, and reports

- when the guard opened (seconds after the spike began, and in windows: the target is at
  most two);
- of the auto requests sent while it was open, the share answered (200 and [DONE]; target
  at least 95%), and the share of those served locally;
- requests, spills and paid spend per phase.

It stops by itself (a fixed schedule, then the processes end). Usage:
    .venv/bin/python scripts/bench_spend_guard.py [--rate 4] [--window 2] [--json out.json]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.support import free_port, spawn, write_config

ADMIN = "admin-key-for-the-spend-guard-bench-0123"
BODY = {"model": "auto", "max_tokens": 16, "stream": True,
        "messages": [{"role": "user", "content": "Name a colour."}]}


@dataclass
class Outcome:
    sent_at: float  # seconds since the run began
    phase: str
    status: int
    done: bool
    backend: str
    reason: str


def _fake(tmp: Path, name: str) -> Any:
    port = free_port()
    return spawn(["-m", "spillgate.fakes.provider", "--port", str(port)], tmp / f"{name}.log",
                 f"http://127.0.0.1:{port}", f"http://127.0.0.1:{port}/health")


def _config(tmp: Path, local: str, paid: str) -> dict[str, Any]:
    return {
        "server": {"port": free_port()},
        "local": [{"name": "local-cpu", "model": "smollm2", "base_urls": [local + "/v1"],
                   "max_queue": 1024}],
        "providers": [{"name": "openai", "kind": "openai", "base_url": paid + "/v1",
                       "api_key_env": "FAKE_OPENAI_KEY", "models": ["gpt-4o-mini"],
                       "breaker_failures": 10_000}],
        "routes": [{"name": "auto", "policy": "auto", "local": "smollm2",
                    "paid": "openai/gpt-4o-mini", "local_deadline_ms": 50}],
        "ledger": {"dsn": f"sqlite+aiosqlite:///{tmp}/ledger.db"},
        "telemetry": {"nvml": False},
    }


async def _one(client: httpx.AsyncClient, url: str, began: float, phase: str,
               out: list[Outcome]) -> None:
    sent = time.monotonic() - began
    try:
        async with client.stream("POST", url, json=BODY) as reply:
            lines = [line async for line in reply.aiter_lines()]
            route = reply.headers.get("x-spillgate-route", "")
            out.append(Outcome(sent, phase, reply.status_code, "data: [DONE]" in lines,
                               reply.headers.get("x-spillgate-backend", ""),
                               route.partition("reason=")[2]))
    except httpx.HTTPError as exc:
        out.append(Outcome(sent, phase, 0, False, "", type(exc).__name__))


async def _watch_guard(root: str, began: float, stop: asyncio.Event) -> list[tuple[float, bool]]:
    """(seconds since start, open) at each change of the node guard, polled every 100 ms."""
    changes: list[tuple[float, bool]] = []
    async with httpx.AsyncClient(timeout=5) as client:
        last = False
        while not stop.is_set():
            live = (await client.get(root + "/admin/live",
                                     headers={"authorization": f"Bearer {ADMIN}"})).json()
            now_open = bool(live["spend_guard"]["node"]["open"])
            if now_open != last:
                changes.append((time.monotonic() - began, now_open))
                last = now_open
            await asyncio.sleep(0.1)
    return changes


async def _drive(root: str, rate: float, baseline_s: float, spike_s: float,
                 ) -> tuple[list[Outcome], list[tuple[float, bool]], float]:
    url = root + "/v1/chat/completions"
    out: list[Outcome] = []
    limits = httpx.Limits(max_connections=1000, max_keepalive_connections=200)
    async with httpx.AsyncClient(timeout=60, limits=limits) as client:
        began = time.monotonic()
        stop = asyncio.Event()
        watcher = asyncio.create_task(_watch_guard(root, began, stop))
        tasks = []
        for phase, per_s, length in (("baseline", rate, baseline_s),
                                     ("spike", rate * 10, spike_s)):
            start = time.monotonic() - began
            count = int(per_s * length)
            for i in range(count):  # open loop: evenly spaced sends, never waiting replies
                due = start + i / per_s
                await asyncio.sleep(max(0.0, due - (time.monotonic() - began)))
                tasks.append(asyncio.create_task(_one(client, url, began, phase, out)))
        await asyncio.gather(*tasks)
        stop.set()
        changes = await watcher
    return out, changes, baseline_s


def _summary(out: list[Outcome], changes: list[tuple[float, bool]], spike_at: float,
             window_s: float) -> dict[str, Any]:
    opened = next((t for t, is_open in changes if is_open), None)
    closed = next((t for t, is_open in changes if not is_open and opened and t > opened), None)
    phases = {}
    for phase in ("baseline", "spike"):
        rows = [o for o in out if o.phase == phase]
        phases[phase] = {"requests": len(rows),
                         "spilled": sum(o.backend == "openai" for o in rows),
                         "answered": sum(o.status == 200 and o.done for o in rows)}
    result: dict[str, Any] = {
        "window_s": window_s, "spike_at_s": spike_at, "phases": phases,
        "guard_opened_at_s": opened,
        "trip_after_spike_s": None if opened is None else opened - spike_at,
        "trip_after_spike_windows": None if opened is None else (opened - spike_at) / window_s,
    }
    if opened is not None:
        during = [o for o in out if o.sent_at >= opened and (closed is None or o.sent_at < closed)]
        answered = [o for o in during if o.status == 200 and o.done]
        result |= {
            "while_open_requests": len(during),
            "while_open_answered_share": len(answered) / len(during) if during else None,
            "while_open_local_share": (sum(o.backend == "local-cpu" for o in answered)
                                       / len(answered)) if answered else None,
            "while_open_reasons": sorted({o.reason for o in during}),
        }
    result["passed"] = bool(
        opened is not None and result["trip_after_spike_windows"] <= 2
        and (result.get("while_open_answered_share") or 0) >= 0.95)
    return result


def _table(r: dict[str, Any]) -> str:
    rows = [("phase", "requests", "spilled to paid", "answered")]
    rows += [(p, str(v["requests"]), str(v["spilled"]), str(v["answered"]))
             for p, v in r["phases"].items()]
    lines = ["  ".join(f"{c:>16}" for c in row) for row in rows]
    trip = r["trip_after_spike_s"]
    lines.append(f"guard opened {trip:.2f} s ({r['trip_after_spike_windows']:.2f} windows) "
                 "after the spike began" if trip is not None else "guard never opened")
    if trip is not None:
        lines.append(f"while open: {r['while_open_requests']} auto requests, "
                     f"{r['while_open_answered_share']:.1%} answered, "
                     f"{(r['while_open_local_share'] or 0):.1%} of those locally "
                     f"(reasons {', '.join(r['while_open_reasons'])})")
    lines.append("PASS" if r["passed"] else "FAIL")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=4.0, help="baseline auto requests/s")
    parser.add_argument("--window", type=float, default=2.0, help="guard window, seconds")
    parser.add_argument("--baseline-windows", type=int, default=7,
                        help="length of the baseline phase, in windows")
    parser.add_argument("--spike-windows", type=int, default=4,
                        help="length of the spike phase, in windows")
    parser.add_argument("--json", type=Path, help="also write the result here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        with _fake(tmp, "paid") as paid, _fake(tmp, "local") as local:
            httpx.post(local.base_url + "/_fake/faults", json={"ttft_ms": 400}).raise_for_status()
            # A node without a guard first: what one spilled request costs.
            with _node(tmp / "calibrate", local.base_url, paid.base_url, None) as root:
                per_request = asyncio.run(_cost_of_one(root))
            # The baseline rule's floor: 2.5 baseline windows' spend, so the quiet start (a
            # baseline of zero) does not trip it, and a tenfold window does.
            floor = per_request * Decimal(repr(args.rate * args.window)) * Decimal("2.5")
            guard = {"window_s": args.window, "baseline_windows": 5, "cooldown_s": 60,
                     "min_usd": str(floor), "node": {"baseline_multiple": 3}}
            with _node(tmp / "guarded", local.base_url, paid.base_url, guard) as root:
                out, changes, spike_at = asyncio.run(_drive(
                    root, args.rate, args.window * args.baseline_windows,
                    args.window * args.spike_windows))
    result = _summary(out, changes, spike_at, args.window)
    result["usd_per_spilled_request"] = str(per_request)
    result["min_usd"] = str(floor)
    print(_table(result))
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0 if result["passed"] else 1


@contextlib.contextmanager
def _node(tmp: Path, local: str, paid: str, guard: dict[str, Any] | None) -> Iterator[str]:
    tmp.mkdir()
    config = _config(tmp, local, paid)
    if guard is not None:
        config["spend_guard"] = guard
    path = write_config(tmp / "node.yaml", config)
    root = f"http://127.0.0.1:{config['server']['port']}"
    env = {"SPILLGATE_ADMIN_KEY": ADMIN, "FAKE_OPENAI_KEY": "sk-fake-bench-key-0123456"}
    with spawn(["-m", "spillgate", "serve", "--config", str(path)], tmp / "node.log",
               root + "/v1", root + "/readyz", env=env):
        yield root


async def _cost_of_one(root: str, samples: int = 3) -> Decimal:
    """Mean paid cost of a spilled stream, from the node's own report."""
    async with httpx.AsyncClient(timeout=60) as client:
        for _ in range(samples):
            async with client.stream("POST", root + "/v1/chat/completions", json=BODY) as r:
                await r.aread()
                if r.headers.get("x-spillgate-backend") != "openai":
                    raise RuntimeError("calibration: the stream did not spill")
        for _ in range(50):  # the ledger writes behind: wait for the rows
            report = (await client.get(root + "/admin/report", params={"since": "1h"},
                                       headers={"authorization": f"Bearer {ADMIN}"})).json()
            if report["totals"]["api_requests"] >= samples:
                return Decimal(report["totals"]["api_usd"]) / report["totals"]["api_requests"]
            await asyncio.sleep(0.1)
    raise RuntimeError("calibration: the ledger never showed the paid requests")


if __name__ == "__main__":
    sys.exit(main())
