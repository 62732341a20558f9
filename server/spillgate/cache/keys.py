"""Cache keys: who may see an entry (scope) and which request it answers (exact key). Pure.

An entry is visible only inside its scope: the tenant (the virtual key, or the cache
namespace an admin set on several keys), the route, and a hash of every field that shapes the
answer. Fields are removed from the hash by a short denylist of those that cannot change the
answer (streaming, the caller's own labels); any other field, known or not, is part of the key,
so an unknown field can cost a hit but never serve a wrong one.

- `exact` is the hash of the whole shaping body: the same request, byte for byte after
  canonical JSON, gets the same answer.
- `semantic_scope` is the same hash with the last user message's text left out: the
  conversation before it, the system prompt, tools, response format and sampling settings
  must still be identical; only that last text is compared by meaning (index.py, guards.py).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Any

import orjson

from spillgate.types import JSON

# Fields that never change what the model answers.
NOT_SHAPING = frozenset({
    "stream", "stream_options", "user", "metadata", "store", "priority", "service_tier",
})  # fmt: skip
DEFAULT_TEMPERATURE = 1.0  # the OpenAI API's default when a request has none
_OMITTED = "\x00semantic\x00"  # stands for the compared text in the semantic scope


@dataclass(frozen=True, slots=True)
class CacheKeys:
    exact: str
    semantic_scope: str | None  # None: the request has no last user text to compare
    query: str | None  # that text


def tenant_of(key_id: str | None, namespace: str | None) -> str:
    """The namespace shared by several keys, else the key itself. Distinct prefixes keep a
    namespace and a key id of the same spelling apart."""
    if namespace:
        return f"ns:{namespace}"
    return f"key:{key_id}" if key_id else "anonymous"


def build_keys(tenant: str, route: str, body: JSON) -> CacheKeys:
    shaping = {k: v for k, v in body.items() if k not in NOT_SHAPING}
    exact = _digest(tenant, route, shaping)
    query, position = last_user_text(body)
    if query is None:
        return CacheKeys(exact, None, None)
    messages = list(shaping["messages"])
    messages[position] = {**messages[position], "content": _OMITTED}
    scope = _digest(tenant, route, {**shaping, "messages": messages})
    return CacheKeys(exact, scope, query)


def last_user_text(body: JSON) -> tuple[str | None, int]:
    """The last message's text when it is the user's (a string, or text parts only)."""
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return None, -1
    last = messages[-1]
    if not isinstance(last, dict) or last.get("role") != "user":
        return None, -1
    content = last.get("content")
    if isinstance(content, str):
        return content, len(messages) - 1
    if isinstance(content, list) and content and all(
            isinstance(p, dict) and p.get("type") == "text" and isinstance(p.get("text"), str)
            for p in content):
        return "\n".join(p["text"] for p in content), len(messages) - 1
    return None, -1


def temperature_of(body: JSON) -> float:
    value: Any = body.get("temperature")
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return DEFAULT_TEMPERATURE


def _digest(tenant: str, route: str, shaping: JSON) -> str:
    payload = orjson.dumps([tenant, route, shaping], option=orjson.OPT_SORT_KEYS)
    return hashlib.blake2b(payload, digest_size=20).hexdigest()


_FILLER = re.compile(r"\b(please|thanks|thank you|hi|hello|hey|can you|could you|tell me|"
                     r"i want to know|i would like to know)\b[,!.]?", re.IGNORECASE)
_TOKEN = re.compile(r"[\w']+")
_STOPWORDS = frozenset(re.findall(r"\S+", "a an the is are was were be do does did to of in on "
                                  "for and or my i me you it what how which"))


def comparable_text(query: str) -> str:
    """What is embedded: lower case, without politeness and function words, which move
    paraphrases apart more than they tell questions apart (docs/cache-eval.md: recall on
    paraphrases 0.36 → 0.60 on the tuning set at the same precision). What the function words
    carry that matters (negation, what is asked) the guards check on the original text."""
    text = _FILLER.sub(" ", query).lower()
    return " ".join(w for w in _TOKEN.findall(text) if w not in _STOPWORDS)
