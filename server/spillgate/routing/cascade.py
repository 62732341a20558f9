"""The cascade's decision: keep the local draft, or escalate to the paid model.

Pure: a draft's answer (OpenAI shape, with `logprobs`) in, a confidence and a verdict out.
The confidence of a draft is a summary of its sampled tokens' log-probabilities:

- `mean_logprob`: the mean over all tokens (the length-normalised sequence likelihood);
- `min_logprob`: the least likely token (one confused step is enough to distrust it);
- `first_k_logprob`: the mean over the first `first_k` tokens (where short answers decide).

A draft without log-probabilities (an engine that does not return them, an empty answer) has
no confidence and is escalated: the cascade never keeps what it cannot judge.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

from spillgate.types import JSON

Signal = Literal["mean_logprob", "min_logprob", "first_k_logprob"]
StreamMode = Literal["local", "buffer"]
KEPT, ESCALATED = "cascade_kept", "cascade_escalated"
DRAFT = "cascade_draft"  # the router's reason while the draft runs
STREAM_LOCAL = "cascade_stream_local"  # a stream on a route that does not buffer
NO_BUDGET = "cascade_kept_no_budget"  # unsure, but no paid target left to escalate to
DRAFT_FAILED = "cascade_draft_failed"  # the local draft failed: the paid model answered


@dataclass(frozen=True, slots=True)
class CascadeRule:
    signal: Signal = "mean_logprob"
    threshold: float = -1.0  # keep when confidence >= threshold
    first_k: int = 8
    stream: StreamMode = "local"


def token_logprobs(answer: JSON) -> list[list[float]]:
    """Per choice, the sampled tokens' log-probabilities (chat and completions shapes).
    Non-finite values (an engine's -inf for an impossible token) are kept as -inf."""
    out = []
    for choice in answer.get("choices") or ():
        logprobs = choice.get("logprobs") if isinstance(choice, dict) else None
        out.append(_choice_logprobs(logprobs))
    return out


def _choice_logprobs(logprobs: object) -> list[float]:
    if not isinstance(logprobs, dict):
        return []
    content = logprobs.get("content")
    if isinstance(content, list):  # chat: [{token, logprob, top_logprobs}]
        return _floats(entry.get("logprob") for entry in content if isinstance(entry, dict))
    tokens = logprobs.get("token_logprobs")  # completions: parallel lists
    if isinstance(tokens, list):
        return _floats(tokens)
    return []


def _floats(values: Iterable[object]) -> list[float]:
    out = []
    for value in values:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            continue  # a null (the first prompt token of an echo) carries no evidence
        out.append(float(value) if not math.isnan(value) else -math.inf)
    return out


def confidence(answer: JSON, rule: CascadeRule) -> float | None:
    """The draft's confidence: the least confident choice's signal; None without tokens."""
    per_choice = [signal_of(lps, rule.signal, rule.first_k) for lps in token_logprobs(answer)]
    if not per_choice or any(value is None for value in per_choice):
        return None
    return min(value for value in per_choice if value is not None)


def signal_of(logprobs: Sequence[float], signal: Signal, first_k: int = 8) -> float | None:
    if not logprobs:
        return None
    if signal == "min_logprob":
        return min(logprobs)
    window = logprobs[:first_k] if signal == "first_k_logprob" else logprobs
    return math.fsum(window) / len(window)


def keep(confidence_value: float | None, rule: CascadeRule) -> bool:
    return confidence_value is not None and confidence_value >= rule.threshold
