"""kill -9 of the node during 50 in-flight streams loses no ledger row."""

from __future__ import annotations

import asyncio
import signal
import sqlite3
from pathlib import Path

import httpx
import pytest

from tests.conftest import node_config, run_node
from tests.support import Proc, wait_http

pytestmark = pytest.mark.integration
STREAMS = 50


async def _open_streams(node: Proc, ids: list[str]) -> list[asyncio.Task[None]]:
    """Open STREAMS streams; `ids` receives each one's x-request-id (its ledger row key)."""
    client = httpx.AsyncClient(base_url=node.base_url, timeout=60)
    started = asyncio.Event()
    count = 0

    async def one() -> None:
        nonlocal count
        body = {"model": "local", "max_tokens": 64, "stream": True,
                "messages": [{"role": "user", "content": "a long answer please"}]}
        try:
            async with client.stream("POST", "/chat/completions", json=body) as response:
                ids.append(response.headers["x-request-id"])
                async for _ in response.aiter_lines():
                    count += 1
                    if count >= STREAMS:
                        started.set()
        except httpx.HTTPError:
            pass  # the node is killed under us: expected

    tasks = [asyncio.create_task(one()) for _ in range(STREAMS)]
    await asyncio.wait_for(started.wait(), 30)
    await asyncio.sleep(0.3)  # every stream is past its first byte and its row committed
    return tasks


def _rows(db: Path) -> dict[str, str]:
    with sqlite3.connect(db) as conn:
        return dict(conn.execute("SELECT request_id, state FROM requests").fetchall())


def test_kill_9_during_streams_loses_no_ledger_row(fakes: tuple[Proc, Proc],
                                                   tmp_path: Path) -> None:
    local, paid = fakes
    httpx.post(local.base_url + "/_fake/faults", json={"trickle_ms": 200}).raise_for_status()
    config = node_config(local.base_url + "/v1", paid.base_url, tmp_path)
    ids: list[str] = []
    with run_node(config, tmp_path) as node:
        wait_http(node.base_url.removesuffix("/v1") + "/readyz")

        async def scenario() -> None:
            tasks = await _open_streams(node, ids)
            node.popen.send_signal(signal.SIGKILL)
            node.popen.wait(10)
            await asyncio.gather(*tasks)

        asyncio.run(scenario())
        rows = _rows(tmp_path / "ledger.db")
        assert len(set(ids)) == STREAMS and set(ids) <= set(rows)
    httpx.delete(local.base_url + "/_fake/faults")
    # A new node on the same ledger recovers the rows left open.
    with run_node({**config, "server": {"port": config["server"]["port"]}}, tmp_path) as node:
        wait_http(node.base_url.removesuffix("/v1") + "/readyz")
    rows = _rows(tmp_path / "ledger.db")
    assert {rows[i] for i in ids} == {"recovered"}
