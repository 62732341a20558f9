"""`auto` requests using features the local engine lacks are spilled, never refused; JSON
modes the engine serves stay local; sensitive requests with a missing feature get a 400 naming
the field and never leave the node. The real node, the real llama.cpp engine, the recording
paid fake."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from tests.support import Proc

pytestmark = pytest.mark.integration
TOOLS = [{"type": "function", "function": {
    "name": "get_weather", "parameters": {"type": "object",
                                          "properties": {"city": {"type": "string"}}}}}]
SCHEMA = {"type": "object", "properties": {"city": {"type": "string", "maxLength": 10}},
          "required": ["city"], "additionalProperties": False}


def post(node: Proc, headers: dict[str, str] | None = None, **extra: Any) -> httpx.Response:
    body = {"model": "auto", "max_tokens": 48, "temperature": 0,
            "messages": [{"role": "user", "content": "Weather in Lyon?"}], **extra}
    return httpx.post(node.base_url + "/chat/completions", json=body, headers=headers or {},
                      timeout=60)


def paid_requests(paid: Proc) -> list[dict[str, Any]]:
    data: list[dict[str, Any]] = httpx.get(paid.base_url + "/_fake/requests").json()
    return [r for r in data if r["path"].startswith("/v1/")]


@pytest.fixture(autouse=True)
def _clean(paid_fake: Proc) -> None:
    httpx.delete(paid_fake.base_url + "/_fake/requests").raise_for_status()


@pytest.mark.parametrize("extra", [{"tools": TOOLS}, {"n": 2}], ids=["tools", "n"])
def test_auto_spills_what_local_cannot_serve(node: Proc, paid_fake: Proc,
                                             extra: dict[str, Any]) -> None:
    response = post(node, **extra)
    assert response.status_code == 200, response.text
    assert response.headers["x-spillgate-backend"] == "openai"
    assert response.headers["x-spillgate-route"] == "auto;reason=local_unsupported"
    sent = paid_requests(paid_fake)
    assert len(sent) == 1 and all(sent[0]["body"][k] == v for k, v in extra.items())


def test_json_schema_on_auto_is_served_locally(node: Proc, paid_fake: Proc) -> None:
    response_format = {"type": "json_schema", "json_schema": {"name": "w", "schema": SCHEMA}}
    response = post(node, response_format=response_format)
    assert response.status_code == 200, response.text
    assert response.headers["x-spillgate-backend"] == "local-cpu"
    reply = response.json()["choices"][0]
    if reply["finish_reason"] == "stop":
        assert set(json.loads(reply["message"]["content"])) == {"city"}
    assert paid_requests(paid_fake) == []


def test_logprobs_on_auto_are_served_locally(node: Proc, paid_fake: Proc) -> None:
    response = post(node, logprobs=True, top_logprobs=2)
    assert response.status_code == 200, response.text
    assert response.headers["x-spillgate-backend"] == "local-cpu"
    choice = response.json()["choices"][0]
    content = choice["logprobs"]["content"]
    assert content and all(len(e["top_logprobs"]) == 2 and e["logprob"] <= 0 for e in content)
    assert paid_requests(paid_fake) == []


def test_sensitive_request_with_tools_is_a_400_naming_the_field(node: Proc,
                                                                paid_fake: Proc) -> None:
    response = post(node, {"x-spillgate-data-class": "sensitive"}, tools=TOOLS)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["param"] == "tools" and error["code"] == "unsupported_parameter"
    assert paid_requests(paid_fake) == []
