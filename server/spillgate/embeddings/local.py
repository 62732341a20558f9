"""The bundled static-embedding model, loaded from the installed wheel only.

`wordllama.WordLlama.load()` looks for its tokenizer under a directory the wheel does not
ship (`tokenizer/` instead of `tokenizers/`) and then tries Hugging Face; the node has no
hub access at run time, so the two files are opened here directly from the package.
"""

from __future__ import annotations

import functools
from importlib import resources
from typing import Final

import numpy as np
import numpy.typing as npt

EMBEDDING_MODEL_ID: Final = "wordllama-l2-supercat-256"
_WEIGHTS: Final = "weights/l2_supercat_256.safetensors"
_TOKENIZER: Final = "tokenizers/l2_supercat_tokenizer_config.json"

Vectors = npt.NDArray[np.float32]


class LocalEmbedder:
    """Unit-length float32 vectors for texts; thread-safe (the tokenizer is Rust, the
    pooling is numpy), so callers may embed from a worker thread off the event loop."""

    def __init__(self, inference: object, dims: int) -> None:
        self._inference = inference
        self.dims = dims
        self.model_id = EMBEDDING_MODEL_ID

    def embed(self, texts: list[str]) -> Vectors:
        """One row per text, L2-normalised (a dot product is the cosine similarity)."""
        if not texts:
            return np.zeros((0, self.dims), dtype=np.float32)
        vectors = self._inference.embed(texts, norm=True)  # type: ignore[attr-defined]
        return np.asarray(vectors, dtype=np.float32)

    def token_counts(self, texts: list[str]) -> list[int]:
        """Tokens per text as the embedding model counts them (usage of /v1/embeddings)."""
        tokenizer = self._inference.tokenizer  # type: ignore[attr-defined]
        # One by one: the shipped tokenizer pads batches to their longest member.
        return [len(tokenizer.encode(text, add_special_tokens=False).ids) for text in texts]


@functools.cache
def load_local_embedder() -> LocalEmbedder:
    """Load once per process (about 0.5 s, 16 MB); later calls return the same instance."""
    from safetensors import safe_open
    from tokenizers import Tokenizer
    from wordllama.inference import WordLlamaInference

    package = resources.files("wordllama")
    tokenizer = Tokenizer.from_file(str(package / _TOKENIZER))
    with safe_open(str(package / _WEIGHTS), framework="np") as weights:
        table = weights.get_tensor("embedding.weight")
    inference = WordLlamaInference(table, tokenizer)
    return LocalEmbedder(inference, dims=int(table.shape[1]))
