"""A GGUF model and one multi-sequence llama.cpp context, through llama-cpp-python's C API.

The high-level `llama_cpp.Llama` holds one sequence per context, which is why its server
serializes requests (or cancels one for another). Here one context holds `n_seq_max`
independent sequences, each with its own KV-cache stream (`kv_unified=False`), so each sequence
gets the full `n_ctx` and several are decoded together in one `llama_decode` call.

Everything in this module except loading, tokenizing and metadata must be called from the one
thread that owns the context (the scheduler's decode thread): llama.cpp contexts are not
thread-safe.
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import llama_cpp
import numpy as np

from spillgate.engines.llamacpp.logprobs import TokenLogprob, token_logprob
from spillgate.errors import ConfigError

_PIECE_BUF = 256


@dataclass(frozen=True, slots=True)
class ContextShape:
    """How the context is sized: per-sequence window, sequence slots, tokens per decode."""

    n_ctx: int
    n_seq: int
    n_batch: int
    n_threads: int


@dataclass(frozen=True, slots=True)
class SamplingParams:
    """Per-sequence sampling; temperature 0 means greedy."""

    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    seed: int | None = None
    grammar: str | None = None  # GBNF the output must follow (JSON modes), root rule `root`


class LlamaModel:
    """Owns the model weights, the context and a reusable `llama_batch`; free with `close()`."""

    def __init__(self, path: Path, shape: ContextShape, *, context: bool = True) -> None:
        """`context=False` loads the vocabulary only (tokenizing, templates, metadata): what
        the HTTP process needs when a decode process owns the weights and the context."""
        if not path.is_file():
            raise ConfigError(f"--model-path: no GGUF file at {path}")
        llama_cpp.llama_backend_init()
        model_params = llama_cpp.llama_model_default_params()
        model_params.vocab_only = not context
        model = llama_cpp.llama_model_load_from_file(str(path).encode(), model_params)
        if not model:
            raise ConfigError(f"--model-path: llama.cpp could not load {path}")
        self._model: Any = model
        self.shape = shape
        self.vocab: Any = llama_cpp.llama_model_get_vocab(model)
        self.n_ctx_train = int(llama_cpp.llama_model_n_ctx_train(model))
        self._n_vocab = int(llama_cpp.llama_vocab_n_tokens(self.vocab))
        self._n_swa = int(llama_cpp.llama_model_n_swa(model))
        self._ctx: Any = self._new_context(shape) if context else None
        self._memory: Any = llama_cpp.llama_get_memory(self._ctx) if context else None
        self._batch: Any = llama_cpp.llama_batch_init(shape.n_batch, 0, 1) if context else None
        self._piece = ctypes.create_string_buffer(_PIECE_BUF)
        self._closed = False

    def _new_context(self, shape: ContextShape) -> Any:
        params = llama_cpp.llama_context_default_params()
        # Separate KV streams: every sequence can use the whole window and none can starve
        # another of cache cells; the cost is n_seq x n_ctx cells of memory.
        params.n_ctx = shape.n_ctx * shape.n_seq
        params.n_seq_max = shape.n_seq
        params.kv_unified = False
        params.n_batch = shape.n_batch
        params.n_ubatch = min(shape.n_batch, 512)
        params.n_threads = shape.n_threads
        params.n_threads_batch = shape.n_threads
        params.no_perf = True
        ctx = llama_cpp.llama_init_from_model(self._model, params)
        if not ctx:
            llama_cpp.llama_model_free(self._model)
            raise ConfigError("llama.cpp could not create a context (n_ctx or max_batch too big?)")
        return ctx

    # ---- metadata and text (safe from any thread: they only read the vocab) ----

    def metadata(self, key: str) -> str | None:
        buf = ctypes.create_string_buffer(1 << 16)
        n = llama_cpp.llama_model_meta_val_str(self._model, key.encode(), buf, len(buf))
        if n < 0:
            return None
        if n >= len(buf):  # long values (chat templates) are truncated: ask again, bigger
            buf = ctypes.create_string_buffer(n + 1)
            llama_cpp.llama_model_meta_val_str(self._model, key.encode(), buf, len(buf))
        return buf.value.decode("utf-8", errors="replace")

    def token_text(self, token: int) -> str:
        raw: bytes = llama_cpp.llama_vocab_get_text(self.vocab, token) or b""
        return raw.decode("utf-8", errors="replace")

    @property
    def bos_token(self) -> int:
        return int(llama_cpp.llama_vocab_bos(self.vocab))

    @property
    def eos_token(self) -> int:
        return int(llama_cpp.llama_vocab_eos(self.vocab))

    def tokenize(self, text: str, *, add_special: bool, parse_special: bool) -> list[int]:
        data = text.encode("utf-8")
        capacity = len(data) + 8
        buf = (llama_cpp.llama_token * capacity)()
        n = llama_cpp.llama_tokenize(self.vocab, data, len(data), buf, capacity, add_special,
                                     parse_special)
        if n < 0:
            capacity = -n
            buf = (llama_cpp.llama_token * capacity)()
            n = llama_cpp.llama_tokenize(self.vocab, data, len(data), buf, capacity,
                                         add_special, parse_special)
        return list(buf[:n])

    def adds_bos(self) -> bool:
        return bool(llama_cpp.llama_vocab_get_add_bos(self.vocab))

    def n_vocab(self) -> int:
        return int(llama_cpp.llama_vocab_n_tokens(self.vocab))

    # ---- decode thread only ----

    def is_end_of_generation(self, token: int) -> bool:
        return bool(llama_cpp.llama_vocab_is_eog(self.vocab, token))

    def piece(self, token: int) -> bytes:
        """The bytes a generated token stands for (control tokens render as nothing)."""
        n = llama_cpp.llama_token_to_piece(self.vocab, token, self._piece, _PIECE_BUF, 0, False)
        if n < 0:
            big = ctypes.create_string_buffer(-n)
            n = llama_cpp.llama_token_to_piece(self.vocab, token, big, -n, 0, False)
            return big.raw[:n]
        return self._piece.raw[:n]

    def new_sampler(self, params: SamplingParams) -> Any:
        """A C sampler chain (free with `free_sampler`): greedy, or top-k/top-p/temp/dist."""
        chain = llama_cpp.llama_sampler_chain_init(llama_cpp.llama_sampler_chain_default_params())
        if params.grammar is not None:
            # First in the chain: tokens the grammar forbids are masked before any choice.
            grammar = self._grammar_sampler(params.grammar)
            if not grammar:
                llama_cpp.llama_sampler_free(chain)
                raise ValueError("llama.cpp refused the grammar")
            llama_cpp.llama_sampler_chain_add(chain, grammar)
        if params.temperature <= 0.0:
            llama_cpp.llama_sampler_chain_add(chain, llama_cpp.llama_sampler_init_greedy())
            return chain
        if params.top_k > 0:
            llama_cpp.llama_sampler_chain_add(chain, llama_cpp.llama_sampler_init_top_k(
                params.top_k))
        if params.top_p < 1.0:
            llama_cpp.llama_sampler_chain_add(chain, llama_cpp.llama_sampler_init_top_p(
                params.top_p, 1))
        llama_cpp.llama_sampler_chain_add(chain, llama_cpp.llama_sampler_init_temp(
            params.temperature))
        seed = llama_cpp.LLAMA_DEFAULT_SEED if params.seed is None else params.seed & 0xFFFFFFFF
        llama_cpp.llama_sampler_chain_add(chain, llama_cpp.llama_sampler_init_dist(seed))
        return chain

    def _grammar_sampler(self, grammar: str) -> Any:
        return llama_cpp.llama_sampler_init_grammar(self.vocab, grammar.encode(), b"root")

    def grammar_ok(self, grammar: str) -> bool:
        """Whether llama.cpp parses this GBNF (reads only the vocab: safe from any thread)."""
        sampler = self._grammar_sampler(grammar)
        if not sampler:
            return False
        llama_cpp.llama_sampler_free(sampler)
        return True

    @staticmethod
    def free_sampler(sampler: Any) -> None:
        llama_cpp.llama_sampler_free(sampler)

    def sample(self, sampler: Any, batch_index: int) -> int:
        """Sample (and accept) the next token from the logits of batch row `batch_index`."""
        return int(llama_cpp.llama_sampler_sample(sampler, self._ctx, batch_index))

    def logprobs(self, batch_index: int, token: int, top: int) -> TokenLogprob:
        """Log-probability of `token` and the `top` best at batch row `batch_index` (rows whose
        logits were asked for; valid until the next decode)."""
        pointer = llama_cpp.llama_get_logits_ith(self._ctx, batch_index)
        logits = np.ctypeslib.as_array(pointer, shape=(self._n_vocab,))
        return token_logprob(logits, token, top, self.piece)

    def decode(self, rows: list[tuple[int, int, int, bool]]) -> int:
        """Decode rows of (token, position, sequence id, wants logits) in one call.

        Returns llama_decode's status: 0 is success.
        """
        batch = self._batch
        token, pos, n_seq_id, seq_id, logits = (
            batch.token, batch.pos, batch.n_seq_id, batch.seq_id, batch.logits)
        for i, (tok, position, seq, wants) in enumerate(rows):
            token[i] = tok
            pos[i] = position
            n_seq_id[i] = 1
            seq_id[i][0] = seq
            logits[i] = wants
        batch.n_tokens = len(rows)
        return int(llama_cpp.llama_decode(self._ctx, batch))

    def set_threads(self, n_threads: int, n_threads_batch: int) -> None:
        """Threads of the next decodes: of one-token batches, and of bigger ones."""
        llama_cpp.llama_set_n_threads(self._ctx, n_threads, n_threads_batch)

    def keep_prefix(self, seq: int, n_tokens: int) -> bool:
        """Drop a sequence's KV cells from position `n_tokens` on, keeping the ones before;
        False when the model cannot cut a sequence part way (recurrent state) or may have
        pruned the cells before it (a sliding window: llama.cpp still says yes there)."""
        if self._n_swa > 0:
            return False
        return bool(llama_cpp.llama_memory_seq_rm(self._memory, seq, n_tokens, -1))

    def forget(self, seq: int) -> None:
        """Drop every KV-cache cell of a sequence so its slot can hold a new one."""
        llama_cpp.llama_memory_seq_rm(self._memory, seq, -1, -1)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._ctx is not None:
            llama_cpp.llama_batch_free(self._batch)
            llama_cpp.llama_free(self._ctx)
        llama_cpp.llama_model_free(self._model)

    def __enter__(self) -> LlamaModel:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
