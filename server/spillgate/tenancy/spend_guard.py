"""The spend guard: a circuit breaker on paid-API spend, node-wide and per key.

Spend is observed where it becomes known, when a paid call settles (the accountant's
`finish`), and summed over a sliding window. A guard trips when the window's spend exceeds
`limit_usd`, or exceeds `baseline_multiple` times the trailing baseline (the mean spend per
window over the `baseline_windows` windows before the current one, counted from the guard's
start, so a quiet start is a baseline of zero and `min_usd` keeps a first cent from
tripping it). Once open it stays open for `cooldown_s`, then closes at the first look that
finds the window back under its limits. While open, the router keeps `auto` traffic local
(it receives the state as a fact: routing.router.BudgetView).

State lives in this process. With several replicas (a PostgreSQL ledger) each replica guards
the spend it made itself: a USD limit then holds per replica (divide the node-wide figure by
the replica count), while a baseline multiple, a ratio, means the same on every replica.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Literal

from spillgate.settings import SpendGuardSettings

log = logging.getLogger(__name__)
ZERO = Decimal(0)
Why = Literal["limit", "baseline"]


@dataclass(frozen=True, slots=True)
class Limits:
    limit_usd: Decimal | None = None
    baseline_multiple: Decimal | None = None

    @property
    def active(self) -> bool:
        return self.limit_usd is not None or self.baseline_multiple is not None


@dataclass(frozen=True, slots=True)
class GuardConfig:
    window_s: float
    baseline_windows: int = 10
    min_usd: Decimal = ZERO
    cooldown_s: float = 300.0
    fallback_local: bool = False
    node: Limits = Limits()
    per_key: Limits = Limits()

    @property
    def enabled(self) -> bool:
        return self.node.active or self.per_key.active

    @classmethod
    def from_settings(cls, s: SpendGuardSettings) -> GuardConfig:
        return cls(s.window_s, s.baseline_windows, s.min_usd, s.cooldown_s,
                   s.fallback == "local", Limits(s.node.limit_usd, s.node.baseline_multiple),
                   Limits(s.per_key.limit_usd, s.per_key.baseline_multiple))


@dataclass(frozen=True, slots=True)
class GuardEvent:
    """A guard opened or closed (one log line, a gauge, a webhook event)."""

    scope: str  # "node" or "key:<key id>"
    opened: bool
    why: Why | None
    window_usd: Decimal
    baseline_usd: Decimal | None
    at: float


class SpendWindow:
    """Spend of the current window and of the baseline span before it; each amount enters
    and leaves each sum once, so a look costs O(1) amortized."""

    def __init__(self, window_s: float, baseline_windows: int, started_at: float) -> None:
        self.window_s = window_s
        self.horizon_s = window_s * baseline_windows
        self.started_at = started_at
        self._recent: deque[tuple[float, Decimal]] = deque()
        self._older: deque[tuple[float, Decimal]] = deque()
        self._recent_usd = ZERO
        self._older_usd = ZERO

    def add(self, at: float, usd: Decimal) -> None:
        self._recent.append((at, usd))
        self._recent_usd += usd

    def _advance(self, now: float) -> None:
        recent_from, older_from = now - self.window_s, now - self.window_s - self.horizon_s
        while self._recent and self._recent[0][0] <= recent_from:
            item = self._recent.popleft()
            self._recent_usd -= item[1]
            self._older.append(item)
            self._older_usd += item[1]
        while self._older and self._older[0][0] <= older_from:
            self._older_usd -= self._older.popleft()[1]

    def current(self, now: float) -> Decimal:
        """Spend within (now - window_s, now]."""
        self._advance(now)
        return self._recent_usd

    def baseline(self, now: float) -> Decimal | None:
        """Mean spend per window over the span before the current window (at most
        `baseline_windows` long); None until one whole window of history exists."""
        self._advance(now)
        span = min(self.horizon_s, now - self.window_s - self.started_at)
        if span < self.window_s:
            return None
        return self._older_usd * Decimal(repr(self.window_s)) / Decimal(repr(span))


class Breaker:
    """One guard: a window, its limits, and whether it is open."""

    def __init__(self, scope: str, limits: Limits, config: GuardConfig,
                 started_at: float) -> None:
        self.scope = scope
        self.limits = limits
        self.config = config
        self.window = SpendWindow(config.window_s, config.baseline_windows, started_at)
        self.opened_at: float | None = None
        self.why: Why | None = None

    def tripping(self, now: float) -> Why | None:
        """Which limit the current window exceeds, if any."""
        spent = self.window.current(now)
        if self.limits.limit_usd is not None and spent > self.limits.limit_usd:
            return "limit"
        multiple = self.limits.baseline_multiple
        baseline = self.window.baseline(now)
        if (multiple is not None and baseline is not None and spent > self.config.min_usd
                and spent > multiple * baseline):
            return "baseline"
        return None

    def look(self, now: float) -> GuardEvent | None:
        """Open or close when due; the transition, if one happened."""
        if self.opened_at is None:
            why = self.tripping(now)
            if why is None:
                return None
            self.opened_at, self.why = now, why
            return self._event(now, opened=True)
        if now - self.opened_at < self.config.cooldown_s or self.tripping(now) is not None:
            return None
        self.opened_at, self.why = None, None
        return self._event(now, opened=False)

    def retry_after_s(self, now: float) -> float:
        if self.opened_at is None:
            return 0.0
        return max(1.0, self.opened_at + self.config.cooldown_s - now)

    def _event(self, now: float, opened: bool) -> GuardEvent:
        return GuardEvent(self.scope, opened, self.why, self.window.current(now),
                          self.window.baseline(now), now)


@dataclass(frozen=True, slots=True)
class GuardView:
    """What the router needs to know for one request's key."""

    open: bool = False
    retry_after_s: float = 0.0


class SpendGuard:
    """The node's guard and one per key (created at the key's first paid spend)."""

    def __init__(self, config: GuardConfig, clock: Callable[[], float],
                 on_change: Callable[[GuardEvent], None] = lambda event: None) -> None:
        self.config = config
        self._clock = clock
        self._on_change = on_change
        self._started_at = clock()
        self.node = Breaker("node", config.node, config, self._started_at)
        self.keys: dict[str, Breaker] = {}

    @property
    def enabled(self) -> bool:
        return self.config.enabled

    def observe(self, key_id: str | None, usd: Decimal) -> None:
        """A paid call settled at `usd`."""
        if not self.enabled or usd <= 0:
            return
        now = self._clock()
        for breaker in self._breakers(key_id, create=True):
            breaker.window.add(now, usd)
            self._look(breaker, now)

    def view(self, key_id: str | None) -> GuardView:
        """Whether the node's guard or this key's is open (closing those due to close)."""
        if not self.enabled:
            return GuardView()
        now = self._clock()
        wait = 0.0
        for breaker in self._breakers(key_id, create=False):
            self._look(breaker, now)
            if breaker.opened_at is not None:
                wait = max(wait, breaker.retry_after_s(now))
        return GuardView(open=wait > 0, retry_after_s=wait)

    def open_keys(self) -> int:
        return sum(b.opened_at is not None for b in self.keys.values())

    def state(self) -> dict[str, object]:
        """JSON-ready, for /admin/live (refreshes every breaker first)."""
        now = self._clock()
        self.view(None)
        for breaker in list(self.keys.values()):
            self._look(breaker, now)
        return {
            "enabled": self.enabled,
            "window_s": self.config.window_s,
            "node": _breaker_state(self.node, now),
            "keys": {k: _breaker_state(b, now) for k, b in sorted(self.keys.items())
                     if b.opened_at is not None},
        }

    def _breakers(self, key_id: str | None, create: bool) -> list[Breaker]:
        found = [self.node] if self.config.node.active else []
        if key_id and self.config.per_key.active:
            breaker = self.keys.get(key_id)
            if breaker is None and create:
                breaker = self.keys[key_id] = Breaker(f"key:{key_id}", self.config.per_key,
                                                      self.config, self._started_at)
            if breaker is not None:
                found.append(breaker)
        return found

    def _look(self, breaker: Breaker, now: float) -> None:
        event = breaker.look(now)
        if event is None:
            return
        if event.opened:
            log.warning("spend guard %s opened (%s): $%s in the last %gs, baseline $%s per "
                        "window; auto routes stay local for at least %gs", event.scope,
                        event.why, event.window_usd, self.config.window_s,
                        "n/a" if event.baseline_usd is None else f"{event.baseline_usd:.6f}",
                        self.config.cooldown_s)
        else:
            log.warning("spend guard %s closed: $%s in the last %gs", event.scope,
                        event.window_usd, self.config.window_s)
        self._on_change(event)


def _breaker_state(breaker: Breaker, now: float) -> dict[str, object]:
    baseline = breaker.window.baseline(now)
    return {
        "open": breaker.opened_at is not None,
        "why": breaker.why,
        "window_usd": str(breaker.window.current(now)),
        "baseline_usd": None if baseline is None else str(baseline),
        "retry_after_s": breaker.retry_after_s(now),
    }
