"""The local embedding model as a backend: `/v1/embeddings` answered on the node itself.

The model is the bundled static-embedding model (`spillgate.embeddings`): numpy and a Rust
tokenizer, no native inference engine that could crash, so it runs inside the gateway
process (in a worker thread, off the event loop) instead of behind a port. It is routed like
any local model: its served name resolves to a `local` route, sensitive inputs stay local, and
every call is a ledger row with its token usage and its share of the hardware's cost.

OpenAI's shape and limits: `input` is a string or a list of up to 2,048 non-empty strings;
`encoding_format` float (default) or base64 (little-endian float32, what the official SDKs ask
for by default); `dimensions` keeps the first N components, renormalised (the model was trained
Matryoshka-style, so prefixes stay meaningful).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
from collections.abc import AsyncIterator, Sequence
from typing import Any

import numpy as np

from spillgate.backends.base import UpstreamCall, single_chunks
from spillgate.embeddings import LocalEmbedder, load_local_embedder
from spillgate.errors import InvalidRequest
from spillgate.types import JSON, Tier

MAX_INPUTS = 2048  # OpenAI's limit per request
MAX_INPUT_TOKENS = 8192  # per input, as OpenAI's embedding models


class LocalEmbeddingBackend:
    """A `Backend` serving the `embeddings` endpoint from the in-process model."""

    def __init__(self, name: str, served_model: str) -> None:
        self.name = name
        self.tier: Tier = "local"
        self.served_model = served_model
        self._active = 0

    def inflight(self) -> int:
        return self._active

    async def complete(self, call: UpstreamCall, body: JSON) -> JSON:
        if call.endpoint != "embeddings":
            raise InvalidRequest(
                f"`{self.served_model}` is an embedding model: use /v1/embeddings",
                param="model", code="model_not_chat_capable")
        texts = _texts(body.get("input"))
        encoding = _encoding(body.get("encoding_format"))
        self._active += 1
        try:
            embedder = await asyncio.to_thread(load_local_embedder)
            dims = _dimensions(body.get("dimensions"), embedder.dims)
            vectors, tokens = await asyncio.to_thread(_embed, embedder, texts, dims)
        finally:
            self._active -= 1
        return {
            "object": "list",
            "data": [{"object": "embedding", "index": i, "embedding": _encode(v, encoding)}
                     for i, v in enumerate(vectors)],
            "model": self.served_model,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }

    def stream(self, call: UpstreamCall, body: JSON) -> AsyncIterator[JSON]:
        raise InvalidRequest(f"`{self.served_model}` is an embedding model: it does not "
                             "stream", param="stream")

    def stream_batches(self, call: UpstreamCall, body: JSON) -> AsyncIterator[list[JSON]]:
        return single_chunks(self.stream(call, body))  # raises at once, as `stream`

    async def aclose(self) -> None:
        return None


class InProcessSupervisor:
    """Readiness of an in-process backend: ready once its model is loaded (about 0.5 s)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.unsupported: frozenset[str] = frozenset()
        self._loaded = asyncio.Event()

    @property
    def ready(self) -> bool:
        return self._loaded.is_set()

    def set_health_urls(self, urls: Sequence[str]) -> None:
        return None

    async def start(self) -> None:
        await asyncio.to_thread(load_local_embedder)
        self._loaded.set()

    async def wait_ready(self, timeout_s: float) -> bool:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._loaded.wait(), timeout_s)
        return self.ready

    async def stop(self) -> None:
        self._loaded.clear()


def _texts(value: Any) -> list[str]:
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not items:
        raise InvalidRequest("`input` must be a non-empty string or list of strings",
                             param="input")
    if len(items) > MAX_INPUTS:
        raise InvalidRequest(f"`input` holds {len(items)} items; at most {MAX_INPUTS}",
                             param="input")
    for index, item in enumerate(items):
        if not isinstance(item, str):
            # Token ids are the client's tokenizer's, not this model's: refuse, don't guess.
            raise InvalidRequest("this model takes text inputs, not token ids",
                                 param=f"input[{index}]")
        if not item.strip():
            raise InvalidRequest("`input` must not contain empty strings",
                                 param=f"input[{index}]")
    return list(items)


def _encoding(value: Any) -> str:
    if value is None or value in ("float", "base64"):
        return str(value or "float")
    raise InvalidRequest("`encoding_format` must be `float` or `base64`",
                         param="encoding_format")


def _dimensions(value: Any, native: int) -> int:
    if value is None:
        return native
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= native:
        raise InvalidRequest(f"`dimensions` must be an integer from 1 to {native}",
                             param="dimensions")
    return value


def _embed(embedder: LocalEmbedder, texts: list[str], dims: int) -> tuple[np.ndarray, int]:
    counts = embedder.token_counts(texts)
    for index, count in enumerate(counts):
        if count > MAX_INPUT_TOKENS:
            raise InvalidRequest(f"input[{index}] has {count} tokens; at most "
                                 f"{MAX_INPUT_TOKENS}", param=f"input[{index}]")
    vectors = embedder.embed(texts)
    if dims < embedder.dims:
        vectors = vectors[:, :dims]
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        vectors = (vectors / np.where(norms == 0, 1, norms)).astype(np.float32)
    return vectors.astype(np.float32), sum(counts)


def _encode(vector: np.ndarray, encoding: str) -> list[float] | str:
    if encoding == "base64":
        return base64.b64encode(vector.astype("<f4").tobytes()).decode("ascii")
    return [float(x) for x in vector]
