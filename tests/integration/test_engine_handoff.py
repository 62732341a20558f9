"""The decode loop waiting for the HTTP side between steps (`--handoff-wait-ms`) changes no
answer: streamed and whole replies agree, concurrent streams all finish. The real engine."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.integration.test_engine_llamacpp import MODEL, chat, events
from tests.support import Proc, bundled_gguf, free_port, spawn

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def waiting(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proc]:
    port = free_port()
    argv = ["-m", "spillgate.engines.llamacpp", "--model-path", bundled_gguf(),
            "--served-name", MODEL, "--port", str(port), "--max-batch", "3", "--n-ctx", "512",
            "--n-threads", "1", "--handoff-wait-ms", "20"]
    log = Path(tmp_path_factory.mktemp("handoff")) / "engine.log"
    with spawn(argv, log, f"http://127.0.0.1:{port}/v1",
               f"http://127.0.0.1:{port}/health") as proc:
        yield proc


def test_streamed_and_whole_answers_agree(waiting: Proc) -> None:
    body = chat("Write a long story about a dragon.", max_tokens=8, temperature=0)
    whole = httpx.post(waiting.base_url + "/chat/completions", json=body, timeout=120).json()
    with httpx.stream("POST", waiting.base_url + "/chat/completions",
                      json={**body, "stream": True}, timeout=120) as response:
        chunks = events(list(response.iter_lines()))[:-1]
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks)
    assert text == whole["choices"][0]["message"]["content"] != ""


async def test_concurrent_streams_all_finish(waiting: Proc) -> None:
    async def one(client: httpx.AsyncClient, prompt: str) -> tuple[str, int]:
        body = chat(prompt, max_tokens=6, temperature=0, stream=True,
                    stream_options={"include_usage": True})
        async with client.stream("POST", "/chat/completions", json=body) as response:
            got = events([line async for line in response.aiter_lines()])
        text = "".join(c["choices"][0]["delta"].get("content") or ""
                       for c in got[:-2] if c["choices"])
        return text, got[-2]["usage"]["completion_tokens"]

    async with httpx.AsyncClient(base_url=waiting.base_url, timeout=120) as client:
        results = await asyncio.gather(*(one(client, f"Tell me about {topic} at length.")
                                         for topic in ("cats", "ships", "rain")))
    assert all(text and tokens == 6 for text, tokens in results), results
