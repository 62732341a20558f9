"""How the processes of one pool book its hardware (costing/pool.py), over generated
timelines: several processes draining periods of any length, in any interleaving, each
stopping cleanly, crashing, or running on. Two promises are checked against the rows alone:
every second of the pool is booked at most once (and, while some process keeps draining,
exactly once), and every period's carried share (busy cost less unattributed) is booked
exactly, whoever holds the lease."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from itertools import pairwise

from hypothesis import assume, given, settings
from hypothesis import strategies as st

from spillgate.costing.costclock import HardwarePeriod
from spillgate.costing.pool import LEASE_S, MAX_GAP_S, Booking, Lease, plan

T0 = datetime(2026, 12, 3, tzinfo=UTC)
RATE = Decimal("0.001")  # USD per second
QUANTUM = Decimal("1e-12")
NO_LEASE = Lease("", datetime(1970, 1, 1, tzinfo=UTC), None, None)


@dataclass(frozen=True)
class Drain:
    at: float  # seconds after T0 when its booking commits (the period's end, or later)
    node: str
    period: HardwarePeriod
    release: bool
    alive_since: datetime  # when this run of the process started


def _period(start: float, end: float, busy_part: int, external_part: int) -> HardwarePeriod:
    """A period priced at RATE, `busy_part` tenths of it busy, and of the busy cost
    `external_part` tenths unattributed."""
    span = end - start
    cost = (RATE * Decimal(repr(span))).quantize(QUANTUM)
    busy = (cost * busy_part / 10).quantize(QUANTUM)
    return HardwarePeriod(
        started_at=T0 + timedelta(seconds=start), ended_at=T0 + timedelta(seconds=end),
        busy_s=span * busy_part / 10, idle_s=span - span * busy_part / 10,
        busy_usd=busy, idle_usd=cost - busy, power_watts=None, profile="p",
        unattributed_usd=(busy * external_part / 10).quantize(QUANTUM),
    )


@st.composite
def timelines(draw: st.DrawFn, releases: bool = True, late: bool = True) -> list[Drain]:
    """2-3 processes; each starts within 20 s, drains 1-8 periods of 0-10 s, then stops
    with a release, crashes (no release), or runs on; one that stopped may start again
    under its node id after a pause. With `late`, some bookings commit seconds after their
    period ended (a slow database; longer than the lease at times), each process's still in
    order."""
    drains: list[Drain] = []
    for n in range(draw(st.integers(2, 3))):
        t = draw(st.floats(0, 20, allow_nan=False).map(lambda x: round(x, 3)))
        for _run_no in range(draw(st.integers(1, 2))):
            t = _one_run(draw, drains, f"node-{n}", t, releases, late)
            t += draw(st.sampled_from([0.0, 5.0, 50.0]))
    return sorted(drains, key=lambda d: (d.at, d.node))


def _one_run(draw: st.DrawFn, drains: list[Drain], node: str, t: float, releases: bool,
             late: bool) -> float:
    since, commit = T0 + timedelta(seconds=t), t
    lengths = draw(st.lists(st.floats(0, 10).map(lambda x: round(x, 3)),
                            min_size=1, max_size=8))
    end = draw(st.sampled_from(["release", "crash", "runs on"] if releases
                               else ["crash", "runs on"]))
    for i, length in enumerate(lengths):
        period = _period(t, t + length, draw(st.integers(0, 10)), draw(st.integers(0, 10)))
        delay = draw(st.sampled_from([0.0, 0.0, 3.0, 12.0, 40.0])) if late else 0.0
        commit = max(commit, t + length + delay)
        last = i == len(lengths) - 1
        drains.append(Drain(commit, node, period, last and end == "release", since))
        t += length
    return t


def _run(drains: list[Drain]) -> tuple[list[tuple[Drain, Booking]], Lease]:
    lease, done = NO_LEASE, []
    for d in drains:
        booking = plan(d.period, lease, d.node, nominal_rate=RATE, quantum=QUANTUM,
                       release=d.release, alive_since=d.alive_since)
        lease = booking.lease or lease
        done.append((d, booking))
    return done, lease


def _seconds(p: HardwarePeriod) -> float:
    return p.busy_s + p.idle_s


@settings(max_examples=300, deadline=None)
@given(timelines())
def test_every_second_of_the_pool_is_booked_at_most_once(drains: list[Drain]) -> None:
    done, _ = _run(drains)
    booked = sorted((r.started_at, r.ended_at) for _, b in done for r in b.rows
                    if _seconds(r) > 0)
    for (_, end), (start, _) in pairwise(booked):
        assert start >= end - timedelta(microseconds=1), "two rows book the same time"
    for _, b in done:
        for r in b.rows:  # a row's seconds are its own span, no more
            span = (r.ended_at - r.started_at).total_seconds()
            assert abs(_seconds(r) - span) < 1e-6 or _seconds(r) == 0


@settings(max_examples=300, deadline=None)
@given(timelines(releases=False, late=False))
def test_the_pool_time_is_booked_without_holes_from_its_first_period_on(
    drains: list[Drain],
) -> None:
    # Without releases every stop is a crash, whose time the next holder must book; the
    # longest hole (a pause of 50 s after a crash, plus a period of 10 s) is shorter than
    # downtime (MAX_GAP_S). A release followed by a later start is downtime: not booked.
    # (What a crashed holder leaves is booked only by a process that drains after its
    # lease expired: the booked time may end early, never have a hole.)
    assert MAX_GAP_S > 50 + 10
    done, _ = _run(drains)
    booked = sorted((r.started_at, r.ended_at) for _, b in done for r in b.rows
                    if _seconds(r) > 0)
    assume(booked)
    first = min((d.period.started_at for d in drains if _seconds(d.period) > 0),
                default=booked[0][0])  # only zero-length periods: a gap was booked
    assert booked[0][0] <= first
    total = sum((end - start).total_seconds() for start, end in booked)
    assert abs(total - (booked[-1][1] - booked[0][0]).total_seconds()) < 1e-5


@settings(max_examples=300, deadline=None)
@given(timelines())
def test_each_process_books_exactly_what_its_requests_carry(drains: list[Drain]) -> None:
    done, _ = _run(drains)
    for d, b in done:
        mine = [r for r in b.rows if r.started_at >= d.period.started_at]  # not a gap
        carried = sum((r.busy_usd - r.unattributed_usd for r in mine), Decimal(0))
        assert carried == d.period.busy_usd - d.period.unattributed_usd
        for r in b.rows:  # a row that books time books its own part of the costs
            if _seconds(r) > 0:
                assert 0 <= r.unattributed_usd <= r.busy_usd


def test_a_stopped_holder_is_replaced_after_the_lease_and_its_gap_is_booked_idle() -> None:
    first = plan(_period(0, 10, 5, 0), NO_LEASE, "a", nominal_rate=RATE, quantum=QUANTUM)
    assert first.holder and first.rows == (_period(0, 10, 5, 0),)
    lease = first.lease
    assert lease is not None
    # b drains while a's lease runs: its row carries its share only.
    early = plan(_period(10, 20, 10, 4), lease, "b", nominal_rate=RATE, quantum=QUANTUM)
    assert not early.holder
    (row,) = early.rows
    assert (_seconds(row), row.busy_usd, row.idle_usd) == (0, 0, 0)
    assert row.unattributed_usd == -Decimal("0.006")  # 60% of 10 s at RATE
    # a never drains again; b's first drain after the lease ends takes over.
    end = 10 + LEASE_S + 5
    late = plan(_period(end - 5, end, 0, 0), lease, "b", nominal_rate=RATE, quantum=QUANTUM)
    gap, whole = late.rows
    assert (gap.started_at, gap.ended_at) == (T0 + timedelta(seconds=10),
                                              T0 + timedelta(seconds=end - 5))
    assert gap.idle_usd == RATE * Decimal(int(end - 15)) and gap.busy_usd == 0
    assert whole == _period(end - 5, end, 0, 0)
    assert late.lease == Lease("b", T0 + timedelta(seconds=end + LEASE_S), T0,
                               T0 + timedelta(seconds=end))


def test_a_holder_that_releases_hands_over_at_the_next_drain_without_double_time() -> None:
    lease = plan(_period(0, 12, 0, 0), NO_LEASE, "a", nominal_rate=RATE, quantum=QUANTUM,
                 release=True).lease
    assert lease is not None and lease.expires_at == T0 + timedelta(seconds=12)
    # b's period began before a's last booking ended: only the time after it is booked whole.
    late = plan(_period(5, 15, 10, 0), lease, "b", nominal_rate=RATE, quantum=QUANTUM)
    assert late.holder
    row, share = late.rows
    assert row.started_at == T0 + timedelta(seconds=12)
    assert abs(_seconds(row) - 3.0) < 1e-9
    assert row.busy_usd == Decimal("0.003")
    assert _seconds(share) == 0
    assert share.unattributed_usd == -Decimal("0.007")  # b's requests carry the other 7 s


def test_a_process_that_began_before_the_first_booking_books_its_earlier_time() -> None:
    lease = plan(_period(4, 10, 0, 0), NO_LEASE, "a", nominal_rate=RATE, quantum=QUANTUM).lease
    assert lease is not None
    # b began at 0, a at 4, but a drained first: b books 0..4 whole, and carries the rest.
    early = plan(_period(0, 10, 5, 0), lease, "b", nominal_rate=RATE, quantum=QUANTUM)
    assert not early.holder
    row, share = early.rows
    assert (row.started_at, row.ended_at) == (T0, T0 + timedelta(seconds=4))
    assert (row.busy_usd, row.idle_usd) == (Decimal("0.002"), Decimal("0.002"))
    assert (_seconds(share), share.unattributed_usd) == (0, -Decimal("0.003"))
    assert early.lease == Lease("a", lease.expires_at, T0, lease.booked_until)


def test_a_clean_restart_books_no_downtime_but_a_crash_books_its_gap_idle() -> None:
    for release, gap_usd in ((True, None), (False, RATE * 60)):
        lease = plan(_period(0, 10, 0, 0), NO_LEASE, "a", nominal_rate=RATE, quantum=QUANTUM,
                     release=release).lease
        assert lease is not None
        back = plan(_period(70, 80, 0, 0), lease, "a", nominal_rate=RATE, quantum=QUANTUM)
        idle = [r for r in back.rows if r.started_at < T0 + timedelta(seconds=70)]
        assert [r.idle_usd for r in idle] == ([gap_usd] if gap_usd else [])


def test_a_gap_longer_than_the_limit_is_downtime() -> None:
    lease = plan(_period(0, 10, 0, 0), NO_LEASE, "a", nominal_rate=RATE, quantum=QUANTUM).lease
    assert lease is not None
    later = 10 + MAX_GAP_S + 50
    back = plan(_period(later, later + 10, 0, 0), lease, "b", nominal_rate=RATE,
                quantum=QUANTUM)
    assert back.rows == (_period(later, later + 10, 0, 0),)
    assert back.lease is not None and back.lease.booked_from == T0  # the span keeps its start


def test_a_period_committed_after_a_later_span_began_leaves_no_hole() -> None:
    lease = plan(_period(10, 20, 0, 0), NO_LEASE, "a", nominal_rate=RATE, quantum=QUANTUM).lease
    assert lease is not None
    # b's period 0..5 commits late, after a booked 10..20: booking it whole would claim
    # 0..20 with 5..10 in no row; it stays b's carried share, and the span keeps its start.
    late = plan(_period(0, 5, 10, 0), lease, "b", nominal_rate=RATE, quantum=QUANTUM)
    (row,) = late.rows
    assert (_seconds(row), row.unattributed_usd) == (0, -Decimal("0.005"))
    assert late.lease is None
    # b's next period, 5..12, reaches the span: 5..10 is booked whole.
    reach = plan(_period(5, 12, 0, 0), lease, "b", nominal_rate=RATE, quantum=QUANTUM)
    row = reach.rows[0]
    assert (row.started_at, row.ended_at) == (T0 + timedelta(seconds=5),
                                              T0 + timedelta(seconds=10))
    assert reach.lease is not None and reach.lease.booked_from == T0 + timedelta(seconds=5)


def test_a_late_release_leaves_no_hole_in_time_another_process_served() -> None:
    # a drains 0..5; b (running since 2) drains 2..12 while a holds the lease; a's release
    # of 5..10 commits after that; b then takes over with 12..20. b served 10..12.
    since_b = T0 + timedelta(seconds=2)
    lease = plan(_period(0, 5, 0, 0), NO_LEASE, "a", nominal_rate=RATE, quantum=QUANTUM).lease
    assert lease is not None
    early = plan(_period(2, 12, 0, 0), lease, "b", nominal_rate=RATE, quantum=QUANTUM,
                 alive_since=since_b)
    assert not early.holder and early.rows == ()  # nothing to carry, no row
    released = plan(_period(5, 10, 0, 0), lease, "a", nominal_rate=RATE, quantum=QUANTUM,
                    release=True).lease
    assert released is not None
    takeover = plan(_period(12, 20, 0, 0), released, "b", nominal_rate=RATE,
                    quantum=QUANTUM, alive_since=since_b)
    gap, whole = takeover.rows
    assert (gap.started_at, gap.ended_at, gap.idle_usd) == (
        T0 + timedelta(seconds=10), T0 + timedelta(seconds=12), RATE * 2)
    assert whole == _period(12, 20, 0, 0)
