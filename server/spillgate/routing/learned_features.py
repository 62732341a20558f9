"""Features of a prompt for the learned dispatcher: pure functions of the text.

Two kinds, chosen because they carry over to topics the router never saw in training:
- the local embedding (256 numbers from the bundled static model, computed by the caller and
  passed in, so this module stays free of any model);
- a few structural counts (length, digits, arithmetic symbols, questions, lettered options,
  code), each squashed with log1p or kept as a share so one long prompt cannot dominate.
  Each is one C-level regex or count over the text (a 4 KB prompt in tens of microseconds).

Bag-of-words features do not carry over: a TF-IDF router trained on the shared data recovered
less of the quality gap on unseen MMLU subjects than routing at random (issue 15).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from typing import Final

_ARITHMETIC = re.compile("[=+\\-*/^<>%$\u00d7\u00f7]")  # with the times and divide signs
_NUMBER = re.compile(r"\d+(?:[.,]\d+)?")
_OPTION = re.compile(r"^[ \t]*\(?[A-Da-d][.):][ \t]", re.MULTILINE)
_CODE_LINE_END = re.compile(r"[{};][ \t]*\n")
_CODE_WORDS = ("```", "def ", "return ", "#include", "function ", "=>", "()")
_DIGIT = re.compile(r"[0-9]")
_UPPER = re.compile(r"[A-Z]")


def _chars(text: str) -> float:
    return math.log1p(len(text))


def _words(text: str) -> float:
    return math.log1p(len(text.split()))


def _digit_share(text: str) -> float:
    return len(_DIGIT.findall(text)) / max(len(text), 1)


def _arithmetic(text: str) -> float:
    return math.log1p(len(_ARITHMETIC.findall(text)))


def _numbers(text: str) -> float:
    return math.log1p(len(_NUMBER.findall(text)))


def _questions(text: str) -> float:
    return math.log1p(text.count("?"))


def _lines(text: str) -> float:
    return math.log1p(text.count("\n"))


def _options(text: str) -> float:
    return math.log1p(len(_OPTION.findall(text)))


def _code(text: str) -> float:
    words = sum(text.count(word) for word in _CODE_WORDS)
    return math.log1p(words + len(_CODE_LINE_END.findall(text)))


def _upper_share(text: str) -> float:
    return len(_UPPER.findall(text)) / max(len(text), 1)


def _mean_word(text: str) -> float:
    words = text.split()
    return sum(len(w) for w in words) / len(words) if words else 0.0


def _sentences(text: str) -> float:
    return math.log1p(text.count(". ") + text.count(".\n") + text.endswith("."))


def _commas(text: str) -> float:
    return math.log1p(text.count(","))


# The order is part of the model file's feature spec: append, never reorder.
STRUCTURAL: Final[dict[str, Callable[[str], float]]] = {
    "log_chars": _chars,
    "log_words": _words,
    "digit_share": _digit_share,
    "log_arithmetic": _arithmetic,
    "log_numbers": _numbers,
    "log_questions": _questions,
    "log_lines": _lines,
    "log_options": _options,
    "log_code": _code,
    "upper_share": _upper_share,
    "mean_word_len": _mean_word,
    "log_sentences": _sentences,
    "log_commas": _commas,
}


def structural(text: str, names: Sequence[str]) -> list[float]:
    """The named structural features of one prompt, in the order given."""
    return [STRUCTURAL[name](text) for name in names]


def unknown_features(names: Sequence[str]) -> list[str]:
    """Names a model file asks for that this version does not compute."""
    return [name for name in names if name not in STRUCTURAL]
