"""The planner console in a real browser: Debian's Chromium driven by Playwright, against the
running node (fake local engine and fake paid API on loopback, a real SQLite ledger).

A planner signs in with the admin key, waits for the figures, and reads the same numbers the
JSON report gives; the page makes no request off the node and never puts the key in a URL, a
cookie or localStorage.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from playwright.sync_api import ConsoleMessage, Request, Route, sync_playwright

from tests.conftest import node_config, run_node
from tests.support import Proc, wait_http

pytestmark = pytest.mark.integration
ADMIN = "admin-key-for-console-tests-0123456789"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
LOCAL_CALLS, PAID_CALLS = 5, 3


@pytest.fixture(scope="module")
def node(local_fake: Proc, paid_fake: Proc, tmp_path_factory: pytest.TempPathFactory,
         ) -> Iterator[Proc]:
    if not Path(CHROMIUM).exists():
        if os.environ.get("CI"):
            pytest.fail("chromium is missing: scripts/system-deps.sh installs it")
        pytest.skip("chromium is missing: run scripts/system-deps.sh (Debian's chromium)")
    tmp = Path(tmp_path_factory.mktemp("console"))
    config = node_config(local_fake.base_url + "/v1", paid_fake.base_url, tmp)
    config["spend_guard"] = {"window_s": 60, "node": {"limit_usd": "100"}}
    with run_node(config, tmp, env={"SPILLGATE_ADMIN_KEY": ADMIN}) as proc:
        wait_http(proc.base_url.removesuffix("/v1") + "/readyz")
        yield proc


def _traffic(node: Proc) -> None:
    """Local answers on the auto route and paid ones (pinned), under a virtual key with
    tags, so every table of the console has rows."""
    root = node.base_url.removesuffix("/v1")
    made = httpx.post(root + "/admin/keys", json={"name": "planner", "daily_budget_usd": "5"},
                      headers={"authorization": f"Bearer {ADMIN}"})
    assert made.status_code == 201, made.text
    key = made.json()["secret"]
    body = {"model": "auto", "max_tokens": 8,
            "messages": [{"role": "user", "content": "Name a colour."}]}
    for i in range(LOCAL_CALLS + PAID_CALLS):
        headers = {"authorization": f"Bearer {key}", "x-spillgate-tags": "team=blue"}
        if i >= LOCAL_CALLS:
            headers["x-spillgate-tier"] = "api"
        reply = httpx.post(node.base_url + "/chat/completions", json=body, headers=headers,
                           timeout=30)
        assert reply.status_code == 200, reply.text
    deadline = time.monotonic() + 30  # rows are written behind: wait until all are in
    while _report(node, "1h", None)["totals"]["requests"] < LOCAL_CALLS + PAID_CALLS:
        assert time.monotonic() < deadline, "the ledger never showed the requests"
        time.sleep(0.1)


def _report(node: Proc, since: str, until: str | None) -> dict[str, Any]:
    params = {"since": since, "format": "json"} | ({"until": until} if until else {})
    reply = httpx.get(node.base_url.removesuffix("/v1") + "/admin/report", params=params,
                      headers={"authorization": f"Bearer {ADMIN}"}, timeout=30)
    reply.raise_for_status()
    report: dict[str, Any] = reply.json()
    return report


def _at(report: dict[str, Any], path: str) -> Any:
    value: Any = report
    for part in path.split("."):
        value = value[part]
    return value


def _same(shown: str, expected: Any) -> bool:
    """data-value against the JSON value: exact text for decimals (strings) and integers,
    the same double for ratios (JSON numbers), null and booleans by name."""
    if expected is None:
        return shown == "null"
    if isinstance(expected, bool):
        return shown == str(expected).lower()
    if isinstance(expected, float):
        return float(shown) == expected
    return shown == str(expected)


def test_planner_signs_in_and_reads_the_report(node: Proc, tmp_path: Path) -> None:
    _traffic(node)
    root = node.base_url.removesuffix("/v1")
    outside: list[str] = []
    seen_urls: list[str] = []
    errors: list[str] = []

    def only_this_node(route: Route, request: Request) -> None:
        seen_urls.append(request.url)
        if urlsplit(request.url).hostname != "127.0.0.1":
            outside.append(request.url)
            route.abort()
        else:
            route.continue_()

    def on_console(message: ConsoleMessage) -> None:
        if message.type == "error":
            errors.append(f"console: {message.text}")

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM)
        try:
            context = browser.new_context(viewport={"width": 1280, "height": 900})
            page = context.new_page()
            page.route("**/*", only_this_node)
            page.on("console", on_console)
            page.on("pageerror", lambda exc: errors.append(f"page: {exc}"))

            opened = page.goto(root + "/console")
            assert opened is not None and opened.status == 200
            assert "default-src 'self'" in opened.headers["content-security-policy"]
            page.fill("#key", ADMIN)
            with page.expect_response(lambda r: "/admin/report?" in r.url) as answered:
                page.click("#signin-form button[type=submit]")
            report = answered.value.json()
            page.wait_for_selector("#report[data-state=ready]", timeout=30_000)
            page.wait_for_selector("#live[data-state=ready]", timeout=30_000)
            page.wait_for_selector("#plan-result[data-state=ready]", timeout=30_000)

            figures = page.eval_on_selector_all(
                "[data-figure]", "els => els.map(e => [e.dataset.figure, e.dataset.value])")
            assert len(figures) >= 20
            wrong = [(path, shown, _at(report, path)) for path, shown in figures
                     if not _same(shown, _at(report, path))]
            assert not wrong
            # The page showed the window it asked for: the same window, asked again, holds
            # the same requests and paid spend (hardware periods keep accruing meanwhile).
            since = page.get_attribute("#report", "data-since")
            until = page.get_attribute("#report", "data-until")
            assert since and until
            again = _report(node, since, until)
            for field in ("requests", "local_requests", "api_requests", "api_usd"):
                assert again["totals"][field] == report["totals"][field]
            assert report["totals"]["requests"] == LOCAL_CALLS + PAID_CALLS
            assert report["totals"]["api_requests"] == PAID_CALLS

            assert page.locator("#chart-cost canvas").count() == 1
            assert page.locator("#chart-plan canvas").count() == 1
            assert page.locator("#key-table tbody tr").count() == len(report["by_key"])
            assert page.locator("#tag-table tbody tr").count() == len(report["by_tag"])
            assert page.locator("#spill-table tbody tr").count() >= 1  # pinned_api
            assert page.locator("#plan-table tbody tr").count() == 3

            page.select_option("#window", "7d")
            page.wait_for_selector("#report[data-state=ready]", timeout=30_000)
            assert page.get_attribute("#report", "data-since") != since
            page.screenshot(path=str(tmp_path / "console.png"), full_page=True)

            # The key lives in this tab's sessionStorage and nowhere else.
            assert page.evaluate("sessionStorage.getItem('spillgate.adminKey')") == ADMIN
            assert ADMIN not in page.evaluate("JSON.stringify(localStorage)")
            assert all(ADMIN not in c["value"] and ADMIN not in c["name"]
                       for c in context.cookies())
            assert seen_urls and all(ADMIN not in url for url in seen_urls)
            page.click("#signout")
            assert page.evaluate("sessionStorage.length") == 0
        finally:
            browser.close()
    assert (tmp_path / "console.png").stat().st_size > 10_000
    assert outside == []
    assert errors == []
