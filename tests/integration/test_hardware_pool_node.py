"""Two running nodes in front of one engine, on one SQLite ledger (two replicas on one host,
each its own `node_id`, one `cost.pool`), book the engine's hardware once. The check is a
hand model on the raw `hardware_periods` rows: the seconds booked fit the wall time the two
processes lived (one process's worth of time, not two), and the pool's identity holds
exactly: the requests' cost plus unattributed plus idle is the cost booked."""

from __future__ import annotations

import contextlib
import sqlite3
import threading
import time
from pathlib import Path

import httpx

from tests.conftest import NODE_ENV
from tests.support import Proc, free_port, spawn, write_config

REQUESTS_PER_NODE = 12


def _config(tmp: Path, node: str, port: int, engine_url: str) -> Path:
    return write_config(tmp / f"{node}.yaml", {
        "server": {"port": port},
        "local": [{"name": "local-fake", "model": "smollm2", "base_urls": [engine_url]}],
        "ledger": {"dsn": f"sqlite+aiosqlite:///{tmp}/ledger.db", "node_id": node},
        "cost": {"pool": "one-box"},
        "telemetry": {"nvml": False},
    })


def _node(tmp: Path, name: str, config: Path, port: int) -> contextlib.AbstractContextManager[Proc]:
    return spawn(["-m", "spillgate", "serve", "--config", str(config)], tmp / f"{name}.log",
                 f"http://127.0.0.1:{port}/v1", f"http://127.0.0.1:{port}/healthz",
                 env=NODE_ENV)


def _load(base_url: str, errors: list[str]) -> None:
    for i in range(REQUESTS_PER_NODE):
        body = {"model": "smollm2", "max_tokens": 8,
                "messages": [{"role": "user", "content": f"question {i}"}]}
        response = httpx.post(base_url + "/chat/completions", json=body, timeout=30)
        if response.status_code != 200 or response.headers["x-spillgate-backend"] != "local-fake":
            errors.append(f"{response.status_code} {response.text[:200]}")


def test_two_nodes_on_one_ledger_book_the_engine_once(tmp_path: Path) -> None:
    engine_port, ports = free_port(), (free_port(), free_port())
    engine = f"http://127.0.0.1:{engine_port}"
    began = time.time()
    with spawn(["-m", "spillgate.fakes.provider", "--port", str(engine_port),
                "--latency-ms", "150"], tmp_path / "engine.log", engine,
               engine + "/health") as _engine:
        a_config, b_config = (_config(tmp_path, name, port, engine + "/v1")
                              for name, port in zip(("a", "b"), ports, strict=True))
        with _node(tmp_path, "a", a_config, ports[0]) as a:
            a_ready = time.time()  # a's clock runs from before this
            with _node(tmp_path, "b", b_config, ports[1]) as b:
                errors: list[str] = []
                loads = [threading.Thread(target=_load, args=(n.base_url, errors))
                         for n in (a, b)]
                for load in loads:
                    load.start()
                for load in loads:
                    load.join()
                assert not errors
        stopped = time.time()  # both stopped (SIGTERM): their last periods are in
    with sqlite3.connect(tmp_path / "ledger.db") as db:
        periods = db.execute("SELECT node_id, busy_s + idle_s, busy_usd, idle_usd, "
                             "unattributed_usd FROM hardware_periods").fetchall()
        costs = db.execute("SELECT cost_usd FROM requests WHERE cost_kind = 'local' "
                           "AND state != 'open'").fetchall()
    assert len(costs) == 2 * REQUESTS_PER_NODE
    seconds = sum(p[1] for p in periods)
    # One process's worth of wall time: from a's start (before it answered) to the last
    # stop. Two processes each booking their own life would book a's and b's lives.
    assert stopped - a_ready <= seconds <= stopped - began
    assert {p[0] for p in periods} == {"a", "b"}
    # SQLite keeps money as integer 1e-10 USD units, each value rounded once (the clock
    # counts 1e-12 quanta): the identity holds to half a unit per value summed.
    booked = sum(p[2] + p[3] for p in periods)
    idle = sum(p[3] for p in periods)
    unattributed = sum(p[4] for p in periods)
    carried = sum(c[0] for c in costs)
    assert carried > 0 and booked > carried
    slack = (len(costs) + 3 * len(periods)) / 2
    assert abs(carried + unattributed + idle - booked) <= slack
