"""The llama.cpp engine serves JSON modes through llama.cpp grammars, and declares on /health
what it cannot serve (the gateway spills those requests instead of sending them here)."""

from __future__ import annotations

import json
from typing import Any

import httpx
import jsonschema
import pytest

from tests.integration.test_engine_llamacpp import assert_error, chat, events
from tests.support import Proc

pytestmark = pytest.mark.integration

SCHEMA = {
    "type": "object",
    "properties": {"city": {"type": "string", "maxLength": 12},
                   "sunny": {"type": "boolean"},
                   # An enum, not minimum/maximum: llama-cpp-python's schema-to-grammar
                   # converter does not bound integers (found by this test: 12345).
                   "rank": {"enum": [1, 2, 3]}},
    "required": ["city", "sunny", "rank"],
    "additionalProperties": False,
}


def _schema_format() -> dict[str, Any]:
    return {"type": "json_schema", "json_schema": {"name": "weather", "schema": SCHEMA}}


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_json_schema_output_validates(engine: Proc, seed: int) -> None:
    body = chat("Describe the weather in Paris as JSON.", max_tokens=120, seed=seed,
                temperature=0.8, response_format=_schema_format())
    reply = httpx.post(engine.base_url + "/chat/completions", json=body, timeout=60).json()
    choice = reply["choices"][0]
    assert choice["finish_reason"] == "stop", choice
    jsonschema.validate(json.loads(choice["message"]["content"]), SCHEMA)


def test_json_schema_streamed(engine: Proc) -> None:
    body = chat("Weather in Oslo?", max_tokens=120, stream=True, temperature=0,
                response_format=_schema_format())
    with httpx.stream("POST", engine.base_url + "/chat/completions", json=body,
                      timeout=60) as response:
        frames = events(list(response.iter_lines()))
    text = "".join(f["choices"][0]["delta"].get("content") or "" for f in frames[:-1]
                   if f["choices"])
    jsonschema.validate(json.loads(text), SCHEMA)


def test_json_object_starts_an_object(engine: Proc) -> None:
    body = chat("Give me a JSON object about cats.", max_tokens=40, temperature=0,
                response_format={"type": "json_object"})
    reply = httpx.post(engine.base_url + "/chat/completions", json=body, timeout=60).json()
    content = reply["choices"][0]["message"]["content"]
    assert content.lstrip().startswith("{")
    if reply["choices"][0]["finish_reason"] == "stop":  # finished inside the budget: complete
        assert isinstance(json.loads(content), dict)


def test_bad_response_formats_are_400s_naming_the_field(engine: Proc) -> None:
    url = engine.base_url + "/chat/completions"
    unknown = httpx.post(url, json=chat("Hi", response_format={"type": "yaml"}))
    assert_error(unknown, 400)
    assert unknown.json()["error"]["param"] == "response_format.type"
    no_schema = httpx.post(url, json=chat("Hi", response_format={"type": "json_schema"}))
    assert_error(no_schema, 400)
    assert no_schema.json()["error"]["param"] == "response_format.json_schema"


def test_health_declares_what_the_engine_cannot_serve(engine: Proc) -> None:
    health = httpx.get(engine.base_url.removesuffix("/v1") + "/health").json()
    # SmolLM2's chat template takes no tools; JSON modes and logprobs are served, so not
    # declared.
    assert {"tools", "n"} <= set(health["unsupported"])
    assert not {"response_format", "logprobs"} & set(health["unsupported"])
    tools = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]
    refused = httpx.post(engine.base_url + "/chat/completions", json=chat("Hi", tools=tools))
    assert_error(refused, 400, "unsupported_parameter")
    assert refused.json()["error"]["param"] == "tools"
