"""Prompt-prefix reuse: a slot's KV stream keeps its last request's tokens for the next one.

Requests to one node share long prefixes: the chat template's system prompt, an app's own
system prompt, a conversation resent with one more turn. Each slot owns a KV stream that
outlives its request, so when a new request takes the slot, the cells of the longest prefix
it shares with what the stream holds are kept and only the rest of its prompt is computed:
shorter prefill, earlier first token, and fewer steps in which running streams wait for a
prompt. This is per slot, as llama.cpp's own server does it: a stream cannot lend its cells
to another stream, and picking slots by prefix instead of lowest-first would break the
contiguous slot run that lets a step be one pass (scheduler.py).

The cached cells are exactly what a fresh prefill would compute for those tokens at those
positions. The last prompt token is always computed again, as its logits are needed for
the first sample.
"""

from __future__ import annotations

from typing import Protocol


class PrefixMemory(Protocol):
    """What this needs from the model (LlamaModel has it)."""

    def keep_prefix(self, seq: int, n_tokens: int) -> bool: ...

    def forget(self, seq: int) -> None: ...


def common_prefix(held: list[int], prompt: list[int]) -> int:
    """Length of the longest common prefix of the two token lists."""
    n = 0
    for a, b in zip(held, prompt, strict=False):
        if a != b:
            break
        n += 1
    return n


class SlotPrefixes:
    """Per slot: the tokens whose KV cells its stream still holds (positions 0..n-1)."""

    def __init__(self, memory: PrefixMemory, slots: int, *, enabled: bool = True) -> None:
        self._memory = memory
        self._held: list[list[int]] = [[] for _ in range(slots)]
        self._enabled = enabled

    def claim(self, slot: int, prompt: list[int]) -> int:
        """The slot is taken for `prompt`: drop the cells past the shared prefix, and return
        how many prompt tokens are already in the stream (at most all but the last)."""
        held, self._held[slot] = self._held[slot], []
        keep = min(common_prefix(held, prompt), len(prompt) - 1) if self._enabled else 0
        if keep > 0 and self._memory.keep_prefix(slot, keep):
            return keep
        self._memory.forget(slot)  # nothing shared, or a model that cannot cut a sequence
        return 0

    def release(self, slot: int, tokens: list[int]) -> None:
        """The slot's request is done; its stream holds `tokens` (prompt fed, tokens decoded)."""
        if self._enabled:
            self._held[slot] = tokens
        else:
            self._memory.forget(slot)

    def drop(self, slot: int) -> None:
        """Forget the slot's cells (after a failed decode their contents are unknown)."""
        self._held[slot] = []
        self._memory.forget(slot)
