"""Tool calls on the llama.cpp engine: which templates take tools, reading an answer back into
OpenAI tool_calls, the grammar that enforces a demanded call, the streamed shape."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from spillgate.engines.llamacpp.chat import CHATML, ChatTemplate
from spillgate.engines.llamacpp.tools import (
    as_stream,
    call_grammar,
    parse_tool_calls,
    with_tool_calls,
)
from spillgate.errors import InvalidRequest

TOOLS_TEMPLATE = (Path(__file__).parents[1] / "fixtures" / "chatml_tools.jinja").read_text()
SMOLLM2 = ("{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + "
           "message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}")
TOOLS = [{"type": "function", "function": {"name": "get_weather", "parameters": {
    "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}},
         {"type": "function", "function": {"name": "get_time"}}]


def test_only_templates_that_read_tools_take_them() -> None:
    assert ChatTemplate(TOOLS_TEMPLATE, "<s>", "</s>").supports_tools
    assert not ChatTemplate(SMOLLM2, "<s>", "</s>").supports_tools
    assert not ChatTemplate(None, "<s>", "</s>").supports_tools  # ChatML fallback
    assert "tools" not in CHATML


def test_tools_and_tool_turns_reach_the_prompt() -> None:
    template = ChatTemplate(TOOLS_TEMPLATE, "<s>", "</s>")
    call = {"id": "call_1", "type": "function",
            "function": {"name": "get_weather", "arguments": '{"city": "Lyon"}'}}
    prompt = template.render([{"role": "user", "content": "Weather?"},
                              {"role": "assistant", "content": "", "tool_calls": [call]},
                              {"role": "tool", "content": "sunny", "tool_call_id": "call_1"}],
                             TOOLS)
    assert '"name": "get_weather"' in prompt and "sunny" in prompt
    assert prompt.endswith("<|im_start|>assistant\n")


@pytest.mark.parametrize(
    ("text", "calls"),
    [
        ('<tool_call>{"name": "get_weather", "arguments": {"city": "Lyon"}}</tool_call>',
         [("get_weather", {"city": "Lyon"})]),
        ('Sure.\n<tool_call>\n{"name": "a", "arguments": {}}\n</tool_call>\n'
         '<tool_call>{"name": "b", "arguments": {"x": 1}}</tool_call>',
         [("a", {}), ("b", {"x": 1})]),
        ('{"name": "get_time", "parameters": {}}', [("get_time", {})]),
        ('<|python_tag|>{"name": "f", "arguments": "{\\"q\\": 2}"}', [("f", {"q": 2})]),
        ('[{"name": "a", "arguments": {}}, {"name": "b", "arguments": {}}]',
         [("a", {}), ("b", {})]),
        ("It is sunny in Lyon.", None),
        ('{"city": "Lyon"}', None),  # JSON, but not a call
        ("<tool_call>not json</tool_call>", None),
    ],
)
def test_parse_tool_calls(text: str, calls: list[tuple[str, dict[str, object]]] | None) -> None:
    parsed = parse_tool_calls(text)
    if calls is None:
        assert parsed is None
        return
    assert parsed is not None
    assert [(c["function"]["name"], json.loads(c["function"]["arguments"])) for c in parsed] \
        == calls
    assert all(c["type"] == "function" and c["id"].startswith("call_") for c in parsed)
    assert len({c["id"] for c in parsed}) == len(parsed)


def test_grammar_only_when_a_call_is_demanded() -> None:
    assert call_grammar(TOOLS, None) is None and call_grammar(TOOLS, "auto") is None
    required = call_grammar(TOOLS, "required")
    named = call_grammar(TOOLS, {"type": "function", "function": {"name": "get_weather"}})
    assert required and named and "get_time" in required and "get_time" not in named
    with pytest.raises(InvalidRequest) as unknown:
        call_grammar(TOOLS, {"type": "function", "function": {"name": "nope"}})
    assert unknown.value.param == "tool_choice"
    with pytest.raises(InvalidRequest):
        call_grammar([{"type": "function"}], "required")


def _reply(content: str) -> dict[str, object]:
    return {"id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "m",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content},
                         "logprobs": None, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7}}


def test_answer_and_stream_shapes() -> None:
    reply = with_tool_calls(_reply('{"name": "get_time", "arguments": {}}'))
    choice = reply["choices"][0]
    assert choice["finish_reason"] == "tool_calls" and choice["message"]["content"] is None
    chunks = as_stream(reply, include_usage=True)
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert chunks[1]["choices"][0]["delta"]["tool_calls"][0]["index"] == 0
    assert chunks[2]["choices"][0]["finish_reason"] == "tool_calls"
    assert chunks[3]["choices"] == [] and chunks[3]["usage"]["total_tokens"] == 7
    plain = with_tool_calls(_reply("Just text."))
    assert plain == _reply("Just text.")
    text_chunks = as_stream(plain, include_usage=False)
    assert [c["choices"][0]["delta"] for c in text_chunks] == [
        {"role": "assistant", "content": ""}, {"content": "Just text."}, {}]
    assert all("usage" not in c for c in text_chunks)
