"""Helpers for Batch API tests: the in-process harness with fast batch settings, uploads,
waiting for a batch to end, and the ledger rows of a batch."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import orjson
from sqlalchemy import select

from spillgate.ledger.batch_tables import batch_lines
from spillgate.ledger.schema import requests
from tests.harness import Harness, harness

FAST = {"poll_s": 0.01, "resume_after_s": 0.0}
ENDING = ("completed", "failed", "expired", "cancelled")


@contextlib.asynccontextmanager
async def batch_harness(tmp: Path, **batch: Any) -> AsyncIterator[Harness]:
    """tests.harness.harness, with the batch scheduler polling every 10 ms (and `batch`:
    other batch settings)."""
    async with harness(tmp, extra={"batch": {**FAST, **batch}}) as h:
        yield h


def chat_line(custom_id: str, model: str = "local", **body: Any) -> dict[str, Any]:
    return {"custom_id": custom_id, "method": "POST", "url": "/v1/chat/completions",
            "body": {"model": model, "max_tokens": 5,
                     "messages": [{"role": "user", "content": f"say {custom_id}"}], **body}}


def jsonl(lines: list[dict[str, Any]]) -> bytes:
    return b"".join(orjson.dumps(line) + b"\n" for line in lines)


def auth(key: str | None) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"} if key else {}


async def upload(client: httpx.AsyncClient, content: bytes, key: str | None = None,
                 ) -> httpx.Response:
    return await client.post("/v1/files", headers=auth(key), data={"purpose": "batch"},
                             files={"file": ("input.jsonl", content, "application/jsonl")})


async def start_batch(client: httpx.AsyncClient, lines: list[dict[str, Any]],
                      key: str | None = None, **extra: Any) -> dict[str, Any]:
    uploaded = await upload(client, jsonl(lines), key)
    assert uploaded.status_code == 200, uploaded.text
    created = await client.post("/v1/batches", headers=auth(key), json={
        "input_file_id": uploaded.json()["id"], "endpoint": "/v1/chat/completions",
        "completion_window": "24h", **extra})
    assert created.status_code == 200, created.text
    batch: dict[str, Any] = created.json()
    return batch


async def wait_status(client: httpx.AsyncClient, batch_id: str, key: str | None = None,
                      statuses: tuple[str, ...] = ENDING, timeout_s: float = 90.0,
                      ) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while True:
        got = (await client.get(f"/v1/batches/{batch_id}", headers=auth(key))).json()
        if got["status"] in statuses or time.monotonic() > deadline:
            return dict(got)
        await asyncio.sleep(0.02)


async def read_jsonl(client: httpx.AsyncClient, file_id: str | None,
                     key: str | None = None) -> list[dict[str, Any]]:
    if file_id is None:
        return []
    got = await client.get(f"/v1/files/{file_id}/content", headers=auth(key))
    assert got.status_code == 200, got.text
    return [orjson.loads(line) for line in got.content.splitlines() if line.strip()]


async def batch_rows(h: Harness, batch_id: str) -> list[dict[str, Any]]:
    """The ledger rows tagged with the batch (by the tag itself, read back from each row)."""
    await h.ledger.flush()
    async with h.ledger.reading() as conn:
        rows = [dict(r._mapping) for r in await conn.execute(select(requests))]
    return [r for r in rows if (r["tags"] or {}).get("batch") == batch_id]


async def line_states(h: Harness, batch_id: str) -> dict[str, str]:
    async with h.ledger.reading() as conn:
        rows = await conn.execute(select(batch_lines.c.custom_id, batch_lines.c.state)
                                  .where(batch_lines.c.batch_id == batch_id))
        return {custom_id: state for custom_id, state in rows}
