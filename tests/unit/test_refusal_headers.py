"""A request kept local by its data says so on refusals too: `x-spillgate-sensitivity` names
the classes (never the values) on the 503 and the 403 (issue 9's failure behaviour)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from spillgate.fakes.backend import AlwaysReady
from tests.harness import LOCAL, Harness, harness

EMAIL = "jane.doe@example.org"
CARD = "4111 1111 1111 1111"


@pytest.fixture
async def local_down(tmp_path: Path) -> AsyncIterator[Harness]:
    async with harness(tmp_path) as built:
        supervisor = built.backends.supervisors[LOCAL]
        assert isinstance(supervisor, AlwaysReady)
        supervisor.ready = False
        yield built


def message(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


async def test_503_names_the_classes_that_kept_the_request_local(local_down: Harness) -> None:
    reply = await local_down.post({"model": "auto",
                                   "messages": message(f"mail {EMAIL}, card {CARD}")})
    assert reply.status_code == 503, reply.text
    assert reply.json()["error"]["code"] == "local_unavailable"
    assert reply.headers["x-spillgate-sensitivity"] == "email,payment_card"
    assert EMAIL not in reply.text and "4111" not in reply.text
    assert local_down.paid.calls == [] and local_down.fallback.calls == []


async def test_403_on_an_api_pin_names_the_classes(local_down: Harness) -> None:
    reply = await local_down.client.post(
        "/v1/chat/completions", json={"model": "auto", "messages": message(f"to {EMAIL}")},
        headers={"x-spillgate-tier": "api"})
    assert reply.status_code == 403, reply.text
    assert reply.headers["x-spillgate-sensitivity"] == "email"
    assert local_down.paid.calls == []


async def test_clean_refusal_carries_no_sensitivity_header(local_down: Harness) -> None:
    reply = await local_down.post({"model": "local", "messages": message("hello")})
    assert reply.status_code == 503, reply.text
    assert "x-spillgate-sensitivity" not in reply.headers
