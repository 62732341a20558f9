"""How many threads llama.cpp decodes with, chosen from decode times measured in place.

On cores shared with other busy threads (the event loop, the gateway, clients, other
processes) llama.cpp's threads lose most of their time at the barriers inside every decode:
one of them is descheduled and the others spin (libgomp spins ~8 ms before it sleeps) until it
runs again. One thread has no barriers. Which is faster flips with the machine's load within
seconds, so neither default fits (bench_engine, 2-core machine, same run: 2 threads 95-106
tokens/s at 1 stream when it was quiet, 8-22 under load; 1 thread 88-93 either way).

`ThreadChooser` keeps the setting it has and, every so often, tries the other for a few
steps of the same shape (same number of batch rows), switching when the trial's median step
is clearly faster. A lost trial doubles the wait before the next one (in steps, but at most
`longest_wait_s` of decoding), so trying costs little once the better setting has been found;
a trial step far slower than the baseline ends the trial at once. Pure: the scheduler feeds
it step times and applies what it returns.
"""

from __future__ import annotations

import statistics
from collections import deque
from dataclasses import dataclass, field

BASELINE_STEPS = 16  # recent steps a trial is compared with


@dataclass(slots=True)
class ThreadChooser:
    """Alternates between `most` threads and one; `observe` returns a count to switch to."""

    most: int
    # steps before the first trial and after a switch: short, since a step at the wrong
    # setting can cost 10x (100 ms vs 10 ms under load); each lost trial doubles it
    first_wait: int = 8
    longest_wait: int = 4096
    # ...but never more than this much decode time: the load can change at any moment, and
    # a step at the wrong setting under load costs 10x (a trial costs a few steps)
    longest_wait_s: float = 2.0
    trial_steps: int = 4
    win_margin: float = 0.9  # a trial must be 10 % faster to switch
    give_up_ratio: float = 3.0  # a trial step this much slower than the baseline ends it
    current: int = field(init=False)
    _wait: int = field(init=False)
    _countdown: int = field(init=False)
    _since_trial_s: float = field(init=False, default=0.0)
    # recent step times at `current`, by batch rows (a 4-row step is no 1-row step)
    _baselines: dict[int, deque[float]] = field(init=False, default_factory=dict)
    _trial: _Trial | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        self.current = self.most
        self._wait = self.first_wait
        self._countdown = self.first_wait

    @property
    def in_force(self) -> int:
        """The count decodes must use now: the trial's while one runs."""
        return self._other if self._trial is not None else self.current

    @property
    def _other(self) -> int:
        return 1 if self.current == self.most else self.most

    def observe(self, rows: int, seconds: float) -> int | None:
        """One decode step of `rows` batch rows took `seconds`; returns the thread count
        the next step must use when it changes, else None."""
        if self.most <= 1:
            return None
        if self._trial is not None:
            return self._observe_trial(self._trial, rows, seconds)
        baseline = self._baselines.setdefault(rows, deque(maxlen=BASELINE_STEPS))
        baseline.append(seconds)
        self._countdown -= 1
        self._since_trial_s += seconds
        due = self._countdown <= 0 or self._since_trial_s >= self.longest_wait_s
        if due and len(baseline) >= BASELINE_STEPS // 2:
            self._trial = _Trial(rows, statistics.median(baseline))
            return self._other
        return None

    def _observe_trial(self, trial: _Trial, rows: int, seconds: float) -> int | None:
        if rows != trial.rows:  # another shape: not comparable; a trial must not last
            trial.skipped += 1
            return self._end_trial(won=False) if trial.skipped > 4 * self.trial_steps else None
        if seconds > self.give_up_ratio * trial.base:
            return self._end_trial(won=False)
        if not trial.warm:  # the first step after a switch also wakes the threads
            trial.warm = True
            return None
        trial.times.append(seconds)
        if len(trial.times) < self.trial_steps:
            return None
        return self._end_trial(won=statistics.median(trial.times) < self.win_margin * trial.base)

    def _end_trial(self, *, won: bool) -> int | None:
        """Keep the trial's setting (already in force: nothing to change) or go back."""
        self._trial = None
        if won:
            self.current = self._other
            self._wait = self.first_wait
            self._baselines.clear()
        else:
            self._wait = min(self._wait * 2, self.longest_wait)
        self._countdown = self._wait
        self._since_trial_s = 0.0
        return None if won else self.current


@dataclass(slots=True)
class _Trial:
    rows: int
    base: float  # median step time at the current setting, same rows
    warm: bool = False
    skipped: int = 0
    times: list[float] = field(default_factory=list)
