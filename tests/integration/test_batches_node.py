"""The Batch API on the real node and the bundled model: the official OpenAI SDK round trip,
and a kill -9 mid-batch after which every line is billed exactly once."""

from __future__ import annotations

import contextlib
import signal
import sqlite3
import time
from pathlib import Path
from typing import Any

import orjson
import pytest
from openai import OpenAI

from tests.conftest import node_config, run_node
from tests.support import Proc, wait_http

pytestmark = pytest.mark.integration
BATCH = {"poll_s": 0.02, "resume_after_s": 0.0}


def _lines(count: int, max_tokens: int) -> bytes:
    return b"".join(orjson.dumps({
        "custom_id": f"q{i}", "method": "POST", "url": "/v1/chat/completions",
        "body": {"model": "local", "max_tokens": max_tokens, "temperature": 0,
                 "messages": [{"role": "user", "content": f"Count to {i + 2}."}]},
    }) + b"\n" for i in range(count))


def _wait(client: OpenAI, batch_id: str, done: Any, timeout_s: float = 240) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        batch = client.batches.retrieve(batch_id)
        if done(batch) or time.monotonic() > deadline:
            return batch
        time.sleep(0.2)


def _ended(batch: Any) -> bool:
    return batch.status in ("completed", "failed", "expired", "cancelled")


def test_openai_sdk_round_trip(engine: Proc, paid_fake: Proc, tmp_path: Path) -> None:
    config = {**node_config(engine.base_url, paid_fake.base_url, tmp_path), "batch": BATCH}
    with run_node(config, tmp_path) as node:
        wait_http(node.base_url.removesuffix("/v1") + "/readyz")
        client = OpenAI(base_url=node.base_url, api_key="unused-on-loopback", max_retries=0)
        uploaded = client.files.create(file=("questions.jsonl", _lines(10, 4)),
                                       purpose="batch")
        assert uploaded.purpose == "batch" and uploaded.bytes > 0
        assert client.files.retrieve(uploaded.id).filename == "questions.jsonl"
        batch = client.batches.create(input_file_id=uploaded.id,
                                      endpoint="/v1/chat/completions",
                                      completion_window="24h", metadata={"run": "sdk"})
        done = _wait(client, batch.id, _ended)
        assert done.status == "completed", done
        assert done.request_counts is not None
        assert (done.request_counts.total, done.request_counts.completed,
                done.request_counts.failed) == (10, 10, 0)
        assert done.output_file_id and done.error_file_id is None
        text = client.files.content(done.output_file_id).text
        results = [orjson.loads(line) for line in text.splitlines()]
        assert [r["custom_id"] for r in results] == [f"q{i}" for i in range(10)]
        for result in results:
            body = result["response"]["body"]
            assert result["response"]["status_code"] == 200
            assert body["usage"]["completion_tokens"] <= 4
            assert body["choices"][0]["message"]["role"] == "assistant"
        assert [b.id for b in client.batches.list(limit=5)] == [batch.id]
        # A second batch, cancelled at once: it ends cancelled, nothing lost on the way.
        second = client.batches.create(input_file_id=uploaded.id,
                                       endpoint="/v1/chat/completions",
                                       completion_window="24h")
        assert client.batches.cancel(second.id).status in ("cancelling", "cancelled")
        ended = _wait(client, second.id, _ended)
        assert ended.status == "cancelled"
        assert ended.request_counts is not None
        assert ended.request_counts.completed < 10


def _wait_states(db: Path, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with contextlib.suppress(sqlite3.OperationalError), sqlite3.connect(db) as conn:
            states = dict(conn.execute(
                "SELECT state, count(*) FROM batch_lines GROUP BY state").fetchall())
            if states.get("running") and states.get("done"):
                return True
        time.sleep(0.01)
    return False


def _batch_rows(db: Path, batch_id: str) -> list[tuple[str, str, int | None]]:
    with sqlite3.connect(db) as conn:
        return conn.execute(
            "SELECT request_id, state, status FROM requests "
            "WHERE json_extract(tags, '$.batch') = ?", (batch_id,)).fetchall()


@pytest.mark.timeout(900)  # a few short generations, but a loaded CI machine is slow
def test_kill_9_mid_batch_bills_every_line_once(engine: Proc, paid_fake: Proc,
                                                tmp_path: Path) -> None:
    lines = 6
    config = {**node_config(engine.base_url, paid_fake.base_url, tmp_path),
              "batch": {**BATCH, "concurrency": 2}}
    with run_node(config, tmp_path) as node:
        wait_http(node.base_url.removesuffix("/v1") + "/readyz")
        client = OpenAI(base_url=node.base_url, api_key="unused-on-loopback", max_retries=0)
        uploaded = client.files.create(file=("in.jsonl", _lines(lines, 8)), purpose="batch")
        batch = client.batches.create(input_file_id=uploaded.id,
                                      endpoint="/v1/chat/completions", completion_window="24h")
        # Kill the moment the ledger shows lines done and lines running (polled straight
        # from the SQLite file: on a fast machine a line finishes between two API polls).
        assert _wait_states(tmp_path / "ledger.db", 600), "never saw done and running lines"
        node.popen.send_signal(signal.SIGKILL)  # lines are running and done: kill -9
        node.popen.wait(10)
    with sqlite3.connect(tmp_path / "ledger.db") as db:
        states = dict(db.execute("SELECT state, count(*) FROM batch_lines GROUP BY state"))
    # killed mid-batch: lines done, lines left (running at the kill, unless one finished in
    # the instant between the poll above and the signal)
    assert states.get("done") and (states.get("running") or states.get("pending"))
    with run_node({**config, "server": {"port": config["server"]["port"]}}, tmp_path) as node:
        wait_http(node.base_url.removesuffix("/v1") + "/readyz")
        client = OpenAI(base_url=node.base_url, api_key="unused-on-loopback", max_retries=0)
        done = _wait(client, batch.id, _ended, 600)
        assert done.status == "completed", done
        assert done.request_counts is not None and done.request_counts.completed == lines
        output = client.files.content(done.output_file_id or "").text.splitlines()
    custom_ids = [orjson.loads(line)["custom_id"] for line in output]
    assert sorted(custom_ids) == sorted(f"q{i}" for i in range(lines))  # each exactly once
    rows = _batch_rows(tmp_path / "ledger.db", batch.id)
    # One ledger row per line, every one settled with the answer that was delivered.
    assert len(rows) == lines == len({rid for rid, _, _ in rows})
    assert {(state, status) for _, state, status in rows} == {("settled", 200)}
    answered = {orjson.loads(line)["response"]["request_id"] for line in output}
    assert answered == {rid for rid, _, _ in rows}
