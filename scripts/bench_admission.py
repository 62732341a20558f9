"""Cost of admission per request: `protocol.admit` in full, and the share of it spent in
`shapes.check` (depth limit + translated-field shapes), on a small chat body and on one with
tools and a multi-turn tool conversation. Pure CPU, no I/O.

    .venv/bin/python scripts/bench_admission.py [--n 20000]
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from spillgate import shapes
from spillgate.protocol import admit
from spillgate.settings import ServerSettings

SMALL = {"model": "auto", "messages": [{"role": "user", "content": "Say ok."}],
         "max_tokens": 8}
TOOLS = {
    "model": "auto", "max_tokens": 64, "stop": ["END"], "tool_choice": "auto",
    "tools": [{"type": "function", "function": {
        "name": f"tool{i}", "description": "look something up",
        "parameters": {"type": "object", "properties": {
            "q": {"type": "string"}, "n": {"type": "integer"},
            "filters": {"type": "object", "properties": {"tag": {"type": "string"}}}}}}}
        for i in range(8)],
    "messages": [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": [{"type": "text", "text": "find x"}]},
        {"role": "assistant", "content": None, "tool_calls": [{"id": "c1", "type": "function",
         "function": {"name": "tool0", "arguments": "{\"q\": \"x\"}"}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "found x"},
        {"role": "user", "content": "thanks, and y?"},
    ],
}


def per_call_us(fn: Callable[[], object], n: int) -> float:
    for _ in range(min(n, 1000)):
        fn()
    started = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - started) / n * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=20000)
    args = parser.parse_args()
    limits = ServerSettings()
    print(f"{'body':8} {'admit us':>10} {'shapes.check us':>16} {'share':>6}")
    for name, body in (("small", SMALL), ("tools", TOOLS)):
        raw = orjson.dumps(body)
        full = per_call_us(lambda raw=raw: admit("chat/completions", raw, limits), args.n)
        parsed = orjson.loads(raw)
        part = per_call_us(lambda p=parsed: shapes.check("chat/completions", p), args.n)
        print(f"{name:8} {full:10.1f} {part:16.1f} {part / full:6.0%}")


if __name__ == "__main__":
    main()
