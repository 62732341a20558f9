"""The decode loop's batches are what llama.cpp can run in one pass.

With a KV stream per sequence, llama.cpp splits a batch into ubatches that take sequences only
in increasing, consecutive ids: rows out of slot order, or busy slots with gaps, cost another
pass over every weight per step (22-91% slower steps measured by scripts/batch_order.py).
These tests drive the real Scheduler through its public API with generated arrivals, lengths,
prompt chunking and cancellations, over a model that records every call, and check:
  - every batch lists its rows by slot, each sequence's rows together and in position order;
  - every request is admitted into the lowest free slot, so busy slots stay contiguous.
"""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.engine_recording import Request, run, slots_by_sampler

requests = st.lists(st.builds(
    Request, prompt=st.integers(1, 40).map(lambda n: tuple(range(1, n + 1))),
    max_tokens=st.integers(1, 10), delay_ms=st.integers(0, 6),
    cancel_after=st.none() | st.integers(0, 3)),
    min_size=1, max_size=14)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(max_batch=st.integers(2, 4), prefill_chunk=st.integers(1, 48), wanted=requests,
       refill_wait_s=st.sampled_from([0.0, 0.003]))
def test_rows_go_out_by_slot_and_requests_take_the_lowest_free_slot(
        max_batch: int, prefill_chunk: int, wanted: list[Request], refill_wait_s: float) -> None:
    model = run(wanted, max_batch=max_batch, prefill_chunk=prefill_chunk,
                refill_wait_s=refill_wait_s)
    events = model.events
    batches = [rows for kind, rows in events if kind == "decode"]
    if any(r.cancel_after != 0 for r in wanted):  # someone waited for a token
        assert batches, "nothing was decoded"
    for rows in batches:
        keys = [(seq, position) for _token, position, seq, _logits in rows]
        assert keys == sorted(keys), f"rows out of slot order: {keys}"
        assert len(set(keys)) == len(keys)

    slots = slots_by_sampler(events)
    busy: dict[int, int] = {}  # sampler -> slot, for admitted requests not yet freed
    for kind, value in events:
        if kind == "admit":
            slot = slots[value]
            free = set(range(max_batch)) - set(busy.values())
            assert slot == min(free), f"admitted into slot {slot}, lowest free was {min(free)}"
            busy[value] = slot
        elif kind == "free":
            busy.pop(value)
    assert not busy, "a request's slot was never freed"


def test_a_request_admitted_beside_running_ones_takes_the_lowest_gap() -> None:
    """Slots 0-3 busy; the requests in slot 1 and then slot 2 leave; the next request takes
    slot 1 (the last slot freed would be 2), so slots 0, 1 and 3 run as two passes at most."""
    prompt = (1, 2, 3, 4)
    wanted = [Request(prompt, 30), Request(prompt, 2), Request(prompt, 4), Request(prompt, 30),
              Request(prompt, 5, delay_ms=20)]
    events = run(wanted, step_s=0.002).events
    slots = slots_by_sampler(events)
    admitted = [value for kind, value in events if kind == "admit"]
    assert [slots[s] for s in admitted[:4]] == [0, 1, 2, 3]
    assert slots[admitted[4]] == 1
