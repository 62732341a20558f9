"""The service's one door to money: budgets, reservations, cost, ledger rows, cost metrics.

Request path calls (none awaits the database except a paid reservation, which must be atomic,
and, with a PostgreSQL ledger, the RPM/TPM check of a key that has limits):
  check_rate(key, tokens)   before routing: count the request in the key's window, or 429
  open_row(record)          after routing: the ledger row exists from here on (write-behind)
  dispatched(record, t)     right before a local engine gets the request: it accrues
                            hardware cost from now until it settles (queued or decoding)
  reserve(record, t, chain) before a paid call: a true upper bound of the cost at the
                            dearest paid model of the chain, one atomic statement; a later
                            dearer target first reserves the difference (budgets.py)
  progress(record, n)       a streamed local request processed n more tokens
  served(record)            first byte: a request that left the engine for an API stops
  finish(record)            usage → cost (API price or amortized share) → row settled, metrics;
                            paid spend feeds the spend guard (spend_watch.py)
"""

from __future__ import annotations

import asyncio
import functools
import logging
import socket
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from decimal import Decimal

from spillgate.catalog import Catalog
from spillgate.costing.costclock import CostClock
from spillgate.costing.hardware import check_units, get_profile, load_profiles
from spillgate.costing.pool import plan
from spillgate.costing.pricing import PriceBook, cost
from spillgate.errors import RateLimited
from spillgate.ledger.record import RequestRecord
from spillgate.ledger.store import Ledger, ReserveResult
from spillgate.routing.router import BudgetView, Target
from spillgate.routing.routes import RouteTable
from spillgate.settings import Settings
from spillgate.spend_watch import SpendWatch
from spillgate.tasks import cancel_and_wait
from spillgate.telemetry.metrics import GatewayMetrics
from spillgate.telemetry.snapshot import CapacitySnapshot
from spillgate.tenancy.budgets import worst_case_cost
from spillgate.tenancy.keys import KeyInfo, KeyStore
from spillgate.tenancy.limits import RateLimiter
from spillgate.tenancy.shared_limits import SharedRateLimiter
from spillgate.tenancy.spend_guard import GuardConfig
from spillgate.types import Client

log = logging.getLogger(__name__)
PERIOD_S = 10.0  # hardware cost rows persisted this often


class Accountant:
    def __init__(
        self,
        dsn: str,
        prices: PriceBook,
        clock: CostClock,
        reference: Mapping[str, str],
        metrics: GatewayMetrics,
        spend: SpendWatch | None = None,
        node_id: str | None = None,
        pool: str | None = None,
    ) -> None:
        self._dsn = dsn
        self._node_id = node_id  # None: the host name
        self._pool = pool or socket.gethostname()  # the hardware it books (costing/pool.py)
        self._holding: bool | None = None  # whether it books the pool whole (None: not yet)
        self.prices = prices
        self.clock = clock
        self._reference = reference  # local model → paid model id for counterfactual cost
        self._metrics = metrics
        # The spend guard and budget alerts (off unless configured).
        self.spend = spend or SpendWatch(GuardConfig(window_s=60.0), [], metrics)
        self._ledger: Ledger | None = None
        self._keystore: KeyStore | None = None
        self._keys: dict[str, KeyInfo] = {}
        self._exhausted_until: dict[str, float] = {}
        self._remaining: dict[str, tuple[Decimal | None, Decimal | None]] = {}
        self._limiter = RateLimiter()  # one replica (SQLite); PostgreSQL: shared, below
        self._shared: SharedRateLimiter | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def ledger(self) -> Ledger:
        if self._ledger is None:
            raise RuntimeError("accountant used before open()")
        return self._ledger

    @property
    def keys(self) -> KeyStore:
        """The key store whose cache authenticates this node's requests (admin revocations
        go through it, so they are immediate here)."""
        if self._keystore is None:
            raise RuntimeError("accountant used before open()")
        return self._keystore

    async def open(self) -> None:
        self._ledger = await Ledger.open(self._dsn, node_id=self._node_id)
        self._keystore = KeyStore(self._ledger)
        if self._ledger.engine.dialect.name == "postgresql":  # replicas share the windows
            self._shared = SharedRateLimiter(self._ledger)
        recovered = await self._ledger.recover()
        if recovered:
            log.warning("recovered %d ledger rows left open by a previous process", recovered)
        self._task = asyncio.create_task(self._accrue(), name="cost-clock")
        await self.spend.start()

    async def aclose(self) -> None:
        await cancel_and_wait(self._task)
        await self.spend.aclose()
        if self._ledger:
            await self._persist_period(release=True)
            await self._ledger.aclose()

    def watch(self, snapshot: Callable[[], CapacitySnapshot], settings: Settings,
              now: Callable[[], float] = time.monotonic) -> None:
        """Feed the clock from telemetry: measured GPU board power while fresh (nominal
        watts otherwise), and sequences other clients run on the engines (busy time too).

        Measured power prices a GPU node only (one serving a vLLM engine): NVML cannot see a
        CPU node's power. It is the mean per visible GPU times `cost.units`, since NVML also
        sees GPUs of the machine that this node does not use."""
        stale_s = settings.telemetry.stale_after_s
        gpu_units = settings.cost.units if any(
            b.engine == "vllm" for b in settings.local) else 0

        def power() -> float | None:
            per_gpu = snapshot().gpu_power(now(), stale_s) if gpu_units else None
            return None if per_gpu is None else per_gpu * gpu_units

        self.clock.power = power
        self.clock.external = lambda: snapshot().external_running(now(), stale_s)

    async def _accrue(self) -> None:
        last_persist = time.monotonic()
        while True:
            await asyncio.sleep(1.0)
            try:
                self.clock.tick()
                if time.monotonic() - last_persist >= PERIOD_S:
                    last_persist = time.monotonic()
                    await self._persist_period()
            except Exception:  # cost accrual must never stop the node
                log.exception("cost clock tick failed")

    async def _persist_period(self, *, release: bool = False) -> None:
        """Book the clock's period in this node's pool: whole as the lease holder, else
        only its requests' share (costing/pool.py); the metrics count what was booked."""
        period = self.clock.drain_period()
        planner = functools.partial(
            plan, period, me=self.ledger.node_id, nominal_rate=self.clock.nominal_rate(),
            quantum=self.clock.quantum, release=release, alive_since=self.clock.started_at)
        booking = await self.ledger.book_hardware(self._pool, planner)
        if booking.holder != self._holding and not release:
            self._holding = booking.holder
            log.info("%s books hardware pool %r %s", self.ledger.node_id, self._pool,
                     "whole" if booking.holder else "as its requests' share only")
        for row in booking.rows:
            self._metrics.local_cost.labels("busy").inc(float(row.busy_usd))
            self._metrics.local_cost.labels("idle").inc(float(row.idle_usd))

    # --- keys and budgets ----------------------------------------------------------------
    async def lookup_key(self, secret: str) -> Client | None:
        if self._keystore is None:
            return None
        info = await self._keystore.authenticate(secret)
        if info is None:
            return None
        self._keys[info.key_id] = info
        return Client(key_id=info.key_id, local_only=info.local_only,
                      cache_namespace=info.cache_namespace)

    async def check_rate(self, key_id: str | None, tokens_estimate: int) -> None:
        """Per-key RPM/TPM: count the request, or refuse it with 429 and Retry-After.
        With a PostgreSQL ledger the window is shared by all replicas (one transaction)."""
        info = self._keys.get(key_id or "")
        if info is None or (info.rpm is None and info.tpm is None):
            return
        if self._shared is not None:
            wait = await self._shared.check(info.key_id, info.rpm, info.tpm, tokens_estimate)
        else:
            wait = self._limiter.check(info.key_id, info.rpm, info.tpm, tokens_estimate,
                                       time.monotonic())
        if wait is not None:
            raise RateLimited(
                f"rate limit of key {info.key_id} reached (rpm={info.rpm}, tpm={info.tpm})",
                code="rate_limit_exceeded", retry_after_s=wait,
            )

    def paid_allowed(self, key_id: str | None) -> bool:
        until = self._exhausted_until.get(key_id or "")
        return until is None or until < time.monotonic()

    def budget_view(self, key_id: str | None) -> BudgetView:
        """The router's fact about money: paid budget left, and the spend guard's state."""
        return self.spend.view(key_id, self.paid_allowed(key_id))

    async def reserve(self, record: RequestRecord, target: Target,
                      chain: Sequence[Target] = ()) -> None:
        """Hold a true upper bound of the paid call's cost before it is made: the first paid
        target reserves at the dearest paid model of the chain; a later target that would
        cost more (it cannot, unless the chain changed) reserves the difference first, and
        is skipped (RateLimited → next target) when the budget cannot hold it."""
        if self.clock.has(record.request_id):  # leaving the local engine for a paid API
            self.clock.abandon(record.request_id)
        info = self._keys.get(record.key_id or "")
        if info is None or (info.daily_budget_usd is None and info.monthly_budget_usd is None):
            return
        needed = self._worst(record, target)
        if record.reserved_usd:
            if needed > record.reserved_usd:
                result = await self.ledger.extend(info.key_id, record.request_id,
                                                  needed - record.reserved_usd)
                self._note_remaining(info.key_id, result)
                if not result.ok:
                    raise RateLimited("paid-API budget cannot cover this fallback model",
                                      code="budget_exhausted", retry_after_s=60.0)
                record.reserved_usd = needed
            return
        worst = max([needed, *(self._worst(record, t) for t in chain if t.tier == "api")])
        result = await self.ledger.reserve(info.key_id, record.request_id, worst)
        self._note_remaining(info.key_id, result)
        self.spend.budget_used(
            info.key_id, {"day": info.daily_budget_usd, "month": info.monthly_budget_usd},
            {"day": result.remaining_day, "month": result.remaining_month})
        if not result.ok:
            self._exhausted_until[info.key_id] = time.monotonic() + 5.0
            raise RateLimited(
                "paid-API budget exhausted for this key",
                code="budget_exhausted",
                retry_after_s=60.0,
            )
        record.reserved_usd = worst

    def _worst(self, record: RequestRecord, target: Target) -> Decimal:
        price = self.prices.price_for(f"{target.backend}/{target.model}")
        return worst_case_cost(record.prompt_bound, record.max_output_tokens, price)

    def _note_remaining(self, key_id: str, result: ReserveResult) -> None:
        self._remaining[key_id] = (result.remaining_day, result.remaining_month)
        for period, left in (("day", result.remaining_day), ("month", result.remaining_month)):
            if left is not None:
                self._metrics.budget_remaining.labels(key_id, period).set(float(left))

    def budget_headers(self, key_id: str | None) -> dict[str, str]:
        day, month = self._remaining.get(key_id or "", (None, None))
        headers = {}
        if day is not None:
            headers["x-spillgate-budget-remaining-day-usd"] = f"{day:.6f}"
        if month is not None:
            headers["x-spillgate-budget-remaining-month-usd"] = f"{month:.6f}"
        return headers

    # --- request rows ----------------------------------------------------------------------
    def open_row(self, record: RequestRecord) -> None:
        self.ledger.begin_record(record)

    def dispatched(self, record: RequestRecord, target: Target) -> None:
        """The request is about to reach a local engine: from now on the hardware is busy
        for it (queued or decoding) until it settles."""
        if target.tier == "local" and not self.clock.has(record.request_id):
            self.clock.begin(record.request_id, opaque=not record.stream,
                             prompt_estimate=record.prompt_estimate)

    def draft_done(self, record: RequestRecord) -> Decimal:
        """A cascade draft leaves the engine for the paid model: its hardware share so far,
        which the row keeps as `draft_usd` beside the paid cost."""
        return self.clock.finish(record.request_id) if self.clock.has(
            record.request_id) else Decimal(0)

    def progress(self, record: RequestRecord, tokens: int) -> None:
        """A streamed local request produced `tokens` more: its weight in the current
        interval; with its first output its prompt counts as prefilled (the bytes/4
        estimate, corrected by the engine's count when it settles)."""
        self.clock.add_tokens(record.request_id, tokens, prompt_estimate=record.prompt_estimate)

    def served(self, record: RequestRecord) -> None:
        if record.tier == "local":
            if not self.clock.has(record.request_id):  # a path that skipped dispatched()
                self.clock.begin(record.request_id, opaque=not record.stream,
                                 prompt_estimate=record.prompt_estimate)
        elif self.clock.has(record.request_id):  # left the engine (deadline or failure)
            self.clock.abandon(record.request_id)

    def finish(self, record: RequestRecord) -> Callable[[], Awaitable[None]] | None:
        """Price the settled request and write its row, at once (no await, so nothing can
        cancel it half way), and return None; or, when a paid reservation must first be
        settled in the database, write nothing yet and return that step, which then writes
        the row. Most requests hold no reservation: they settle without a task or a turn of
        the event loop (the caller shields only the step)."""
        if record.cache:  # a cache hit consumed nothing: cost 0, its avoided cost kept
            self.ledger.finish_record(record)
            return None
        usage = record.usage
        if record.tier != "local" and self.clock.has(record.request_id):
            self.clock.abandon(record.request_id)
        if record.tier == "local":
            record.cost_usd = self.clock.finish(record.request_id, **_engine_work(record))
        if record.tier == "local" and record.backend:
            reference = self._reference.get(record.model)
            if reference:
                record.counterfactual_usd = cost(
                    self.prices.price_for(reference),
                    usage.prompt_tokens,
                    usage.cached_tokens,
                    usage.completion_tokens,
                )
        elif record.tier == "api":
            price = self.prices.price_for(f"{record.backend}/{record.model}")
            cached = min(usage.cached_tokens, usage.prompt_tokens)
            record.cost_usd = cost(
                price,
                usage.prompt_tokens,
                cached,
                usage.completion_tokens,
                min(usage.cache_write_tokens, usage.prompt_tokens - cached),
            )
            self._metrics.api_spend.labels(record.backend).inc(float(record.cost_usd))
            self.spend.paid_settled(record.key_id, record.cost_usd)
        if record.reserved_usd and record.key_id:
            return functools.partial(self._settle_reservation, record, record.key_id)
        self.ledger.finish_record(record)
        return None

    async def _settle_reservation(self, record: RequestRecord, key_id: str) -> None:
        """Settle a paid call (the difference to the reservation is released), or release
        the reservation of one that never served; then write the row."""
        spent = record.cost_usd if record.tier == "api" else Decimal(0)
        await self.ledger.settle(key_id, record.request_id, record.reserved_usd, spent)
        self.ledger.finish_record(record)


def _engine_work(record: RequestRecord) -> dict[str, int]:
    """What the engine reported of the work it did for a local request (nothing when it
    sent no usage): the cost clock corrects the shares it took while this was unknown."""
    usage = record.usage
    if not usage.measured or record.status >= 400:
        return {}
    prompt = max(0, usage.prompt_tokens - usage.cached_tokens)  # cached: not prefilled
    if record.stream:
        return {"prompt_tokens": prompt}
    return {"work_tokens": prompt + usage.completion_tokens}


def build_accountant(
    settings: Settings, catalog: Catalog, routes: RouteTable, metrics: GatewayMetrics,
) -> Accountant:
    prices = PriceBook.load(settings.models_dir / "pricing.yaml")
    prices.require_prices(routes.paid_models())
    profiles = load_profiles(settings.models_dir / "hardware.yaml")
    profile = get_profile(profiles, settings.cost.hardware_profile)
    check_units(profile, settings.cost.units)
    clock = CostClock.for_profile(profile, settings.cost.units)
    reference = {
        name: m.reference_api_model for name, m in catalog.local.items() if m.reference_api_model
    }
    for model in reference.values():
        prices.price_for(model)
    return Accountant(settings.ledger_dsn(), prices, clock, reference, metrics,
                      SpendWatch.from_settings(settings, metrics), settings.ledger.node_id,
                      settings.cost.pool)
