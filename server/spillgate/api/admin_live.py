"""GET /admin/live and GET /admin/spill: what the node is doing now, and why traffic left it.

/admin/live (for the console's live panel): requests in flight per local backend, the engine
queues and GPU readings of the latest telemetry sample (fresh ones only; stale is unknown),
which `auto` routes would spill a plain request right now and why (the router itself asked,
with the live capacity), and the spend guard's state.
/admin/spill?since=&until=: paid requests of the window by routing reason
(reports.spill_reasons).
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Request

from spillgate.api.admin_reports import report_window
from spillgate.capacity import CapacityMonitor
from spillgate.errors import ApiError, ServiceUnavailable
from spillgate.reports.spill_reasons import spill_by_reason
from spillgate.routing.router import BudgetView, LocalCapacity, RequestFacts, decide
from spillgate.routing.routes import RouteTable
from spillgate.service import Node


def route_states(routes: RouteTable, capacity: dict[str, LocalCapacity],
                 budget: BudgetView) -> list[dict[str, Any]]:
    """Where a plain (non-sensitive, unpinned, keyless) request on each auto route would go
    now: the router itself asked, with the live capacity and the node's spend guard."""
    out = []
    for route in routes.all():
        if route.policy != "auto":
            continue
        try:
            decision = decide(RequestFacts(sensitive=False), capacity, budget, route)
            target, reason = decision.first, decision.reason
            out.append({"route": route.name, "backend": target.backend, "tier": target.tier,
                        "reason": reason, "spilling": target.tier == "api"})
        except ApiError as exc:
            out.append({"route": route.name, "backend": None, "tier": None,
                        "reason": exc.code, "spilling": False})
    return out


def telemetry_state(monitor: CapacityMonitor | None, stale_s: float) -> dict[str, Any]:
    if monitor is None:
        return {"engines": {}, "gpus": []}
    snap, now = monitor.last, time.monotonic()
    engines = {}
    for backend in snap.engines:
        fresh = snap.fresh_engines(backend, now, stale_s)
        engines[backend] = {
            "replicas": len(snap.engines[backend]), "fresh": len(fresh),
            "running": sum(r.running or 0 for r in fresh) if fresh else None,
            "waiting": sum(r.waiting or 0 for r in fresh) if fresh else None,
        }
    gpus = [{"index": g.index, "utilization": g.utilization_ratio,
             "power_watts": g.power_watts, "memory_used_bytes": g.memory_used_bytes}
            for g in snap.fresh_gpus(now, stale_s)]
    return {"engines": engines, "gpus": gpus}


def admin_live_router() -> APIRouter:
    router = APIRouter()

    @router.get("/admin/live")
    async def live(request: Request) -> dict[str, Any]:
        state = request.app.state
        node: Node = state.node
        capacity = dict(node.capacity())
        accountant = getattr(state, "accountant", None)
        guard = accountant.spend.guard.state() if accountant is not None else None
        budget = accountant.budget_view(None) if accountant is not None else BudgetView()
        return {
            "at": datetime.now(UTC).isoformat(),
            "inflight": {name: node.inflight.count(name) for name in sorted(capacity)},
            "ready": {name: c.ready for name, c in sorted(capacity.items())},
            "routes": route_states(node.routes, capacity, budget),
            **telemetry_state(getattr(state, "capacity", None),
                              state.settings.telemetry.stale_after_s),
            "spend_guard": guard,
        }

    @router.get("/admin/spill")
    async def spill(request: Request, since: str = "7d",
                    until: str | None = None) -> dict[str, Any]:
        start, end, _ = report_window(since, until, None, datetime.now(UTC))
        accountant = getattr(request.app.state, "accountant", None)
        if accountant is None:
            raise ServiceUnavailable("the cost ledger is not open")
        return await spill_by_reason(accountant.ledger, start, end)

    return router
