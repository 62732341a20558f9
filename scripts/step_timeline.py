"""Per-step timeline of a decode loop: perf_counter stamps around each call it makes.

`probe_engine.py --timeline FILE` wraps the model's decode/sample/piece and the scheduler's
outlet (send: the hand-off of a step's chunks; settle: the wait for the event loop to take
them) so that each step splits into where its time went. A step runs from one `llama_decode`
to the next; what no wrapped call accounts for is the loop's own Python (`other`).
Only stamps taken while `recording` is on are kept, so warm-ups stay out.
"""

from __future__ import annotations

import itertools
import statistics
import time
from collections.abc import Callable
from typing import Any

CALLS = ("decode", "sample", "piece", "send", "settle")


class StepTimeline:
    """Collects (call, began, ended) stamps; `steps()` folds them into one record per step."""

    def __init__(self) -> None:
        self.recording = False
        self._stamps: list[tuple[str, float, float]] = []

    def wrap(self, owner: Any, name: str) -> None:
        """Replace `owner.name` by a stamped call to it (instance attribute: owner only)."""
        inner: Callable[..., Any] = getattr(owner, name)

        def stamped(*args: Any) -> Any:
            began = time.perf_counter()
            result = inner(*args)
            if self.recording:
                self._stamps.append((name, began, time.perf_counter()))
            return result

        setattr(owner, name, stamped)

    def start(self) -> None:
        self._stamps = []
        self.recording = True

    def steps(self) -> list[dict[str, float]]:
        """Stop recording; per step: its start (ms since the first decode), its length and the
        ms each call took in it. The last decode opens no full step and is left out."""
        self.recording = False
        starts = [began for name, began, _ in self._stamps if name == "decode"]
        steps: list[dict[str, float]] = []
        for index, (began, ended) in enumerate(itertools.pairwise(starts)):
            record = {"at_ms": (began - starts[0]) * 1000, "step_ms": (ended - began) * 1000,
                      **dict.fromkeys(CALLS, 0.0)}
            for name, t0, t1 in self._stamps:
                if began <= t0 < ended:
                    record[name] += (t1 - t0) * 1000
            record["other"] = record["step_ms"] - sum(record[name] for name in CALLS)
            record["step"] = index
            steps.append({key: round(value, 3) for key, value in record.items()})
        return steps


def medians(steps: list[dict[str, float]]) -> dict[str, float | None]:
    """Median ms per step of the step and of each part of it (None without steps)."""
    keys = ("step_ms", *CALLS, "other")
    if not steps:
        return dict.fromkeys(keys)
    return {key: round(statistics.median(s[key] for s in steps), 2) for key in keys}
