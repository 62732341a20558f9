"""The hot routes are plain ASGI in front of FastAPI (api/hot.py): what a client sees of an
answer and of a wrong method is what the FastAPI routes gave."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path

import orjson
import pytest

from tests.harness import LOCAL, Harness, harness

CHAT = {"model": "local", "messages": [{"role": "user", "content": "hello"}]}


@pytest.fixture
async def node(tmp_path: Path) -> AsyncIterator[Harness]:
    async with harness(tmp_path) as built:
        yield built


async def test_a_json_answer_has_its_length_type_and_request_id(node: Harness) -> None:
    reply = await node.post(CHAT)
    assert reply.status_code == 200, reply.text
    assert reply.headers["content-type"] == "application/json"
    assert int(reply.headers["content-length"]) == len(reply.content)
    assert re.fullmatch(r"[0-9a-f]{32}", reply.headers["x-request-id"])
    assert reply.headers["x-spillgate-backend"] == LOCAL
    assert orjson.loads(reply.content)["choices"]


async def test_two_answers_never_share_a_request_id(node: Harness) -> None:
    ids = {(await node.post(CHAT)).headers["x-request-id"] for _ in range(3)}
    assert len(ids) == 3


async def test_a_stream_is_an_event_stream_with_its_request_id(node: Harness) -> None:
    reply = await node.post({**CHAT, "stream": True})
    assert reply.status_code == 200, reply.text
    assert reply.headers["content-type"].startswith("text/event-stream")
    assert reply.headers["cache-control"] == "no-cache"
    assert re.fullmatch(r"[0-9a-f]{32}", reply.headers["x-request-id"])
    assert reply.text.rstrip().endswith("data: [DONE]")


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/completions", "/v1/embeddings"])
async def test_a_wrong_method_is_a_405_in_the_openai_shape(node: Harness, path: str) -> None:
    reply = await node.client.get(path)
    assert reply.status_code == 405
    assert set(reply.json()["error"]) == {"message", "type", "param", "code"}


async def test_a_refusal_names_the_request(node: Harness) -> None:
    reply = await node.client.post("/v1/chat/completions", content=b"{not json",
                                   headers={"content-type": "application/json"})
    assert reply.status_code == 400
    assert reply.json()["error"]["type"] == "invalid_request_error"
    assert re.fullmatch(r"[0-9a-f]{32}", reply.headers["x-request-id"])
