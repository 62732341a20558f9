"""Token logprobs from a logits row, and their OpenAI shapes: checked against a plain-Python
log-softmax (math.exp / math.log over the row), not against the numpy code under test."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from spillgate.engines.llamacpp.bodies import ChatBody, CompletionBody
from spillgate.engines.llamacpp.logprobs import (
    chat_logprobs,
    completion_logprobs,
    text_length,
    token_logprob,
)
from spillgate.errors import InvalidRequest

PIECES = [b"a", b"bc", b" d", b"\xe2\x82", b"\xac", b"ef", b"g", b"hij"]


def piece(token: int) -> bytes:
    return PIECES[token % len(PIECES)] + str(token // len(PIECES)).encode() * (token >= 8)


def reference(row: list[float]) -> list[float]:
    """Log-softmax the textbook way, in Python floats."""
    peak = max(row)
    total = sum(math.exp(x - peak) for x in row)
    return [x - peak - math.log(total) for x in row]


rows = st.lists(st.floats(-30, 30, width=32), min_size=2, max_size=64)


@given(rows, st.data())
def test_logprobs_match_a_plain_log_softmax(row: list[float], data: st.DataObject) -> None:
    token = data.draw(st.integers(0, len(row) - 1))
    top = data.draw(st.integers(0, min(5, len(row))))
    entry = token_logprob(np.array(row, dtype=np.float32), token, top, piece)
    expected = reference(row)
    assert entry.chosen.token == token and entry.chosen.piece == piece(token)
    assert entry.chosen.logprob == pytest.approx(expected[token], abs=1e-6)
    assert entry.chosen.logprob <= 0
    assert len(entry.top) == top
    # The top k are k tokens no other token beats, most likely first.
    values = [a.logprob for a in entry.top]
    assert values == sorted(values, reverse=True)
    for alternative in entry.top:
        assert alternative.logprob == pytest.approx(expected[alternative.token], abs=1e-6)
    if top:
        kth_best = sorted(expected, reverse=True)[top - 1]
        assert min(values) == pytest.approx(kth_best, abs=1e-6)
    assert sum(math.exp(v) for v in values) <= 1 + 1e-6


def test_argmax_is_first_and_equals_the_sampled_entry() -> None:
    row = np.array([0.5, 3.0, -1.0, 2.0], dtype=np.float32)
    entry = token_logprob(row, 1, 2, piece)
    assert [a.token for a in entry.top] == [1, 3]
    assert entry.top[0].logprob == entry.chosen.logprob
    assert entry.chosen.logprob == pytest.approx(reference(row.tolist())[1], abs=1e-6)


def test_chat_shape_carries_token_bytes_and_alternatives() -> None:
    row = np.array([1.0, 0.0, 0.0, 2.0, 0.0], dtype=np.float32)
    shaped = chat_logprobs([token_logprob(row, 3, 1, piece), token_logprob(row, 4, 0, piece)])
    first, second = shaped["content"]
    assert shaped["refusal"] is None
    assert first["bytes"] == list(b"\xe2\x82") and first["token"] == "\ufffd"  # half a "€"
    assert first["top_logprobs"] == [{"token": first["token"], "logprob": first["logprob"],
                                      "bytes": first["bytes"]}]
    assert second["bytes"] == list(b"\xac") and second["top_logprobs"] == []
    assert bytes(first["bytes"] + second["bytes"]).decode() == "€"


def test_completion_shape_offsets_and_the_sampled_token_among_the_top() -> None:
    row = np.array([4.0, 3.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0], dtype=np.float32)
    entries = [token_logprob(row, t, 1, piece) for t in (7, 1, 0)]  # "hij", "bc", "a"
    shaped = completion_logprobs(entries, offset=5)
    assert shaped["tokens"] == ["hij", "bc", "a"]
    assert shaped["text_offset"] == [5, 8, 10]
    assert text_length(entries) == 6
    # k=1 best ("a") plus the sampled token when it is not that one: up to k+1 entries.
    assert [sorted(d) for d in shaped["top_logprobs"]] == [["a", "hij"], ["a", "bc"], ["a"]]
    assert shaped["token_logprobs"] == [e.chosen.logprob for e in entries]


def test_bodies_map_to_the_number_of_alternatives() -> None:
    base = {"model": "m", "messages": [{"role": "user", "content": "x"}]}
    assert ChatBody.model_validate(base).logprobs_top() is None
    assert ChatBody.model_validate({**base, "logprobs": True}).logprobs_top() == 0
    assert ChatBody.model_validate({**base, "logprobs": True,
                                    "top_logprobs": 4}).logprobs_top() == 4
    assert CompletionBody.model_validate({"model": "m", "prompt": "x",
                                          "logprobs": 0}).logprobs_top() == 0


def test_top_logprobs_without_logprobs_is_refused() -> None:
    body = ChatBody.model_validate({"model": "m", "messages": [{"role": "user", "content": "x"}],
                                    "top_logprobs": 2})
    with pytest.raises(InvalidRequest) as caught:
        body.check_supported()
    assert caught.value.param == "top_logprobs"
