"""Token log-probabilities: computed from a logits row, shaped as OpenAI returns them.

A sampled token's logprob is read from the model's raw distribution at that position: the
log-softmax of the logits row llama.cpp produced, before temperature, top-k/top-p or a grammar
reshaped it (what OpenAI and vLLM report by default). The alternatives are the `top` most
likely tokens of that same distribution, most likely first.

Chat completions get `choices[].logprobs.content[]` (token, logprob, bytes, top_logprobs);
legacy completions get `tokens`, `token_logprobs`, `top_logprobs` (a dict per token holding the
`k` best plus the sampled one, as OpenAI documents: up to k+1 entries) and `text_offset`.
Every sampled token is covered except the end-of-generation token, which has no text; a token
that completed a stop string is covered although its text is cut from the answer.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

MAX_CHAT_TOP = 20  # OpenAI's bounds: chat `top_logprobs` 0-20, completions `logprobs` 0-5
MAX_COMPLETION_TOP = 5


@dataclass(frozen=True, slots=True)
class Alternative:
    """One candidate token at a position and its log-probability."""

    token: int
    piece: bytes
    logprob: float

    @property
    def text(self) -> str:
        return self.piece.decode("utf-8", errors="replace")


@dataclass(frozen=True, slots=True)
class TokenLogprob:
    """The sampled token at one position, its log-probability and the `top` best there."""

    chosen: Alternative
    top: tuple[Alternative, ...]


def token_logprob(logits: NDArray[np.float32], token: int, top: int,
                  piece: Callable[[int], bytes]) -> TokenLogprob:
    """Log-softmax of one logits row, read at `token` and at the `top` most likely tokens."""
    row = logits.astype(np.float64)
    peak = float(row.max())
    normalizer = peak + float(np.log(np.exp(row - peak).sum()))
    best: list[int] = []
    if top > 0:
        candidates = np.argpartition(-row, top - 1)[:top]
        best = sorted((int(i) for i in candidates), key=lambda i: (-row[i], i))
    return TokenLogprob(
        chosen=Alternative(token, piece(token), float(row[token]) - normalizer),
        top=tuple(Alternative(i, piece(i), float(row[i]) - normalizer) for i in best))


def chat_logprobs(entries: Iterable[TokenLogprob]) -> dict[str, Any]:
    """`choices[].logprobs` of a chat completion (or of one streamed chunk)."""
    return {"content": [{**_chat_entry(e.chosen),
                         "top_logprobs": [_chat_entry(a) for a in e.top]} for e in entries],
            "refusal": None}


def _chat_entry(alternative: Alternative) -> dict[str, Any]:
    return {"token": alternative.text, "logprob": alternative.logprob,
            "bytes": list(alternative.piece)}


def completion_logprobs(entries: Iterable[TokenLogprob], offset: int = 0) -> dict[str, Any]:
    """`choices[].logprobs` of a legacy completion; `offset` is where the first token's text
    starts in the whole answer (a stream's chunks continue from the previous one's end)."""
    out: dict[str, Any] = {"tokens": [], "token_logprobs": [], "top_logprobs": [],
                           "text_offset": []}
    for entry in entries:
        text = entry.chosen.text
        out["tokens"].append(text)
        out["token_logprobs"].append(entry.chosen.logprob)
        alternatives: dict[str, float] = {}
        for alternative in (*entry.top, entry.chosen):  # two tokens may share a text: keep
            alternatives.setdefault(alternative.text, alternative.logprob)  # the likelier
        out["top_logprobs"].append(alternatives)
        out["text_offset"].append(offset)
        offset += len(text)
    return out


def text_length(entries: Iterable[TokenLogprob]) -> int:
    """Characters the entries' tokens span, to continue `text_offset` in the next chunk."""
    return sum(len(e.chosen.text) for e in entries)
