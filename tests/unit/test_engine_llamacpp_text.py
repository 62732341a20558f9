"""The llama.cpp engine's pure parts: UTF-8 + stop-string streaming, request bodies, template."""

from __future__ import annotations

import os

import pytest

from spillgate.engines.llamacpp.bodies import ChatBody, CompletionBody, parse
from spillgate.engines.llamacpp.chat import ChatTemplate
from spillgate.engines.llamacpp.main import HANDOFF_WAIT_MS, parse_args
from spillgate.engines.llamacpp.textstream import TextStream
from spillgate.errors import InvalidRequest


def run(stream: TextStream, pieces: list[bytes]) -> str:
    return "".join(stream.feed(p) for p in pieces) + stream.flush()


def test_multibyte_character_split_across_tokens() -> None:
    data = "héllo 😀".encode()
    pieces = [data[i:i + 1] for i in range(len(data))]
    assert run(TextStream(), pieces) == "héllo 😀"


def test_stop_spanning_tokens_ends_without_the_stop() -> None:
    stream = TextStream(["END"])
    assert stream.feed(b"abc E") == "abc "  # "E" could start the stop: held back
    assert stream.feed(b"N") == ""
    assert stream.feed(b"D more") == ""
    assert stream.stopped
    assert stream.flush() == ""


def test_held_prefix_is_released_when_it_diverges() -> None:
    stream = TextStream(["END"])
    assert stream.feed(b"xE") == "x"
    assert stream.feed(b"Nx") == "ENx"
    assert not stream.stopped
    assert stream.feed(b"E") == ""
    assert stream.flush() == "E"  # generation ended on an unfinished stop prefix


def test_earliest_of_several_stops_wins() -> None:
    stream = TextStream(["world", "lo"])
    assert stream.feed(b"hello world") == "hel"
    assert stream.stopped


@pytest.mark.parametrize(("raw", "param"), [
    (b'{"model": "m", "messages": []}', "messages"),
    (b'{"model": "m", "messages": [{"role": "user", "content": "x"}], "temperature": 3}',
     "temperature"),
    (b'{"messages": [{"role": "user", "content": "x"}]}', "model"),
    (b'{"model": "m", "messages": [{"role": "wizard", "content": "x"}]}', "messages.0.role"),
])
def test_invalid_fields_name_the_param(raw: bytes, param: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        parse(raw, ChatBody)
    assert caught.value.param == param


@pytest.mark.parametrize("raw", [b"{", b"[1, 2]", b"", b"null"])
def test_malformed_json_is_invalid_json(raw: bytes) -> None:
    with pytest.raises(InvalidRequest) as caught:
        parse(raw, ChatBody)
    assert caught.value.code == "invalid_json"


@pytest.mark.parametrize("extra", [{"n": 2}])
def test_unsupported_chat_options_are_refused(extra: dict[str, object]) -> None:
    body = ChatBody.model_validate(
        {"model": "m", "messages": [{"role": "user", "content": "x"}], **extra})
    with pytest.raises(InvalidRequest) as caught:
        body.check_supported()
    assert caught.value.code == "unsupported_parameter"


@pytest.mark.parametrize("extra", [{"tools": [{"type": "function",
                                               "function": {"name": "f"}}]},
                                   {"response_format": {"type": "json_object"}}])
def test_json_modes_and_tools_pass_the_body_check(extra: dict[str, object]) -> None:
    """JSON modes are served through grammars; tools depend on the chat template, which the
    engine checks (Engine.chat_job), not the body."""
    body = ChatBody.model_validate(
        {"model": "m", "messages": [{"role": "user", "content": "x"}], **extra})
    body.check_supported()


def test_budget_and_sampling_defaults() -> None:
    chat = ChatBody.model_validate({"model": "m", "messages": [{"role": "user", "content": "x"}],
                                    "max_tokens": 50, "max_completion_tokens": 7,
                                    "stop": "\n", "seed": 3, "temperature": 0})
    assert chat.token_budget() == 7
    assert chat.stops() == ("\n",)
    assert chat.sampling().temperature == 0
    assert chat.sampling().seed == 3
    completion = CompletionBody.model_validate({"model": "m", "prompt": "x"})
    assert completion.token_budget() == 16
    assert completion.sampling().temperature == 1.0


def test_text_parts_join_and_images_are_refused() -> None:
    body = ChatBody.model_validate({"model": "m", "messages": [
        {"role": "developer", "content": "be brief"},
        {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]},
    ]})
    assert body.template_messages() == [{"role": "system", "content": "be brief"},
                                         {"role": "user", "content": "ab"}]
    image = ChatBody.model_validate({"model": "m", "messages": [
        {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]})
    with pytest.raises(InvalidRequest):
        image.template_messages()


def test_template_without_gguf_template_is_chatml() -> None:
    prompt = ChatTemplate(None, "<s>", "</s>").render([{"role": "user", "content": "hi"}])
    assert prompt == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"


def test_template_refusal_is_a_400() -> None:
    strict = "{{ raise_exception('roles must alternate') }}"
    with pytest.raises(InvalidRequest) as caught:
        ChatTemplate(strict, "<s>", "</s>").render([{"role": "user", "content": "hi"}])
    assert "roles must alternate" in caught.value.message


def test_engine_threads_take_every_core_and_the_handoff_wait_follows() -> None:
    cores = os.cpu_count() or 1
    base = ["--model-path", "m.gguf", "--served-name", "m"]
    assert parse_args(base).n_threads == cores
    assert parse_args(base).handoff_wait_ms == HANDOFF_WAIT_MS
    assert parse_args([*base, "--n-threads", str(cores)]).handoff_wait_ms == HANDOFF_WAIT_MS
    assert parse_args([*base, "--n-threads", str(cores + 1)]).handoff_wait_ms == HANDOFF_WAIT_MS
    if cores > 1:
        assert parse_args([*base, "--n-threads", str(cores - 1)]).handoff_wait_ms == 0
    explicit = [*base, "--n-threads", str(cores), "--handoff-wait-ms", "0"]
    assert parse_args(explicit).handoff_wait_ms == 0


def test_refill_wait_is_on_by_default_can_be_turned_off_and_is_bounded() -> None:
    base = ["--model-path", "m.gguf", "--served-name", "m"]
    assert parse_args(base).refill_wait_ms > 0
    assert parse_args([*base, "--refill-wait-ms", "0"]).refill_wait_ms == 0
    for bad in ("-1", "101"):
        with pytest.raises(SystemExit):
            parse_args([*base, "--refill-wait-ms", bad])


def test_decoder_defaults_to_a_thread_and_rejects_unknown_modes() -> None:
    base = ["--model-path", "m.gguf", "--served-name", "m"]
    assert parse_args(base).decoder == "thread"
    assert parse_args([*base, "--decoder", "process"]).decoder == "process"
    with pytest.raises(SystemExit):
        parse_args([*base, "--decoder", "fork"])
