"""The llama.cpp engine serves `tools` when its chat template takes them (SmolLM2 with a
tool-rendering template given by --chat-template-file): a demanded call comes back as OpenAI
tool_calls, whole or streamed, and /health no longer declares `tools`."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.integration.test_engine_llamacpp import MODEL, chat, events
from tests.support import Proc, bundled_gguf, free_port, spawn

pytestmark = pytest.mark.integration
TEMPLATE = Path(__file__).parents[1] / "fixtures" / "chatml_tools.jinja"
TOOLS = [{"type": "function", "function": {"name": "get_weather", "parameters": {
    "type": "object", "properties": {"city": {"type": "string", "maxLength": 12}},
    "required": ["city"], "additionalProperties": False}}}]


@pytest.fixture(scope="module")
def tool_engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proc]:
    port = free_port()
    argv = ["-m", "spillgate.engines.llamacpp", "--model-path", bundled_gguf(),
            "--served-name", MODEL, "--port", str(port), "--max-batch", "2", "--n-ctx", "1024",
            "--chat-template-file", str(TEMPLATE)]
    log = Path(tmp_path_factory.mktemp("tools")) / "engine.log"
    with spawn(argv, log, f"http://127.0.0.1:{port}/v1",
               f"http://127.0.0.1:{port}/health") as proc:
        yield proc


def _post(engine: Proc, **extra: Any) -> httpx.Response:
    body = chat("What is the weather in Lyon?", max_tokens=60, temperature=0, **extra)
    return httpx.post(engine.base_url + "/chat/completions", json=body, timeout=90)


def test_health_no_longer_declares_tools(tool_engine: Proc) -> None:
    health = httpx.get(tool_engine.base_url.removesuffix("/v1") + "/health").json()
    assert "tools" not in health["unsupported"]


def test_required_tool_call_comes_back_as_tool_calls(tool_engine: Proc) -> None:
    reply = _post(tool_engine, tools=TOOLS, tool_choice="required").json()
    choice = reply["choices"][0]
    assert choice["finish_reason"] == "tool_calls", choice
    (call,) = choice["message"]["tool_calls"]
    assert call["function"]["name"] == "get_weather"
    assert set(json.loads(call["function"]["arguments"])) == {"city"}


def test_streamed_tool_call(tool_engine: Proc) -> None:
    body = chat("Weather in Oslo?", max_tokens=60, temperature=0, stream=True, tools=TOOLS,
                tool_choice={"type": "function", "function": {"name": "get_weather"}},
                stream_options={"include_usage": True})
    with httpx.stream("POST", tool_engine.base_url + "/chat/completions", json=body,
                      timeout=90) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        frames = events(list(response.iter_lines()))
    assert frames[-1] == "[DONE]"
    calls = [c for f in frames[:-1] for ch in f["choices"]
             for c in ch["delta"].get("tool_calls", [])]
    assert [c["function"]["name"] for c in calls] == ["get_weather"]
    assert frames[-2]["usage"]["completion_tokens"] > 0


def test_tool_choice_none_is_plain_text(tool_engine: Proc) -> None:
    reply = _post(tool_engine, tools=TOOLS, tool_choice="none").json()
    assert reply["choices"][0]["message"]["content"] is not None
    assert "tool_calls" not in reply["choices"][0]["message"]
