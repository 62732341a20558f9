#!/usr/bin/env python3
"""Where the machine's cores go at one concurrency, direct and through the gateway.

Issue 14's c = 64 goal asks the gateway to keep 70% of direct throughput. A second gateway
process (SO_REUSEPORT) or moving the ledger writer out of the gateway's GIL can only help if
the machine has a core to give them. This script measures that instead of estimating it.

It starts the 20 ms fake upstream and a gateway (as scripts/bench_gateway.py does), then runs
`--rounds` pairs of rounds, direct then gateway, alternating which goes first, each round
`--requests` requests at `--c` from this process's client. For every round it reads
  - the CPU seconds (user + system) of each party, from psutil: the client (this process),
    the fake upstream, the gateway;
  - the whole machine's busy, idle and stolen time, from /proc/stat;
and prints, per path, medians over the rounds: requests/s, CPU µs per request of each party,
and the cores in use. Then a hand model: if the machine's busy cores stay what they were in
the gateway rounds, and the client and upstream cost per request what they cost there, the
throughput the gateway could reach with its CPU per request cut by half, or with the idle
cores busy too (what a second process could use at most), is arithmetic on those figures.

`--gateways 2` starts two independent gateways (each its own port, ledger and cost clock; not
a deployable setup) and spreads the clients over them: what a second process buys before any
of the state a real split would share. With `--one-ledger` they share one SQLite ledger and
hardware pool (`cost.pool`, each its own `node_id`): two replicas as they can be deployed,
their ledger writes contending for one file and the hardware booked once.

    .venv/bin/python scripts/core_budget.py [--c 64] [--requests 4000] [--rounds 4]
        [--gateways 1] [--one-ledger] [--out var/core_budget.json]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil

import bench_gateway  # scripts/, beside this file
from host_cpu import cores, machine_times


def cpu_s(pids: list[int]) -> float:
    return sum(t.user + t.system for t in (psutil.Process(p).cpu_times() for p in pids))


def one_round(url: str | list[str], c: int, requests: int,
              parties: dict[str, list[int]]) -> dict[str, Any]:
    before = {name: cpu_s(pids) for name, pids in parties.items()}
    machine_before, began = machine_times(), time.perf_counter()
    load = asyncio.run(bench_gateway._load(url, bench_gateway.CHAT, c, requests))
    machine = cores(machine_before, machine_times(), time.perf_counter() - began)
    per_request = {name: 1e6 * (cpu_s(pids) - before[name]) / requests
                   for name, pids in parties.items()}
    return {"rps": load["rps"], "p50_ms": load["p50_ms"], "p99_ms": load["p99_ms"],
            "cpu_us_per_request": per_request,
            "cores_busy": machine["cores_busy"], "cores_idle": machine["cores_idle"],
            "cores_stolen": machine["cores_steal"]}


def summary(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    med = lambda key: statistics.median(r[key] for r in rounds)  # noqa: E731
    parties = rounds[0]["cpu_us_per_request"]
    return {"rps": med("rps"), "p50_ms": med("p50_ms"), "p99_ms": med("p99_ms"),
            # one Python process cannot use much over one core (the GIL): the gateway's
            "gateway_cores": statistics.median(r["cpu_us_per_request"]["gateway"] * r["rps"]
                                               / 1e6 for r in rounds),
            "cores_busy": med("cores_busy"), "cores_idle": med("cores_idle"),
            "cores_stolen": med("cores_stolen"),
            "cpu_us_per_request": {p: statistics.median(r["cpu_us_per_request"][p]
                                                        for r in rounds) for p in parties}}


def hand_model(direct: dict[str, Any], gateway: dict[str, Any]) -> dict[str, float]:
    """Requests/s the gateway path could reach if every busy core's worth of CPU stayed
    busy and each party cost per request what it cost in the gateway rounds."""
    cost = gateway["cpu_us_per_request"]
    others = cost["client"] + cost["upstream"]
    cores = gateway["cores_busy"]
    ceiling = lambda gw_us, cores_: 1e6 * cores_ / (others + gw_us)  # noqa: E731
    return {"direct_rps": direct["rps"], "gateway_rps": gateway["rps"],
            "model_rps_as_measured": ceiling(cost["gateway"], cores),
            "model_rps_gateway_cpu_halved": ceiling(cost["gateway"] / 2, cores),
            # a second gateway process (or the ledger writer in one) could use the idle
            # cores at most; the stolen ones belong to other guests
            "model_rps_idle_cores_used": ceiling(cost["gateway"], cores + gateway["cores_idle"]),
            "machine_cores": float(psutil.cpu_count() or 0)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--c", type=int, default=64)
    parser.add_argument("--requests", type=int, default=4000)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--gateways", type=int, default=1,
                        help="independent gateway processes (own ports and ledgers), the "
                             "clients spread over them: what a second process could buy "
                             "before any state is shared")
    parser.add_argument("--one-ledger", action="store_true",
                        help="the gateways share one SQLite ledger and hardware pool (each "
                             "its own node_id): replicas as deployed, writes contending")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1]
                        / "var" / "core_budget.json")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        up, upstream = bench_gateway._upstream(tmp)
        with up as up_proc, contextlib.ExitStack() as stack:
            gateways = [stack.enter_context(bench_gateway._start_gateway(
                tmp, upstream, shared=args.one_ledger)) for _ in range(args.gateways)]
            urls: dict[str, str | list[str]] = {
                "direct": upstream + "/chat/completions",
                "gateway": [gw.base_url + "/chat/completions" for gw in gateways]}
            parties = {"client": [os.getpid()], "upstream": [up_proc.popen.pid],
                       "gateway": [gw.popen.pid for gw in gateways]}
            asyncio.run(bench_gateway._load(urls["gateway"], bench_gateway.CHAT, 16, 500))
            rounds: dict[str, list[dict[str, Any]]] = {"direct": [], "gateway": []}
            for i in range(args.rounds):
                for path in (("direct", "gateway") if i % 2 == 0 else ("gateway", "direct")):
                    rounds[path].append(one_round(urls[path], args.c, args.requests, parties))
    result = {"c": args.c, "requests": args.requests, "gateways": args.gateways,
              "one_ledger": args.one_ledger,
              "rounds": rounds,
              "direct": summary(rounds["direct"]), "gateway": summary(rounds["gateway"])}
    result["hand_model"] = hand_model(result["direct"], result["gateway"])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(render(result))
    print(f"wrote {args.out}")


def render(result: dict[str, Any]) -> str:
    lines = [f"c = {result['c']}, {result.get('gateways', 1)} gateway process(es), "
             f"{result['requests']} requests a round, medians of "
             f"{len(result['rounds']['direct'])} rounds each",
             "| path | requests/s | p50 / p99 ms | client µs/req | upstream µs/req | "
             "gateway µs/req | gateway cores | machine cores busy / idle / stolen |",
             "|---|---|---|---|---|---|---|---|"]
    for path in ("direct", "gateway"):
        s = result[path]
        cost = s["cpu_us_per_request"]
        lines.append(f"| {path} | {s['rps']:.0f} | {s['p50_ms']:.2f} / {s['p99_ms']:.2f} | "
                     f"{cost['client']:.0f} | {cost['upstream']:.0f} | "
                     f"{cost['gateway']:.0f} | {s['gateway_cores']:.2f} | "
                     f"{s['cores_busy']:.2f} / {s['cores_idle']:.2f} / {s['cores_stolen']:.2f} |")
    m = result["hand_model"]
    lines.append(
        "hand model (busy cores / CPU per request, gateway rounds): "
        f"{m['model_rps_as_measured']:.0f} requests/s as measured ({m['gateway_rps']:.0f} "
        f"seen), {m['model_rps_gateway_cpu_halved']:.0f} with the gateway's CPU halved, "
        f"{m['model_rps_idle_cores_used']:.0f} with the idle cores busy too; direct "
        f"{m['direct_rps']:.0f}")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
