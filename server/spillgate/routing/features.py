"""Request features a local engine may lack, named by the request field that asks for them.

An engine declares the features it cannot serve (our llama.cpp engine on /health; a vLLM
backend from its catalog entry); the router compares them with what a request asks for. A
missing feature makes the local tier unable to serve that request: it spills (`auto`, not
sensitive) or gets a 400 naming the field (sensitive, or a local-only route).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

TOOLS = "tools"
RESPONSE_FORMAT = "response_format"
LOGPROBS = "logprobs"
N = "n"
KNOWN = frozenset({TOOLS, RESPONSE_FORMAT, LOGPROBS, N})


def requested(body: Mapping[str, Any]) -> frozenset[str]:
    """The features this request body asks for (plain text generation asks for none)."""
    wanted = set()
    if body.get("tools") or body.get("functions"):
        wanted.add(TOOLS)
    response_format = body.get("response_format")
    if isinstance(response_format, Mapping) and response_format.get("type", "text") != "text":
        wanted.add(RESPONSE_FORMAT)
    logprobs = body.get("logprobs")
    if logprobs is not None and logprobs is not False:  # legacy completions: 0 asks too
        wanted.add(LOGPROBS)
    n = body.get("n")
    if isinstance(n, int) and not isinstance(n, bool) and n > 1:
        wanted.add(N)
    return frozenset(wanted)
