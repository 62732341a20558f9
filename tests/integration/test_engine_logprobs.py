"""Logprobs from the real llama.cpp engine (bundled SmolLM2): chat and legacy completions,
plain and streamed, in OpenAI's shapes, read back by raw HTTP and by the official SDK."""

from __future__ import annotations

import math
from typing import Any

import httpx
import pytest
from openai import OpenAI

from tests.integration.test_engine_llamacpp import MODEL, assert_error, chat, events
from tests.support import Proc

pytestmark = pytest.mark.integration
PROMPT = "Write a long story about a dragon."


def post(engine: Proc, path: str, body: dict[str, Any]) -> httpx.Response:
    return httpx.post(engine.base_url + path, json=body, timeout=60)


def stream(engine: Proc, path: str, body: dict[str, Any]) -> list[Any]:
    with httpx.stream("POST", engine.base_url + path, json={**body, "stream": True},
                      timeout=60) as response:
        assert response.status_code == 200
        return events(list(response.iter_lines()))[:-1]


def check_chat_entries(content: list[dict[str, Any]], top: int, greedy: bool) -> None:
    for entry in content:
        assert entry["logprob"] <= 0
        assert len(entry["top_logprobs"]) == top
        alternatives = [a["logprob"] for a in entry["top_logprobs"]]
        assert alternatives == sorted(alternatives, reverse=True)
        assert sum(math.exp(lp) for lp in alternatives) <= 1 + 1e-4
        assert all(bytes(a["bytes"]).decode(errors="replace") == a["token"]
                   for a in entry["top_logprobs"])
        if greedy:  # temperature 0 samples the argmax: the first alternative, same number
            assert entry["top_logprobs"][0]["token"] == entry["token"]
            assert entry["top_logprobs"][0]["logprob"] == entry["logprob"]


def test_chat_logprobs_cover_every_token_of_the_answer(engine: Proc) -> None:
    body = chat(PROMPT, max_tokens=8, temperature=0, logprobs=True, top_logprobs=3)
    reply = post(engine, "/chat/completions", body).json()
    choice = reply["choices"][0]
    content = choice["logprobs"]["content"]
    assert choice["finish_reason"] == "length"
    assert len(content) == reply["usage"]["completion_tokens"] == 8
    check_chat_entries(content, 3, greedy=True)
    answer = b"".join(bytes(e["bytes"]) for e in content).decode()
    assert answer == choice["message"]["content"]


def test_sampled_tokens_have_logprobs_too(engine: Proc) -> None:
    body = chat(PROMPT, max_tokens=6, temperature=1.0, seed=3, logprobs=True, top_logprobs=5)
    choice = post(engine, "/chat/completions", body).json()["choices"][0]
    check_chat_entries(choice["logprobs"]["content"], 5, greedy=False)


def test_no_logprobs_unless_asked(engine: Proc) -> None:
    plain = post(engine, "/chat/completions", chat("Hi", max_tokens=2)).json()
    assert plain["choices"][0]["logprobs"] is None
    chunks = stream(engine, "/chat/completions", chat("Hi", max_tokens=2))
    assert all(c["choices"][0]["logprobs"] is None for c in chunks)


def test_streamed_chat_logprobs_travel_with_their_text(engine: Proc) -> None:
    body = chat(PROMPT, max_tokens=10, temperature=0, logprobs=True, top_logprobs=2)
    chunks = stream(engine, "/chat/completions", body)
    with_logprobs = [c["choices"][0] for c in chunks if c["choices"][0]["logprobs"]]
    content = [e for c in with_logprobs for e in c["logprobs"]["content"]]
    assert len(content) == 10
    check_chat_entries(content, 2, greedy=True)
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks)
    assert b"".join(bytes(e["bytes"]) for e in content).decode() == text
    whole = post(engine, "/chat/completions", {**body, "stream": False}).json()
    assert [e["token"] for e in whole["choices"][0]["logprobs"]["content"]] == [
        e["token"] for e in content]


def test_completions_logprobs_plain_and_streamed(engine: Proc) -> None:
    body = {"model": MODEL, "prompt": "Once upon a time", "max_tokens": 8, "temperature": 0,
            "logprobs": 2}
    choice = post(engine, "/completions", body).json()["choices"][0]
    logprobs = choice["logprobs"]
    assert len(logprobs["tokens"]) == 8 and "".join(logprobs["tokens"]) == choice["text"]
    assert all(lp <= 0 for lp in logprobs["token_logprobs"])
    offsets = [0]
    for token in logprobs["tokens"][:-1]:
        offsets.append(offsets[-1] + len(token))
    assert logprobs["text_offset"] == offsets
    for token, lp, top in zip(logprobs["tokens"], logprobs["token_logprobs"],
                              logprobs["top_logprobs"], strict=True):
        assert top[token] == lp and max(top.values()) == lp  # greedy: the argmax
        assert len(top) <= 3 and sum(math.exp(v) for v in top.values()) <= 1 + 1e-4

    chunks = [c["choices"][0] for c in stream(engine, "/completions", body)]
    parts = [c["logprobs"] for c in chunks if c["logprobs"]]
    assert [t for p in parts for t in p["tokens"]] == logprobs["tokens"]
    assert [o for p in parts for o in p["text_offset"]] == offsets


def test_openai_sdk_reads_the_logprobs(engine: Proc) -> None:
    client = OpenAI(base_url=engine.base_url, api_key="unused")
    reply = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": PROMPT}], max_tokens=4,
        temperature=0, logprobs=True, top_logprobs=1)
    assert reply.choices[0].logprobs is not None
    content = reply.choices[0].logprobs.content or []
    assert len(content) == 4
    assert all(e.top_logprobs[0].token == e.token for e in content)


@pytest.mark.parametrize(("path", "extra", "param"), [
    ("/chat/completions", {"top_logprobs": 2}, "top_logprobs"),
    ("/chat/completions", {"logprobs": True, "top_logprobs": 21}, "top_logprobs"),
    ("/completions", {"logprobs": 6}, "logprobs"),
])
def test_out_of_range_logprobs_are_400s(engine: Proc, path: str, extra: dict[str, Any],
                                        param: str) -> None:
    body = ({"model": MODEL, "prompt": "Hi", **extra} if path == "/completions"
            else chat("Hi", **extra))
    response = post(engine, path, body)
    assert_error(response, 400)
    assert response.json()["error"]["param"] == param
