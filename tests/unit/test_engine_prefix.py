"""A slot keeps its last request's KV cells, and the next request reuses the shared prefix.

Driven through the real Scheduler over a model that keeps each slot's stream as tokens
(tests/engine_recording.py). What a user relies on: a request decodes against exactly its
own prompt and its own tokens, whatever the slot held before (no other request's tokens, no
hole, nothing twice), and a prompt that shares a prefix with what its slot holds is not
computed again.
"""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.engine_recording import FIRST_SAMPLED, Event, Request, run

# Prompts share prefixes of a few bases, each ends in a token of its own (which request a
# stream belongs to is read from it).
BASES = ((7, 8, 9, 10, 11, 12, 13, 14, 15, 16), (7, 8, 9, 20, 21, 22), (30, 31, 32, 33))


@st.composite
def requests(draw: st.DrawFn) -> list[Request]:
    count = draw(st.integers(1, 12))
    wanted = []
    for i in range(count):
        base = draw(st.sampled_from(BASES))
        prompt = (*base[:draw(st.integers(0, len(base)))], 1000 + i)
        # clients leave after some chunks or some time: mid-prompt, mid-answer, or never
        wanted.append(Request(prompt, draw(st.integers(1, 6)), draw(st.integers(0, 8)),
                              draw(st.none() | st.integers(0, 3)),
                              draw(st.none() | st.integers(0, 6))))
    return wanted


def _streams_seen(events: list[Event]) -> dict[int, list[tuple[tuple[int, ...], int]]]:
    """Per sampler (request admitted): (the slot's cells when it sampled, token sampled)."""
    seen: dict[int, list[tuple[tuple[int, ...], int]]] = {}
    for kind, value in events:
        if kind == "sample":
            sampler, cells, token = value
            seen.setdefault(sampler, []).append((cells, token))
    return seen


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(wanted=requests(), max_batch=st.integers(1, 4), prefill_chunk=st.integers(1, 12))
def test_every_request_decodes_against_its_own_prompt_and_tokens_only(
        wanted: list[Request], max_batch: int, prefill_chunk: int) -> None:
    model = run(wanted, max_batch=max_batch, prefill_chunk=prefill_chunk)
    assert model.violations == []
    prompts = {r.prompt[-1]: r.prompt for r in wanted}
    for samples in _streams_seen(model.events).values():
        first_cells = samples[0][0]
        prompt = prompts[first_cells[-1]]  # the stream ends in its request's own token
        assert first_cells == prompt
        own = [token for _cells, token in samples]
        for i, (cells, _token) in enumerate(samples):
            assert cells == prompt + tuple(own[:i])


def test_a_shared_prefix_is_not_computed_again() -> None:
    base = BASES[0]
    first, second = Request((*base, 1001), 3), Request((*base, 1002), 3, delay_ms=40)
    model = run([first, second], max_batch=1)
    fed_prompt_rows = [[row for row in rows if row[0] < FIRST_SAMPLED]
                       for kind, rows in model.events if kind == "decode"]
    positions = [row[1] for rows in fed_prompt_rows for row in rows]
    # the first request's prompt from 0; the second's from the end of the shared prefix
    assert positions == [*list(range(len(base) + 1)), len(base)]
    assert ("keep", (0, len(base))) in model.events


def test_a_repeated_prompt_computes_its_last_token_only() -> None:
    prompt = BASES[1] + (1001,)
    model = run([Request(prompt, 2), Request(prompt, 2, delay_ms=40)], max_batch=1)
    assert ("keep", (0, len(prompt) - 1)) in model.events  # its logits are needed
    assert model.violations == []


def test_with_reuse_off_every_prompt_is_computed_whole() -> None:
    base = BASES[0]
    model = run([Request((*base, 1001), 3), Request((*base, 1002), 3, delay_ms=40)],
                max_batch=1, reuse_prefix=False)
    prompt_rows = [row for kind, rows in model.events if kind == "decode" for row in rows
                   if row[0] < FIRST_SAMPLED]
    assert [row[1] for row in prompt_rows] == [*range(len(base) + 1), *range(len(base) + 1)]
    assert model.violations == []


def test_a_prompt_left_half_computed_lends_only_what_was_computed() -> None:
    # One prompt token a step; after the third step the model waits until the client has
    # left, so the request is released with exactly 3 prompt tokens in its slot.
    base = BASES[0]
    first = Request((*base, 1001), 3, cancel_when_paused=True)
    second = Request((*base, 1002), 3, delay_ms=100)
    model = run([first, second], max_batch=1, prefill_chunk=1, pause_at=3)
    admits = [i for i, (kind, _) in enumerate(model.events) if kind == "admit"]
    assert model.events[admits[1] - 1] == ("keep", (0, 3))
    assert model.violations == []


def test_a_previous_answer_is_reused_up_to_its_last_decoded_token() -> None:
    # The first request samples 3 tokens; the last one is never decoded into the cache. A
    # follow-up whose prompt repeats the answer reuses the prompt and the 2 decoded tokens.
    prompt = BASES[2]
    follow_up = (*prompt, FIRST_SAMPLED, FIRST_SAMPLED + 1, FIRST_SAMPLED + 2, 1002)
    model = run([Request(prompt, 3), Request(follow_up, 2, delay_ms=60)], max_batch=1)
    assert ("keep", (0, len(prompt) + 2)) in model.events
    assert model.violations == []


def test_after_a_failed_decode_the_slot_starts_empty() -> None:
    base = BASES[0]
    first, second = Request((*base, 1001), 3), Request((*base, 1002), 3, delay_ms=60)
    model = run([first, second], max_batch=1, fail_at=2)  # the first answer's first step
    admits = [i for i, (kind, _) in enumerate(model.events) if kind == "admit"]
    assert model.events[admits[1] - 1] == ("keep", (0, 0))
    second_rows = [rows for kind, rows in model.events[admits[1]:] if kind == "decode"]
    assert second_rows[0][0][1] == 0  # its prompt from position 0
    assert model.violations == []
