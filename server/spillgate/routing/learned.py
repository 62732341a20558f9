"""The learned dispatcher: a score per prompt (higher = send to the paid model), then a
threshold. Score and decision are apart (as RouteLLM's `calculate_strong_win_rate` and
`route`), and both are pure: the embedding function is handed in, the model arrives as a
parsed mapping (spillgate.learned_file reads and writes the file).

The model is a logistic regression over [local embedding of the prompt, structural
features], standardised with the training set's mean and spread. Its file is small JSON:
format, version, feature spec, embedder id, training data hash and score quantiles of the
training prompts, so a route can ask for a paid share instead of a raw threshold.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from spillgate.routing.learned_features import structural, unknown_features

FORMAT: Final = "spillgate-router"
VERSION: Final = 1
# The embedding sees the prompt's head only: the tokenizer's time grows faster than the text
# (measured: ~0.1 ms at 200 characters, several ms at 4 KB), and the head says what is asked.
EMBED_CHARS: Final = 1024

Floats = npt.NDArray[np.float64]
Embed = Callable[[list[str]], npt.NDArray[np.float32]]


class RouterFileError(ValueError):
    """A model file this version cannot use (format, version, features, embedder, shapes)."""


@dataclass(frozen=True, slots=True)
class LearnedRouter:
    embedder: str | None  # id of the embedding model the weights expect; None: none used
    structural: tuple[str, ...]
    mean: Floats
    scale: Floats
    weights: Floats
    bias: float
    quantiles: Floats  # training scores at shares 0, 1/(q-1), …, 1 (ascending)
    meta: Mapping[str, Any]  # target, regularisation, training rows and data hash

    def features(self, texts: Sequence[str], embed: Embed | None) -> Floats:
        """Raw (unstandardised) feature rows for `texts`."""
        parts: list[Floats] = []
        if self.embedder is not None:
            if embed is None:
                raise RouterFileError(f"this router needs the embedding model {self.embedder}")
            heads = [text[:EMBED_CHARS] for text in texts]
            parts.append(np.asarray(embed(heads), dtype=np.float64))
        parts.append(np.array([structural(t, self.structural) for t in texts],
                              dtype=np.float64).reshape(len(texts), len(self.structural)))
        return np.hstack(parts)

    def scores_of(self, features: Floats) -> Floats:
        z = ((features - self.mean) / self.scale) @ self.weights + self.bias
        return np.asarray(1.0 / (1.0 + np.exp(-np.clip(z, -60.0, 60.0))), dtype=np.float64)

    def scores(self, texts: Sequence[str], embed: Embed | None) -> Floats:
        """Probability-like scores in (0, 1); higher means the paid model is needed more."""
        if not texts:
            return np.zeros(0)
        return self.scores_of(self.features(texts, embed))

    def threshold_for_share(self, paid_share: float) -> float:
        """The score above which `paid_share` of the training prompts fall."""
        if not 0.0 <= paid_share <= 1.0:
            raise ValueError("paid_share must lie in [0, 1]")
        grid = np.linspace(0.0, 1.0, len(self.quantiles))
        return float(np.interp(1.0 - paid_share, grid, self.quantiles))

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT, "version": VERSION, "embedder": self.embedder,
            "embed_chars": EMBED_CHARS, "structural": list(self.structural),
            "mean": _floats(self.mean), "scale": _floats(self.scale),
            "weights": _floats(self.weights), "bias": round(self.bias, 8),
            "quantiles": _floats(self.quantiles), "meta": dict(self.meta),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LearnedRouter:
        if data.get("format") != FORMAT:
            raise RouterFileError(f"not a router file (format is not {FORMAT!r})")
        if data.get("version") != VERSION:
            raise RouterFileError(f"router file version {data.get('version')!r}; this "
                                  f"Spillgate reads version {VERSION}: retrain it")
        names = tuple(str(n) for n in data.get("structural", ()))
        unknown = unknown_features(names)
        if unknown:
            raise RouterFileError(f"router file uses features this version lacks: {unknown}")
        if data.get("embedder") is not None and data.get("embed_chars") != EMBED_CHARS:
            raise RouterFileError("router file embeds a different prompt length: retrain it")
        try:
            router = cls(
                embedder=None if data.get("embedder") is None else str(data["embedder"]),
                structural=names, mean=_array(data["mean"]), scale=_array(data["scale"]),
                weights=_array(data["weights"]), bias=float(data["bias"]),
                quantiles=_array(data["quantiles"]), meta=dict(data.get("meta") or {}),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise RouterFileError(f"router file is malformed: {exc}") from exc
        router.check_shapes()
        return router

    def check_shapes(self) -> None:
        width = len(self.weights)
        if (len(self.mean), len(self.scale)) != (width, width) or width < len(self.structural):
            raise RouterFileError("router file is malformed: weights, mean and scale differ "
                                  "in length")
        if len(self.quantiles) < 2 or np.any(np.diff(self.quantiles) < 0):
            raise RouterFileError("router file is malformed: quantiles must ascend")
        if not all(math.isfinite(v) for v in (*self.weights, *self.mean, self.bias)) or \
                np.any(self.scale <= 0):
            raise RouterFileError("router file is malformed: non-finite weights or zero scale")


@dataclass(frozen=True, slots=True)
class Dispatcher:
    """A route's learned dispatcher: the model, its threshold and the embedding it needs."""

    router: LearnedRouter
    threshold: float
    embed: Embed | None

    def score(self, text: str) -> float:
        return float(self.router.scores([text], self.embed)[0])

    def wants_paid(self, score: float) -> bool:
        return score > self.threshold


def _floats(values: Floats) -> list[float]:
    return [round(float(v), 8) for v in values]


def _array(values: object) -> Floats:
    if not isinstance(values, list):
        raise TypeError("expected a list of numbers")
    return np.asarray(values, dtype=np.float64)


def prompt_text(body: Mapping[str, Any]) -> str:
    """The text the dispatcher scores: the last user message of a chat (its text parts), or
    a completion's prompt. Training rows hold the user's question alone, so the system
    prompt and earlier turns are left out."""
    messages = body.get("messages")
    if isinstance(messages, list):
        for message in reversed(messages):
            if isinstance(message, Mapping) and message.get("role") == "user":
                return _content_text(message.get("content"))
        return ""
    prompt = body.get("prompt")
    if isinstance(prompt, list):
        prompt = prompt[0] if prompt else ""
    return prompt if isinstance(prompt, str) else ""


def _content_text(content: object) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(str(part.get("text", "")) for part in content
                         if isinstance(part, Mapping) and part.get("type") == "text")
    return ""
