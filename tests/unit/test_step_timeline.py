"""scripts/step_timeline.py: stamps of wrapped calls fold into one record per decode step."""

from __future__ import annotations

import sys
from typing import Any

import pytest

from tests.support import REPO

sys.path.insert(0, str(REPO / "scripts"))

import step_timeline
from step_timeline import StepTimeline, medians


class _Clock:
    """perf_counter stand-in: each call a wrapped function makes moves it by its cost."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class _Loop:
    def __init__(self, clock: _Clock) -> None:
        self.clock = clock

    def _spend(self, seconds: float) -> None:
        self.clock.now += seconds

    def decode(self, _rows: Any) -> int:
        self._spend(0.006)
        return 0

    def sample(self, _row: int) -> int:
        self._spend(0.0005)
        return 7

    def send(self, _items: Any) -> None:
        self._spend(0.0002)


def _run_steps(timeline: StepTimeline, loop: _Loop, steps: int) -> None:
    for _ in range(steps):
        loop.decode([])
        assert loop.sample(0) == 7  # the wrapper hands the result through
        loop.send([])
        loop.clock.now += 0.0003  # the loop's own Python: no wrapped call


def test_steps_split_into_calls_and_other(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = _Clock()
    monkeypatch.setattr(step_timeline.time, "perf_counter", clock)
    loop = _Loop(clock)
    timeline = StepTimeline()
    for name in ("decode", "sample", "send"):
        timeline.wrap(loop, name)
    _run_steps(timeline, loop, 2)  # not recording: left out
    timeline.start()
    _run_steps(timeline, loop, 3)
    steps = timeline.steps()
    assert len(steps) == 2  # three decodes open two full steps
    assert [s["step"] for s in steps] == [0, 1]
    assert [s["at_ms"] for s in steps] == [0.0, 7.0]
    for step in steps:
        assert step["step_ms"] == 7.0
        assert (step["decode"], step["sample"], step["send"]) == (6.0, 0.5, 0.2)
        assert step["other"] == 0.3
        assert step["settle"] == 0.0
    assert medians(steps)["decode"] == 6.0
    _run_steps(timeline, loop, 2)  # steps() stopped the recording
    timeline.start()
    assert timeline.steps() == []


def test_medians_without_steps() -> None:
    assert set(medians([]).values()) == {None}
