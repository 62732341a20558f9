"""The engine's event stream ends in one write: the piece ending with `data: [DONE]` leaves
with the response's end (more_body False), so a client that stops reading at [DONE], as the
gateway's relay does, finds the answer complete and can keep its connection."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from spillgate.engines.llamacpp.app import _EventStream
from spillgate.engines.llamacpp.shapes import DONE


async def _sent(pieces: list[bytes]) -> list[dict[str, Any]]:
    async def body() -> AsyncIterator[bytes]:
        for piece in pieces:
            yield piece

    messages: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        messages.append(message)

    await _EventStream(body(), media_type="text/event-stream").stream_response(send)
    return messages


async def test_the_done_piece_leaves_with_the_end_and_nothing_is_held_before_it() -> None:
    tokens = [b"data: {\"a\": 1}\n\n", b"data: {\"a\": 2}\n\n"]
    last = b"data: {\"usage\": {}}\n\n" + DONE
    messages = await _sent([*tokens, last])
    bodies = [(m["body"], m["more_body"]) for m in messages[1:]]
    assert bodies == [(tokens[0], True), (tokens[1], True), (last, False)]


async def test_a_stream_cut_before_done_still_ends_the_response() -> None:
    messages = await _sent([b"data: {\"a\": 1}\n\n"])
    assert messages[-1] == {"type": "http.response.body", "body": b"", "more_body": False}
    assert sum(1 for m in messages if m["type"] == "http.response.body"
               and not m["more_body"]) == 1
