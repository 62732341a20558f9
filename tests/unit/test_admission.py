"""Request admission: validation errors, refused upstream fields, clamping."""

from __future__ import annotations

import orjson
import pytest

from spillgate.errors import ForbiddenField, InvalidRequest
from spillgate.protocol import admit, max_output_tokens
from spillgate.settings import ServerSettings

LIMITS = ServerSettings(default_max_tokens=100, max_tokens_ceiling=500, max_n=2,
                        max_top_logprobs=3)


def chat(**extra: object) -> bytes:
    return orjson.dumps({"model": "m", "messages": [{"role": "user", "content": "hi"}],
                         **extra})


def test_max_tokens_inserted_when_absent() -> None:
    body, _ = admit("chat/completions", chat(), LIMITS)
    assert body["max_tokens"] == 100


@pytest.mark.parametrize(("field", "sent", "kept"), [
    ("max_tokens", 9000, 500), ("max_completion_tokens", 9000, 500), ("n", 7, 2),
    ("top_logprobs", 10, 3), ("max_tokens", 20, 20),
])
def test_limits_are_clamped(field: str, sent: int, kept: int) -> None:
    body, _ = admit("chat/completions", chat(**{field: sent}), LIMITS)
    assert body[field] == kept


def test_worst_case_output_counts_every_choice() -> None:
    body, _ = admit("chat/completions", chat(max_tokens=50, n=2), LIMITS)
    assert max_output_tokens(body) == 100


def test_unknown_fields_pass_through_untouched() -> None:
    tools = [{"type": "function", "function": {"name": "f", "parameters": {}}}]
    body, _ = admit("chat/completions", chat(tools=tools, response_format={"type": "json_object"},
                                              vendor_knob=3), LIMITS)
    assert body["tools"] == tools and body["vendor_knob"] == 3


@pytest.mark.parametrize("raw", [b"{not json", b"[1, 2]", b""])
def test_malformed_json_is_a_400(raw: bytes) -> None:
    with pytest.raises(InvalidRequest):
        admit("chat/completions", raw, LIMITS)


@pytest.mark.parametrize(("body", "param"), [
    ({"model": "m"}, "messages"),
    ({"model": "m", "messages": []}, "messages"),
    ({"model": "m", "messages": [{"role": "wizard", "content": "x"}]}, "messages.0.role"),
    ({"model": "m", "messages": [{"role": "user", "content": "x"}], "temperature": 7},
     "temperature"),
    ({"messages": [{"role": "user", "content": "x"}]}, "model"),
    ({"model": "m", "messages": [{"role": "user", "content": "x"}], "max_tokens": 0},
     "max_tokens"),
])
def test_invalid_fields_name_the_param(body: dict[str, object], param: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        admit("chat/completions", orjson.dumps(body), LIMITS)
    assert caught.value.param == param and caught.value.status == 400


@pytest.mark.parametrize("where", [
    {"api_base": "http://evil"},
    {"base_url": "http://evil"},
    {"metadata": {"nested": [{"api_key": "sk-x"}]}},
    {"messages": [{"role": "user", "content": "x", "api_key": "k"}]},
])
def test_client_cannot_choose_upstream_or_key(where: dict[str, object]) -> None:
    body = {"model": "m", "messages": [{"role": "user", "content": "x"}], **where}
    with pytest.raises(ForbiddenField) as caught:
        admit("chat/completions", orjson.dumps(body), LIMITS)
    assert caught.value.status == 400


def test_embeddings_and_completions_validate_their_inputs() -> None:
    admit("embeddings", orjson.dumps({"model": "m", "input": ["a", "b"]}), LIMITS)
    admit("completions", orjson.dumps({"model": "m", "prompt": "hi"}), LIMITS)
    with pytest.raises(InvalidRequest):
        admit("embeddings", orjson.dumps({"model": "m"}), LIMITS)
    with pytest.raises(InvalidRequest):
        admit("completions", orjson.dumps({"model": "m", "prompt": {"x": 1}}), LIMITS)
