"""The console's page and the admin endpoints it reads (/admin/live, /admin/spill,
/admin/plan), through the whole gateway in process (tests/harness.py)."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest

from tests.harness import LOCAL, harness

ADMIN = "admin-key-for-console-api-0123456789"
AUTH = {"authorization": f"Bearer {ADMIN}"}
pytestmark = pytest.mark.asyncio(loop_scope="session")


@pytest.fixture(autouse=True)
def _admin_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SPILLGATE_ADMIN_KEY", ADMIN)


async def test_console_page_is_public_static_and_locked_down(tmp_path: Path) -> None:
    async with harness(tmp_path) as h:
        page = await h.client.get("/console")
        assert page.status_code == 200
        csp = page.headers["content-security-policy"]
        assert "default-src 'self'" in csp and "script-src 'self'" in csp
        assert "unsafe-inline" not in csp
        assert page.headers["x-frame-options"] == "DENY"
        html = page.text
        assert "<script>" not in html and " style=" not in html  # nothing inline
        assert "http://" not in html and "https://" not in html  # nothing from elsewhere
        for asset in ("console.js", "charts.js", "uPlot.iife.min.js", "uPlot.min.css"):
            reply = await h.client.get(f"/console/{asset}")
            assert reply.status_code == 200 and reply.content
        missing = await h.client.get("/console/..%2Fsettings.py")
        assert missing.status_code == 404 and missing.json()["error"]["code"] is not None


async def test_admin_endpoints_need_the_admin_key(tmp_path: Path) -> None:
    async with harness(tmp_path) as h:
        for path in ("/admin/live", "/admin/spill", "/admin/plan?tokens_per_day=1000",
                     "/admin/plan/options"):
            assert (await h.client.get(path)).status_code == 401
            wrong = await h.client.get(path, headers={"authorization": "Bearer " + "x" * 40})
            assert wrong.status_code == 401 and "error" in wrong.json()


async def test_spill_by_reason_counts_the_window(tmp_path: Path) -> None:
    async with harness(tmp_path) as h:
        for _ in range(5):
            assert (await h.chat("auto")).status_code == 200  # local_ok: not paid
        for _ in range(2):
            reply = await h.client.post("/v1/chat/completions", headers={
                "x-spillgate-tier": "api"}, json={"model": "auto", "messages": [
                    {"role": "user", "content": "hi"}]})
            assert reply.status_code == 200
        await h.ledger.flush()
        out = (await h.client.get("/admin/spill?since=1h", headers=AUTH)).json()
    assert out["nonsensitive_requests"] == 7
    [pinned] = out["reasons"]  # the local answers are no paid reason
    assert (pinned["reason"], pinned["requests"], pinned["share"]) == ("pinned_api", 2, 2 / 7)
    assert pinned["spill"] is False  # a pin is the client's choice, not a capacity spill
    assert pinned["tokens"] > 0 and Decimal(pinned["usd"]) > 0


async def test_live_state_names_routes_backends_and_the_guard(tmp_path: Path) -> None:
    async with harness(tmp_path) as h:
        live = (await h.client.get("/admin/live", headers=AUTH)).json()
    assert live["inflight"] == {LOCAL: 0} and live["ready"] == {LOCAL: True}
    assert {"route": "auto", "backend": LOCAL, "tier": "local", "reason": "local_ok",
            "spilling": False} in live["routes"]
    assert live["spend_guard"]["enabled"] is False
    assert live["gpus"] == []


async def test_plan_matches_a_hand_computed_all_api_cost(tmp_path: Path) -> None:
    async with harness(tmp_path) as h:
        reply = await h.client.get(
            "/admin/plan?tokens_per_day=50000000&peak_factor=3&hardware=cpu-node"
            "&api_model=openai/gpt-4o-mini", headers=AUTH)
        options = (await h.client.get("/admin/plan/options", headers=AUTH)).json()
    assert reply.status_code == 200
    plan = reply.json()["plan"]
    # All-API by hand: 3:1 input:output at $0.15 / $0.60 per 1M is $0.2625 per 1M,
    # times 50M tokens a day, times 30.4375 days a month.
    expected = Decimal("0.2625") * 50 * Decimal("30.4375")
    assert Decimal(plan["strategies"]["all-api"]["total_monthly_usd"]) == expected
    sweep = reply.json()["sweep"]
    assert len(sweep) == 61 and Decimal(sweep[0]["tokens_per_day"]) == 0
    assert "cpu-node" in options["profiles"] and "openai/gpt-4o-mini" in options["api_models"]


@pytest.mark.parametrize(("query", "param"), [
    ("tokens_per_day=lots", "tokens_per_day"),
    ("tokens_per_day=-5", "tokens_per_day"),
    ("tokens_per_day=NaN", "tokens_per_day"),
    ("", "tokens_per_day"),
    ("tokens_per_day=1000&peak_factor=0.5", "tokens_per_day"),
    ("tokens_per_day=1000&hardware=quantum", "hardware"),
    ("tokens_per_day=1000&api_model=acme/none", "api_model"),
])
async def test_plan_refuses_bad_input_in_the_openai_shape(tmp_path: Path, query: str,
                                                          param: str) -> None:
    async with harness(tmp_path) as h:
        reply = await h.client.get("/admin/plan?" + query, headers=AUTH)
    assert reply.status_code == 400
    error = reply.json()["error"]
    assert error["param"] == param and error["type"] == "invalid_request_error"
    assert "quantum" not in error["message"] and "acme" not in error["message"]
