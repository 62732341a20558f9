"""Every exit of the request path leaves nothing behind (issue 10, in-process harness).

For each exit the table asserts: the status the client got, the ledger row settled with that
status, the local in-flight count back to zero, no budget reservation outstanding, no breaker
stuck, and the next `auto` request served locally as if nothing had happened.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from spillgate.backends.base import UpstreamFailure
from spillgate.errors import InvalidRequest
from spillgate.fakes.backend import Script
from tests.harness import LOCAL, PAID, Harness, harness


@pytest.fixture
async def h(tmp_path: Path) -> AsyncIterator[Harness]:
    async with harness(tmp_path) as built:
        yield built


async def assert_clean(h: Harness) -> None:
    """Nothing left behind, and an idle node still serves `auto` locally."""
    assert h.inflight() == 0
    assert all(not b.probing for b in h.backends.breakers.values())
    assert h.local.active == h.paid.active == h.fallback.active == 0
    assert await h.open_reservations() == 0
    rows = await h.rows()
    assert all(r["state"] != "open" for r in rows), rows
    reply = await h.chat("auto")
    assert reply.status_code == 200, reply.text
    assert reply.headers["x-spillgate-backend"] == LOCAL
    assert reply.headers["x-spillgate-route"] == "auto;reason=local_ok"
    assert h.inflight() == 0


def assert_openai_error(reply: Any, status: int) -> dict[str, Any]:
    assert reply.status_code == status, reply.text
    error = reply.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    return dict(error)


async def test_a_plain_local_answer_settles_its_row(h: Harness) -> None:
    reply = await h.chat("auto")
    assert reply.status_code == 200
    rows = await h.rows()
    assert [(r["state"], r["status"], r["backend"]) for r in rows] == [("settled", 200, LOCAL)]
    await assert_clean(h)
