"""The real node in front of the real llama.cpp engine, driven by the official openai SDK.

Asserts structure, usage arithmetic, finish reasons and headers — never the model's wording.
"""

from __future__ import annotations

import asyncio
import time

import httpx
import openai
import pytest

from tests.support import Proc

pytestmark = pytest.mark.integration
MSG = [{"role": "user", "content": "Name three colors."}]


def sdk(node: Proc) -> openai.OpenAI:
    return openai.OpenAI(base_url=node.base_url, api_key="unused-on-loopback", max_retries=0)


def test_models_lists_routes_local_and_paid_models(node: Proc) -> None:
    ids = {m.id for m in sdk(node).models.list()}
    assert {"auto", "local", "smollm2", "openai/gpt-4o-mini"} <= ids


def test_chat_plain_usage_finish_reason_and_headers(node: Proc) -> None:
    raw = sdk(node).chat.completions.with_raw_response.create(
        model="smollm2", messages=MSG, max_tokens=8, temperature=0)  # type: ignore[arg-type]
    reply = raw.parse()
    usage = reply.usage
    assert usage is not None
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    assert 0 < usage.completion_tokens <= 8 and usage.prompt_tokens > 5
    assert reply.choices[0].finish_reason in ("length", "stop")
    if usage.completion_tokens == 8:
        assert reply.choices[0].finish_reason == "length"
    assert raw.headers["x-spillgate-backend"] == "local-cpu"
    assert raw.headers["x-spillgate-route"] == "smollm2;reason=local_policy"
    assert len(raw.headers["x-request-id"]) >= 16
    assert float(raw.headers["x-spillgate-cost-usd"]) >= 0
    assert "server" not in raw.headers  # the node does not advertise its server software
    assert raw.headers["date"]


def test_chat_streamed_with_usage(node: Proc) -> None:
    stream = sdk(node).chat.completions.create(
        model="local", messages=MSG, max_tokens=12, stream=True,  # type: ignore[arg-type]
        stream_options={"include_usage": True})
    chunks = list(stream)
    content = [c for c in chunks if c.choices]
    usage_chunks = [c for c in chunks if c.usage is not None]
    assert content and content[0].choices[0].delta.role == "assistant"
    assert content[-1].choices[0].finish_reason in ("length", "stop")
    assert len(usage_chunks) == 1 and chunks[-1] is usage_chunks[0]
    usage = usage_chunks[0].usage
    assert usage is not None and 0 < usage.completion_tokens <= 12
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    text = "".join(c.choices[0].delta.content or "" for c in content)
    assert text.strip()


def test_stream_without_include_usage_has_no_usage_chunk(node: Proc) -> None:
    chunks = list(sdk(node).chat.completions.create(
        model="smollm2", messages=MSG, max_tokens=4, stream=True))  # type: ignore[arg-type]
    assert all(c.usage is None for c in chunks) and all(c.choices for c in chunks)


def test_completions(node: Proc) -> None:
    reply = sdk(node).completions.create(model="smollm2", prompt="The sky is", max_tokens=6)
    assert reply.object == "text_completion" and reply.choices[0].text is not None
    assert reply.usage is not None and 0 < reply.usage.completion_tokens <= 6


def _post(node: Proc, path: str, content: bytes, **headers: str) -> httpx.Response:
    return httpx.post(node.base_url + path, content=content, timeout=30,
                      headers={"content-type": "application/json", **headers})


def _error(response: httpx.Response) -> dict[str, object]:
    body = response.json()
    assert set(body["error"]) == {"message", "type", "param", "code"}
    assert response.headers["x-request-id"]
    error: dict[str, object] = body["error"]
    return error


@pytest.mark.parametrize(("content", "status", "code", "param"), [
    (b"{not json", 400, None, None),
    (b'{"model": "nope", "messages": [{"role": "user", "content": "x"}]}', 404,
     "model_not_found", "model"),
    (b'{"model": "smollm2", "messages": [{"role": "user", "content": "x"}], "top_p": 9}',
     400, None, "top_p"),
    (b'{"model": "smollm2", "messages": [{"role": "user", "content": "x"}], '
     b'"base_url": "http://127.0.0.1:1"}', 400, "forbidden_field", "base_url"),
])
def test_bad_input_gets_openai_shaped_errors(
    node: Proc, content: bytes, status: int, code: str | None, param: str | None
) -> None:
    response = _post(node, "/chat/completions", content)
    assert response.status_code == status
    error = _error(response)
    assert error["code"] == code and error["param"] == param


def test_body_over_the_cap_is_413(node: Proc) -> None:
    big = b'{"model": "smollm2", "messages": [{"role": "user", "content": "' + \
        b"x" * (1 << 20) + b'"}]}'
    response = _post(node, "/chat/completions", big)
    assert response.status_code == 413
    assert _error(response)["code"] == "payload_too_large"


def test_sdk_raises_typed_errors(node: Proc) -> None:
    with pytest.raises(openai.NotFoundError):
        sdk(node).chat.completions.create(model="missing", messages=MSG)  # type: ignore[arg-type]
    with pytest.raises(openai.BadRequestError):
        sdk(node).embeddings.create(model="smollm2", input="hello")


def test_health_ready_and_metrics(node: Proc) -> None:
    root = node.base_url.removesuffix("/v1")
    assert httpx.get(root + "/healthz").json() == {"status": "ok"}
    ready = httpx.get(root + "/readyz")
    assert ready.status_code == 200
    assert ready.json()["local"] == {"local-cpu": True, "local-embed": True}
    metrics = httpx.get(root + "/metrics").text
    assert "spillgate_requests_total" in metrics
    assert all(line.startswith(("#", "spillgate_")) for line in metrics.splitlines() if line)


async def test_queue_full_is_429_with_retry_after(node: Proc) -> None:
    # The session engine holds 4 running + 16 waiting; 40 at once overflow it.
    body = {"model": "local", "messages": MSG, "max_tokens": 24}
    async with httpx.AsyncClient(base_url=node.base_url, timeout=120) as client:
        responses = await asyncio.gather(
            *(client.post("/chat/completions", json=body) for _ in range(40)))
    statuses = [r.status_code for r in responses]
    assert statuses.count(200) >= 4
    refused = [r for r in responses if r.status_code == 429]
    assert refused, statuses
    assert all(int(r.headers["retry-after"]) >= 1 for r in refused)
    assert _error(refused[0])["type"] == "rate_limit_error"


def _engine_running(engine: Proc) -> float:
    text = httpx.get(engine.base_url.removesuffix("/v1") + "/metrics").text
    for line in text.splitlines():
        if line.startswith("spillgate_engine_requests_running"):
            return float(line.split()[-1])
    raise AssertionError("engine does not export spillgate_engine_requests_running")


def test_client_disconnect_mid_stream_frees_the_engine(node: Proc, engine: Proc) -> None:
    body = {"model": "local", "messages": MSG, "max_tokens": 400, "stream": True}
    with httpx.stream("POST", node.base_url + "/chat/completions", json=body,
                      timeout=60) as response:
        lines = response.iter_lines()
        next(lines), next(lines)
        assert _engine_running(engine) >= 1
    deadline = time.monotonic() + 10
    while _engine_running(engine) > 0 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _engine_running(engine) == 0


def test_prompts_never_reach_the_logs(node: Proc) -> None:
    marker = "zebra-quasar-7781"
    sdk(node).chat.completions.create(
        model="smollm2", max_tokens=4,
        messages=[{"role": "user", "content": f"Repeat {marker}"}])
    _post(node, "/chat/completions", b'{"model": "' + marker.encode() + b'"}')
    assert marker not in node.log_text()
