"""The cascade's pure parts: the confidence of a draft, the keep/escalate verdict, the arm a
key lands on, and the route settings that configure them."""

from __future__ import annotations

import math
from collections import Counter
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from spillgate.routing import arms
from spillgate.routing.cascade import CascadeRule, confidence, keep, signal_of, token_logprobs
from spillgate.routing.router import Route, Target
from spillgate.settings import Settings

LOGPROB = st.floats(min_value=-30, max_value=0, allow_nan=False)


def chat_answer(*choices: list[float] | None) -> dict[str, Any]:
    return {"object": "chat.completion", "choices": [
        {"index": i, "message": {"role": "assistant", "content": "x"},
         "logprobs": None if lps is None else {"content": [
             {"token": f"t{j}", "logprob": v, "top_logprobs": []} for j, v in enumerate(lps)]}}
        for i, lps in enumerate(choices)]}


def test_chat_and_completions_shapes_give_the_same_tokens() -> None:
    completions = {"choices": [{"index": 0, "text": "x", "logprobs": {
        "tokens": ["a", "b", "c"], "token_logprobs": [-0.5, -1.0, -2.0]}}]}
    assert token_logprobs(completions) == [[-0.5, -1.0, -2.0]]
    assert token_logprobs(chat_answer([-0.5, -1.0, -2.0])) == [[-0.5, -1.0, -2.0]]


def test_each_signal_by_hand() -> None:
    answer = chat_answer([-0.1, -0.2, -3.0, -0.1])
    assert confidence(answer, CascadeRule("mean_logprob")) == pytest.approx(-3.4 / 4)
    assert confidence(answer, CascadeRule("min_logprob")) == -3.0
    assert confidence(answer, CascadeRule("first_k_logprob", first_k=2)) == pytest.approx(-0.15)


def test_a_draft_without_logprobs_has_no_confidence_and_is_never_kept() -> None:
    rule = CascadeRule(threshold=-100.0)
    for answer in (chat_answer(None), chat_answer([]), {"choices": []}, {}):
        assert confidence(answer, rule) is None
        assert not keep(confidence(answer, rule), rule)


def test_the_least_confident_choice_decides() -> None:
    answer = chat_answer([-0.1, -0.1], [-2.0, -2.0])
    assert confidence(answer, CascadeRule("mean_logprob")) == pytest.approx(-2.0)


@given(st.lists(LOGPROB, min_size=1, max_size=40), st.integers(1, 50))
def test_signals_lie_between_the_extremes(values: list[float], k: int) -> None:
    for signal in ("mean_logprob", "min_logprob", "first_k_logprob"):
        value = signal_of(values, signal, k)  # type: ignore[arg-type]
        assert value is not None
        assert min(values) - 1e-9 <= value <= max(values) + 1e-9


@given(st.lists(LOGPROB, min_size=1, max_size=20), LOGPROB, LOGPROB)
def test_a_stricter_threshold_never_keeps_more(values: list[float], a: float, b: float) -> None:
    low, high = sorted((a, b))
    answer = chat_answer(values)
    kept_high = keep(confidence(answer, CascadeRule(threshold=high)), CascadeRule(threshold=high))
    kept_low = keep(confidence(answer, CascadeRule(threshold=low)), CascadeRule(threshold=low))
    assert kept_low or not kept_high


# --- arms ----------------------------------------------------------------------------------
def split_route(*weights: float) -> Route:
    local = Target("local-cpu", "smollm2", "local")
    return Route("r", "local", local, (), arms=tuple(
        (f"arm{i}", w, Route("r", "local", local, (), arm=f"arm{i}"))
        for i, w in enumerate(weights)))


@given(st.text(max_size=40))
def test_an_arm_key_always_lands_on_the_same_arm(key: str) -> None:
    route = split_route(1, 2, 3)
    first = arms.choose(route, key).arm
    assert first in {"arm0", "arm1", "arm2"}
    assert all(arms.choose(route, key).arm == first for _ in range(3))


def test_arms_take_their_weighted_share_of_keys() -> None:
    route = split_route(1, 3)  # 25% / 75%
    n = 4000
    counts = Counter(arms.choose(route, f"user-{i}").arm for i in range(n))
    sigma = math.sqrt(n * 0.25 * 0.75)  # binomial: 27.4
    assert abs(counts["arm0"] - n * 0.25) < 5 * sigma, counts


def test_a_route_without_arms_is_itself() -> None:
    route = Route("r", "local", Target("l", "m", "local"), ())
    assert arms.choose(route, "anyone") is route


# --- settings -----------------------------------------------------------------------------
def settings(route: dict[str, Any]) -> Settings:
    return Settings.model_validate({
        "local": [{"name": "local-cpu", "model": "smollm2", "base_urls": ["http://h:1/v1"]}],
        "providers": [{"name": "openai", "kind": "openai", "base_url": "http://h:2/v1",
                       "api_key_env": None, "models": ["gpt-4o-mini"]}],
        "routes": [route]})


@pytest.mark.parametrize("route, fragment", [
    ({"name": "c", "policy": "cascade", "local": "smollm2"}, "needs `paid`"),
    ({"name": "c", "policy": "cascade", "paid": "openai/gpt-4o-mini"}, "needs `local`"),
    ({"name": "c", "policy": "local", "local": "smollm2",
      "arms": [{"name": "a", "weight": 1}, {"name": "a", "weight": 1}]}, "arm names repeat"),
    ({"name": "c", "policy": "local", "local": "smollm2",
      "arms": [{"name": "a", "weight": 1, "policy": "cascade"}]}, "needs `paid`"),
    ({"name": "c", "policy": "local", "local": "smollm2",
      "arms": [{"name": "a", "weight": 0}]}, "weight"),
    ({"name": "c", "policy": "cascade", "local": "smollm2", "paid": "openai/gpt-4o-mini",
      "cascade": {"threshold": 0.5}}, "threshold"),
])
def test_bad_cascade_and_arm_settings_are_refused(route: dict[str, Any], fragment: str) -> None:
    with pytest.raises(ValidationError, match=fragment):
        settings(route)
