"""Request admission: validation errors, refused upstream fields, clamping."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from spillgate import shapes
from spillgate.errors import ApiError, ForbiddenField, InvalidRequest
from spillgate.protocol import admit, max_output_tokens, refuse_forbidden_fields, validate
from spillgate.settings import ServerSettings
from spillgate.types import Endpoint

LIMITS = ServerSettings(default_max_tokens=100, max_tokens_ceiling=500, max_n=2,
                        max_top_logprobs=3)
FN = {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}


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


# --- one validation pass (issue 14): same verdict and same error as the two checks -----------
def _two_checks(endpoint: Endpoint, body: dict[str, Any]) -> tuple[str, str | None, str]:
    """The admission of before: the translated fields' shapes, forbidden fields, then the
    gateway's own fields, each a pass of its own; the verdict as (error, param, message)."""
    try:
        shapes.check(endpoint, body)
        refuse_forbidden_fields(body)
        validate(endpoint, body)
    except ApiError as exc:
        return type(exc).__name__, exc.param, exc.message
    return "ok", None, ""


def _admitted(endpoint: Endpoint, body: dict[str, Any]) -> tuple[str, str | None, str]:
    try:
        admit(endpoint, orjson.dumps(body), LIMITS)
    except ApiError as exc:
        return type(exc).__name__, exc.param, exc.message
    return "ok", None, ""


_SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-2, 30), st.sampled_from(
    ["", "x", "user", "function", "text", "auto", "none"]), st.floats(-1, 3, allow_nan=False))
_GONE = object()  # a drawn field removed rather than replaced


def _mutated(valid: dict[str, Any], fields: dict[str, st.SearchStrategy[Any]]
             ) -> st.SearchStrategy[Any]:
    """A valid object with up to two of its fields replaced (or removed), or any scalar:
    bodies near the boundary, valid often enough that both verdicts are exercised."""
    def build(changes: dict[str, Any]) -> dict[str, Any]:
        out = dict(valid)
        for name, value in changes.items():
            if value is _GONE:
                out.pop(name, None)
            else:
                out[name] = value
        return out

    changes = st.dictionaries(st.sampled_from(sorted(fields)), st.just(_GONE), max_size=2).flatmap(
        lambda picked: st.fixed_dictionaries(
            {k: st.one_of(st.just(_GONE), fields[k]) for k in picked}))
    return st.one_of(changes.map(build), _SCALARS) if valid else changes.map(build)


_PART = _mutated({"type": "text", "text": "hi"}, {
    "type": st.sampled_from(["text", "image_url", "input_audio"]), "text": _SCALARS,
    "image_url": st.one_of(_SCALARS, st.fixed_dictionaries({"url": _SCALARS}))})
_CALL = _mutated({"id": "c", "type": "function", "function": {"name": "f", "arguments": "{}"}}, {
    "id": _SCALARS, "type": _SCALARS, "function": st.one_of(_SCALARS, st.fixed_dictionaries(
        {}, optional={"name": _SCALARS, "arguments": st.one_of(_SCALARS, st.just({}))}))})
_MESSAGE = _mutated({"role": "user", "content": "hi"}, {
    "role": st.sampled_from(["user", "system", "assistant", "tool", "wizard", 3]),
    "content": st.one_of(_SCALARS, st.lists(_PART, max_size=3)), "name": _SCALARS,
    "tool_calls": st.one_of(_SCALARS, st.lists(_CALL, max_size=2)), "tool_call_id": _SCALARS,
    "api_key": _SCALARS})
_TOOL = _mutated(FN, {"type": _SCALARS, "function": st.one_of(_SCALARS, _mutated(
    FN["function"], {"name": _SCALARS, "parameters": st.one_of(_SCALARS, st.just({})),
                     "strict": _SCALARS}))})
_FIELDS: dict[str, st.SearchStrategy[Any]] = {
    "model": _SCALARS, "messages": st.one_of(_SCALARS, st.lists(_MESSAGE, max_size=3)),
    "prompt": st.one_of(_SCALARS, st.lists(_SCALARS, max_size=2)),
    "input": st.one_of(_SCALARS, st.lists(_SCALARS, max_size=2)),
    "stream": _SCALARS, "stream_options": st.one_of(_SCALARS, st.fixed_dictionaries(
        {}, optional={"include_usage": _SCALARS})),
    "max_tokens": _SCALARS, "n": _SCALARS, "temperature": _SCALARS, "top_p": _SCALARS,
    "top_logprobs": _SCALARS, "logprobs": _SCALARS,
    "stop": st.one_of(_SCALARS, st.lists(_SCALARS, max_size=2)),
    "tools": st.one_of(_SCALARS, st.lists(_TOOL, max_size=2)),
    "tool_choice": st.one_of(_SCALARS, st.fixed_dictionaries({"type": _SCALARS}, optional={
        "function": st.fixed_dictionaries({}, optional={"name": _SCALARS})})),
    "parallel_tool_calls": _SCALARS, "seed": _SCALARS, "echo": _SCALARS, "user": _SCALARS,
    "base_url": _SCALARS}
_VALID: dict[Endpoint, dict[str, Any]] = {
    "chat/completions": {"model": "m", "messages": [{"role": "user", "content": "hi"}],
                         "tools": [FN], "stop": ["x"]},
    "completions": {"model": "m", "prompt": "hi", "stop": "x", "echo": False},
    "embeddings": {"model": "m", "input": ["a"]},
}


@settings(max_examples=300, deadline=None)
@given(endpoint=st.sampled_from(list(_VALID)), data=st.data())
def test_one_pass_admits_and_refuses_as_the_two_checks_did(
        endpoint: Endpoint, data: st.DataObject) -> None:
    body = data.draw(_mutated(_VALID[endpoint], _FIELDS).filter(lambda b: isinstance(b, dict)))
    assert _admitted(endpoint, body) == _two_checks(endpoint, body)


@pytest.mark.parametrize("endpoint", ["chat/completions", "completions"])
def test_well_formed_bodies_are_admitted_in_one_pass(endpoint: Endpoint) -> None:
    """Not a vacuous property: the valid side of it is exercised (a valid body per endpoint,
    with the translated fields present)."""
    body: dict[str, Any] = {"model": "m", "stop": ["x"], "seed": 1, "user": "u"}
    if endpoint == "chat/completions":
        body |= {"messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]},
                              {"role": "assistant", "content": None, "tool_calls": [
                                  {"id": "c", "function": {"name": "f", "arguments": "{}"}}]}],
                 "tools": [FN], "tool_choice": "auto"}
    else:
        body |= {"prompt": "hi", "echo": False}
    assert _admitted(endpoint, body) == _two_checks(endpoint, body) == ("ok", None, "")
