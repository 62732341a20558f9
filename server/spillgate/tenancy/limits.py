"""Per-key requests and tokens per minute (RPM/TPM) over a sliding 60 s window.

`RateLimiter` counts in this process (one replica, or a SQLite ledger). `SharedRateLimiter`
(tenancy/shared_limits.py) keeps the same window as rows in a PostgreSQL ledger, so replicas
on one database admit a key's limit in total; both decide with `over_limit`.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

WINDOW_S = 60.0


@dataclass(frozen=True, slots=True)
class RequestsOver:
    """The window already holds `rpm` requests: wait for the oldest to leave."""


@dataclass(frozen=True, slots=True)
class TokensOver:
    """The request would pass `tpm`: wait until `excess` tokens have left the window."""

    excess: int


def over_limit(requests: int, used: int, rpm: int | None, tpm: int | None,
               tokens_estimate: int) -> RequestsOver | TokensOver | None:
    """Which limit one more request would break, given the window's request count and token
    sum; None when it fits. The one rule both limiters (in process, shared) apply."""
    if rpm is not None and requests >= rpm:
        return RequestsOver()
    # A request larger than a whole minute's allowance is let through on an idle window,
    # or it could never be served.
    if tpm is not None and used and used + tokens_estimate > tpm:
        return TokensOver(used + tokens_estimate - tpm)
    return None


@dataclass(slots=True)
class Window:
    """One key's last minute: request times, and token counts with their times."""

    requests: deque[float] = field(default_factory=deque)
    tokens: deque[tuple[float, int]] = field(default_factory=deque)
    used: int = 0

    def prune(self, now: float) -> None:
        horizon = now - WINDOW_S
        while self.requests and self.requests[0] <= horizon:
            self.requests.popleft()
        while self.tokens and self.tokens[0][0] <= horizon:
            self.used -= self.tokens.popleft()[1]

    def refusal(self, rpm: int | None, tpm: int | None, tokens_estimate: int,
                now: float) -> float | None:
        """None when one more request of `tokens_estimate` fits the (pruned) window; else
        the seconds to wait before retrying. Counts nothing."""
        over = over_limit(len(self.requests), self.used, rpm, tpm, tokens_estimate)
        if over is None:
            return None
        if isinstance(over, RequestsOver):
            return _wait(self.requests[0], now) if self.requests else WINDOW_S
        return self.wait_for_tokens(over.excess, now)

    def wait_for_tokens(self, excess: int, now: float) -> float:
        """Seconds until at least `excess` tokens have left the window."""
        freed = 0
        for at, count in self.tokens:
            freed += count
            if freed >= excess:
                return _wait(at, now)
        return WINDOW_S


class RateLimiter:
    """Per-key requests and tokens per minute, sliding 60 s window, in this process only.

    Each replica counts only what it served, so N replicas admit up to N times the limit;
    with a PostgreSQL ledger the node uses `SharedRateLimiter` instead.
    """

    def __init__(self) -> None:
        self._windows: dict[str, Window] = {}
        self._swept_at = 0.0

    def check(self, key_id: str, rpm: int | None, tpm: int | None, tokens_estimate: int,
              now: float) -> float | None:
        """None, and the request is counted; or the seconds to wait before retrying."""
        if rpm is None and tpm is None:
            return None
        window = self._window(key_id, now)
        wait = window.refusal(rpm, tpm, tokens_estimate, now)
        if wait is not None:
            return wait
        window.requests.append(now)
        self.add_tokens(key_id, tokens_estimate, now)
        return None

    def add_tokens(self, key_id: str, tokens: int, now: float) -> None:
        """Count tokens learnt after admission (e.g. the completion) against the TPM window."""
        if tokens > 0:
            window = self._window(key_id, now)
            window.tokens.append((now, tokens))
            window.used += tokens

    def _window(self, key_id: str, now: float) -> Window:
        self._forget_idle(now)
        window = self._windows.get(key_id)
        if window is None:
            window = self._windows[key_id] = Window()
        window.prune(now)
        return window

    def _forget_idle(self, now: float) -> None:
        """Drop windows of keys idle for a minute (once a minute), so memory follows the
        active keys."""
        if now - self._swept_at < WINDOW_S:
            return
        self._swept_at = now
        horizon = now - WINDOW_S
        idle = [k for k, w in self._windows.items()
                if not (w.requests and w.requests[-1] > horizon)
                and not (w.tokens and w.tokens[-1][0] > horizon)]
        for key_id in idle:
            del self._windows[key_id]


def _wait(oldest: float, now: float) -> float:
    return max(0.001, oldest + WINDOW_S - now)
