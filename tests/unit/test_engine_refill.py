"""A request that arrives just after another finished joins the very next decode.

The decode loop admits requests only between decodes. A client that asks again as soon as
its answer ends (an agent loop, a batch runner) reaches the engine a few milliseconds after
the last chunk left, by when the next decode had begun: its request waited a whole step.
With `refill_wait_s` the loop waits that long, after a step that finished a request, for
the next arrival. These tests drive the real Scheduler over a model that records every call.
"""

from __future__ import annotations

import time

from tests.engine_recording import Event, Request, run

PROMPT = (1, 2, 3, 4)
STEP_S = 0.02  # a decode long enough that an arrival 2 ms late would miss the next one


def _samplers(events: list[Event]) -> list[int]:
    return [value for kind, value in events if kind == "admit"]


def _decodes_between(events: list[Event], freed: int, admitted: int) -> int:
    """Decodes after the request with sampler `freed` left and before `admitted` came in."""
    start = events.index(("free", freed))
    end = events.index(("admit", admitted))
    return sum(1 for kind, _ in events[start:end] if kind == "decode")


def test_a_client_asking_again_at_once_joins_the_next_decode() -> None:
    # 0 decodes on; 1 ends after two tokens and its client asks again 2 ms later (2).
    wanted = [Request(PROMPT, 12), Request(PROMPT, 2), Request(PROMPT, 2, delay_ms=2, after=1)]
    events = run(wanted, step_s=STEP_S, refill_wait_s=0.5).events
    _, second, again = _samplers(events)
    assert _decodes_between(events, second, again) == 0, (
        "the next request waited out a decode it could have joined")


def test_without_the_wait_the_same_client_misses_a_decode() -> None:
    """The case above with the wait off: the request arrives while the next decode runs."""
    wanted = [Request(PROMPT, 12), Request(PROMPT, 2), Request(PROMPT, 2, delay_ms=2, after=1)]
    events = run(wanted, step_s=STEP_S, refill_wait_s=0.0).events
    _, second, again = _samplers(events)
    assert _decodes_between(events, second, again) >= 1


def test_the_wait_happens_once_per_finished_request_not_every_step() -> None:
    """One request ends early and nobody comes: the other keeps decoding. A loop that waited
    before every step would take 10 x 0.4 s here; one wait per finished request takes one."""
    wanted = [Request(PROMPT, 12), Request(PROMPT, 1)]
    began = time.monotonic()
    model = run(wanted, step_s=0.001, refill_wait_s=0.4)
    assert time.monotonic() - began < 2.0
    assert sum(1 for kind, _ in model.events if kind == "decode") >= 12


def test_a_lone_request_finishing_never_waits() -> None:
    """Nothing else decoding: the loop sleeps until work comes, with no wait to add."""
    wanted = [Request(PROMPT, 1), Request(PROMPT, 1, after=0), Request(PROMPT, 1, after=1)]
    began = time.monotonic()
    run(wanted, step_s=0.001, refill_wait_s=0.5)
    assert time.monotonic() - began < 1.0
