"""Tables for scripts/bench_gateway.py's results (kept apart: the benchmark is long enough)."""

from __future__ import annotations

import os
from typing import Any


def _floor(r: dict[str, Any], kind: str) -> str:
    if f"{kind}_added_p50_ms" not in r:  # results written before that floor was measured
        return "- | -"
    return (f"{r[f'{kind}_added_p50_ms']:.2f} / {r[f'{kind}_added_p99_ms']:.2f} | "
            f"{100 * r[f'{kind}_throughput_share']:.0f}%")


def _paired(r: dict[str, Any]) -> str:
    if "paired_added_p50_ms" not in r:  # results written before paired figures were kept
        return "- | -"
    return (f"{r['paired_added_p50_ms']:.2f} / {r['paired_added_p99_ms']:.2f} | "
            f"{100 * r['paired_throughput_share']:.0f}%")


def _render_tokens(tokens: dict[str, Any]) -> str:
    lines = ["| streams | measure | direct tok/s | gateway tok/s | share | median of paired "
             "rounds' shares |", "|---|---|---|---|---|---|"]
    steady = tokens.get("steady", {})
    for c, r in tokens.items():
        if c == "steady":
            continue
        paired = f"{100 * r['paired_share']:.1f}%" if "paired_share" in r else "-"
        lines.append(f"| {c} | burst | {r['direct_tps']:.1f} | {r['gateway_tps']:.1f} | "
                     f"{100 * r['share']:.1f}% | {paired} |")
        if c in steady:
            s = steady[c]
            paired = f"{100 * s['paired_share']:.1f}%" if "paired_share" in s else "-"
            lines.append(f"| {c} | steady | {s['direct_tps']:.1f} | {s['gateway_tps']:.1f} | "
                         f"{100 * s['share']:.1f}% | {paired} |")
    return "\n".join(lines)


def render(results: dict[str, Any]) -> str:
    if "cpu" not in results:  # --engine-only
        return _render_tokens(results["tokens_per_s"])
    lines = ["| concurrency | gateway CPU µs/request | of which ledger writer thread |",
             "|---|---|---|"]
    for c, r in results["cpu"].items():
        writer = r.get("threads_us_per_request", {}).get("ledger-writer")
        lines.append(f"| {c} | {r['cpu_us_per_request']:.0f} | "
                     f"{'n/a (no py-spy)' if writer is None else f'{writer:.0f}'} |")
    if "latency" not in results:
        return "\n".join(lines)
    if "floor_cpu" in results:
        lines += ["", "Python floor (scripts/passthrough_floor.py) CPU µs/request: " + ", ".join(
            f"c{c} {r['cpu_us_per_request']:.0f}" for c, r in results["floor_cpu"].items())]
    lines += ["", "| concurrency | direct p50 / p99 ms | gateway p50 / p99 ms "
              "| added p50 / p99 ms | throughput vs direct | floor added p50 / p99 ms "
              "| floor throughput | raw floor added p50 / p99 ms | raw floor throughput "
              "| paired rounds: added p50 / p99 ms | paired rounds: throughput |",
              "|---|---|---|---|---|---|---|---|---|---|---|"]
    for c, r in results["latency"].items():
        lines.append(
            f"| {c} | {r['direct_p50_ms']:.2f} / {r['direct_p99_ms']:.2f} | "
            f"{r['gateway_p50_ms']:.2f} / {r['gateway_p99_ms']:.2f} | "
            f"{r['added_p50_ms']:.2f} / {r['added_p99_ms']:.2f} | "
            f"{100 * r['throughput_share']:.0f}% | {_floor(r, 'floor')} | {_floor(r, 'raw')} | "
            f"{_paired(r)} |")
    if "tokens_per_s" in results:
        lines += ["", _render_tokens(results["tokens_per_s"])]
    if "wake_rtt" in results:
        lines += ["", "Machine floor (scripts/wake_rtt.py): " + "; ".join(
            f"{name.replace('_', ' ')} {r['p50_us']:.0f} / {r['p99_us']:.0f} µs"
            for name, r in results["wake_rtt"].items())
            + " (p50 / p99 loopback round trip between two processes: the hop a proxy adds)"]
    if "cold_cache" in results:
        steps = [r for name, r in results["cold_cache"]["steps"].items() if name != "nothing"]
        warm = sum(r["warm_us"] for r in steps)
        idle = sum(r["after_idle_us"] for r in steps)
        lines += ["", f"Machine caches (scripts/cold_cache.py): the path's JSON parse, admit, "
                      f"sensitivity scan and cost clock take {warm:.0f} µs of CPU warm and "
                      f"{idle:.0f} µs after 20 ms idle ({idle / warm:.0f}x): what each request "
                      "finds at c = 1"]
    hosts = {c: r["host"] for c, r in results["latency"].items() if "host" in r}
    if hosts:
        lines += ["", "Host CPU during part (a) (/proc/stat, all paths' rounds; cores of "
                      f"{os.cpu_count()}): " + "; ".join(
                          f"c = {c}: busy {h['cores_busy']:.2f}, idle {h['cores_idle']:.2f}, "
                          f"stolen by other guests {h['cores_steal']:.2f}"
                          for c, h in hosts.items())]
    rss = results["rss_mb"]
    lines += ["", f"gateway RSS: idle {rss['idle']:.0f} MB, "
                  f"64 streams peak {rss['64_streams_peak']:.0f} MB"]
    return "\n".join(lines)
