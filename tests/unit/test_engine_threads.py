"""ThreadChooser: keeps llama.cpp's thread count or switches it, from step times alone."""

from __future__ import annotations

import itertools

from spillgate.engines.llamacpp.threads import ThreadChooser

MS = 0.001


def _feed(chooser: ThreadChooser, times_ms: dict[int, float], steps: int,
          rows: int = 1) -> list[int]:
    """Run `steps` steps whose time depends on the thread count in force; the counts
    `observe` asked for, in order."""
    asked: list[int] = []
    threads = chooser.current
    for _ in range(steps):
        wanted = chooser.observe(rows, times_ms[threads] * MS)
        if wanted is not None:
            asked.append(wanted)
            threads = wanted
    return asked


def test_one_thread_wins_when_the_cores_are_shared() -> None:
    chooser = ThreadChooser(most=2)
    asked = _feed(chooser, {2: 20.0, 1: 9.0}, chooser.first_wait + 10)
    assert asked == [1]  # tried, then kept: no switch back
    assert chooser.current == 1


def test_many_threads_stay_when_they_are_faster() -> None:
    chooser = ThreadChooser(most=2, longest_wait_s=1e9)
    trials_at: list[int] = []
    threads = 2
    for step in range(5_000):
        wanted = chooser.observe(1, {2: 6.0, 1: 8.0}[threads] * MS)
        if wanted is not None:
            threads = wanted
            if wanted == 1:
                trials_at.append(step)
        assert chooser.current == 2
    gaps = [b - a for a, b in itertools.pairwise(trials_at)]
    # every trial is lost, and each doubles the wait before the next (gaps also hold the trials)
    assert len(trials_at) >= 5
    assert all(later > 1.5 * earlier for earlier, later in itertools.pairwise(gaps))


def test_a_long_wait_ends_after_longest_wait_s_of_decoding() -> None:
    chooser = ThreadChooser(most=2, first_wait=10_000, longest_wait_s=0.5)
    assert _feed(chooser, {2: 10.0, 1: 10.0}, 49) == []
    assert chooser.observe(1, 10.0 * MS) == 1  # 50 steps of 10 ms: half a second


def test_it_switches_back_when_the_load_goes() -> None:
    chooser = ThreadChooser(most=2)
    _feed(chooser, {2: 20.0, 1: 9.0}, 200)
    assert chooser.current == 1
    _feed(chooser, {2: 6.0, 1: 9.0}, 200)
    assert chooser.current == 2


def test_a_trial_far_slower_ends_at_its_first_step() -> None:
    chooser = ThreadChooser(most=2)
    _feed(chooser, {2: 6.0, 1: 6.0}, chooser.first_wait - 1)
    assert chooser.observe(1, 6.0 * MS) == 1  # the trial starts
    assert (chooser.current, chooser.in_force) == (2, 1)
    assert chooser.observe(1, 100.0 * MS) == 2  # 16x the baseline: back at once
    assert (chooser.current, chooser.in_force) == (2, 2)


def test_steps_of_another_shape_are_not_compared() -> None:
    chooser = ThreadChooser(most=2)
    assert _feed(chooser, {2: 6.0, 1: 5.0}, chooser.first_wait) == [1]  # a 1-row trial
    # a 4-row step (a new request's prompt) is slower whatever the threads: not a reason
    # to give the trial up, nor part of it
    assert chooser.observe(4, 100.0 * MS) is None
    for _ in range(chooser.trial_steps + 1):  # the warm-up step, then the trial's steps
        assert chooser.observe(1, 5.0 * MS) is None  # 1 thread still in force: won
    assert chooser.current == 1


def test_one_thread_configured_never_tries() -> None:
    chooser = ThreadChooser(most=1)
    assert _feed(chooser, {1: 9.0}, 500) == []
