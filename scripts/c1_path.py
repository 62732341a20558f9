#!/usr/bin/env python3
"""Where one client's request spends the gateway's time: the critical path at c = 1, in parts.

Starts the 20 ms fake upstream and a gateway whose interpreter loads a `sitecustomize` from a
temporary folder. That module wraps, in the gateway process only, the httptools parser
callbacks, the hot route, the plain_http client's POST and the response's write with
`perf_counter` stamps. Then one client sends `--requests` requests back to back, and the
gateway writes the median of each part when it stops:
  recv->parsed    first byte of the request to the parser's message end (uvicorn)
  parsed->enter   to the hot route's first line (the node's protocol starting its task)
  enter->post     the gateway's work before the upstream call
  post->posted    the upstream call (its 20 ms, the two loopback hops, the client's parsing)
  posted->send    the gateway's work on the answer, to the response's write
  send->sent      the response's write (head and body, api/hot_protocol.py)
The stamps cost a few microseconds each; read the parts against each other, not as totals.

`--time MODULE:ATTR` (repeatable; ATTR may be `Class.method`) also wraps that function where
it is looked up (`spillgate.service:admit` times the path's `admit`, not protocol's) and
adds its median time per request, summed over its calls (0 for a request that did not call
it). `--cpu` takes every stamp from the loop thread's CPU clock (`time.thread_time`)
instead of the wall clock: a part whose CPU time matches its wall time was running, not
waiting for a core.

    .venv/bin/python scripts/c1_path.py [--requests 1000] [--out var/c1_path.json]
        [--cpu] [--time spillgate.service:admit --time spillgate.service:classify_async]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import tempfile
from pathlib import Path

import bench_gateway  # scripts/, beside this file

STAMPS = '''
import atexit, functools, importlib, inspect, json, os, statistics, time
pc = time.thread_time if os.environ.get("SG_CPU") else time.perf_counter
stamps, current = [], {}
import uvicorn.protocols.http.httptools_impl as uv
import spillgate.api.hot_protocol as hp
_begin, _complete = uv.HttpToolsProtocol.on_message_begin, hp.HotProtocol.on_message_complete
def on_message_begin(self):
    current.clear(); current["recv"] = pc(); return _begin(self)
def on_message_complete(self):
    current["parsed"] = pc(); return _complete(self)
uv.HttpToolsProtocol.on_message_begin = on_message_begin
hp.HotProtocol.on_message_complete = on_message_complete
import spillgate.api.hot as hot
_answer, _respond = hot.HotRoute.answer, hp.HotExchange.respond
async def answer(self, headers, channel, rid):
    current["enter"] = pc()
    return await _answer(self, headers, channel, rid)
def respond(self, *args):
    mine = current
    mine["send"] = pc(); _respond(self, *args); mine["sent"] = pc()
    stamps.append(dict(mine))
hot.HotRoute.answer = answer
hp.HotExchange.respond = respond
import spillgate.backends.plain_http as plain
_post = plain.PlainHttpPool.post
async def post(self, target, body):
    current["post"] = pc()
    try:
        return await _post(self, target, body)
    finally:
        current["posted"] = pc()
plain.PlainHttpPool.post = post
def timed(spec):
    module, _, qualname = spec.partition(":")
    owner = importlib.import_module(module)
    *path, name = qualname.split(".")
    for part in path:
        owner = getattr(owner, part)
    fn = getattr(owner, name)
    if inspect.iscoroutinefunction(fn):
        async def wrapper(*args, **kwargs):
            mine, began = current, pc()
            try:
                return await fn(*args, **kwargs)
            finally:
                mine[qualname] = mine.get(qualname, 0.0) + pc() - began
    else:
        def wrapper(*args, **kwargs):
            mine, began = current, pc()
            try:
                return fn(*args, **kwargs)
            finally:
                mine[qualname] = mine.get(qualname, 0.0) + pc() - began
    setattr(owner, name, functools.wraps(fn)(wrapper))
    return qualname
TIMED = [timed(spec) for spec in os.environ.get("SG_TIME", "").split(",") if spec]
KEYS = ["recv", "parsed", "enter", "post", "posted", "send", "sent"]
def dump():
    rows = [s for s in stamps[int(os.environ["SG_SKIP"]):] if all(k in s for k in KEYS)]
    parts = {f"{a}->{b}": round(1e6 * statistics.median(s[b] - s[a] for s in rows))
             for a, b in zip(KEYS, KEYS[1:])}
    parts.update({name: round(1e6 * statistics.median(s.get(name, 0.0) for s in rows))
                  for name in TIMED})
    with open(os.environ["SG_STAMPS"], "w") as out:
        json.dump({"requests": len(rows), "median_us": parts}, out)
atexit.register(dump)
'''


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--out", type=Path,
                        default=Path(__file__).resolve().parents[1] / "var" / "c1_path.json")
    parser.add_argument("--time", action="append", default=[], metavar="MODULE:ATTR",
                        help="also time this function per request (repeatable)")
    parser.add_argument("--cpu", action="store_true",
                        help="the loop thread's CPU time instead of wall time")
    args = parser.parse_args()
    warm_up = 200
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        stamps = tmp / "stamps.json"
        up, upstream = bench_gateway._upstream(tmp)
        with up, bench_gateway.probed_gateway(
                tmp, upstream, STAMPS, SG_STAMPS=str(stamps), SG_SKIP=str(warm_up),
                SG_TIME=",".join(args.time), SG_CPU="1" if args.cpu else "") as gw:
            url = gw.base_url + "/chat/completions"
            asyncio.run(bench_gateway._load(url, bench_gateway.CHAT, 4, warm_up))
            load = asyncio.run(bench_gateway._load(url, bench_gateway.CHAT, 1, args.requests))
            gw.stop(signal.SIGINT)  # uvicorn re-raises SIGTERM, which skips atexit
        result = json.loads(stamps.read_text()) | {"gateway_p50_ms": load["p50_ms"],
                                               "clock": "thread CPU" if args.cpu else "wall"}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print("| part | median µs |\n|---|---|")
    for part, us in result["median_us"].items():
        print(f"| {part} | {us} |")
    print(f"({result['requests']} requests; gateway p50 {load['p50_ms']:.2f} ms "
          f"against a 20 ms upstream)\nwrote {args.out}")


if __name__ == "__main__":
    main()
