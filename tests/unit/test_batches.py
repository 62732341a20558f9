"""The Batch API in process: lifecycle, output and error files, cancel, ownership, preemption,
exactly-once billing across a restart. Real routing, ledger (SQLite file) and scheduler; the
engines are in-process fakes (tests/batch_support.py)."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from spillgate.batches.scheduler import IDLE_LOOK_S, REST_LOOK_S
from spillgate.errors import ServiceUnavailable, UpstreamError
from spillgate.fakes.backend import Script
from spillgate.reports.batches import batch_figures
from spillgate.tenancy.keys import create_key
from tests.batch_support import (
    auth,
    batch_harness,
    batch_rows,
    chat_line,
    jsonl,
    line_states,
    read_jsonl,
    start_batch,
    upload,
    wait_status,
)


async def test_a_batch_runs_every_line_once_and_writes_the_output_file(tmp_path: Path) -> None:
    async with batch_harness(tmp_path) as h:
        lines = [chat_line(f"r{i}") for i in range(6)]
        batch = await start_batch(h.client, lines, metadata={"job": "nightly"})
        assert batch["status"] == "in_progress" and batch["request_counts"]["total"] == 6
        done = await wait_status(h.client, batch["id"])
        assert done["status"] == "completed", done
        assert done["request_counts"] == {"total": 6, "completed": 6, "failed": 0}
        assert done["error_file_id"] is None and done["metadata"] == {"job": "nightly"}
        assert done["completed_at"] >= done["in_progress_at"] >= done["created_at"]
        output = await read_jsonl(h.client, done["output_file_id"])
        # In input order, each answer with its line's id, status and the upstream body.
        assert [o["custom_id"] for o in output] == [f"r{i}" for i in range(6)]
        assert {o["response"]["status_code"] for o in output} == {200}
        assert all(o["response"]["body"]["choices"][0]["message"]["content"] == "ok"
                   for o in output)
        assert all(o["error"] is None and o["id"] == o["response"]["request_id"]
                   for o in output)
        # One ledger row per line, tagged with the batch, served locally, settled.
        rows = await batch_rows(h, batch["id"])
        assert sorted(r["request_id"] for r in rows) == sorted(
            o["response"]["request_id"] for o in output)
        assert {(r["tier"], r["state"], r["status"]) for r in rows} == {("local", "settled",
                                                                          200)}
        assert len(h.local.calls) == 6 and not h.paid.calls
        assert all(call["stream"] is False for call in h.local.calls)


async def test_a_bad_line_goes_to_the_error_file_and_the_rest_complete(tmp_path: Path) -> None:
    async with batch_harness(tmp_path) as h:
        bad = chat_line("bad", max_tokens=-3)  # the request path refuses it: 400
        lines = [chat_line("a"), bad, chat_line("b"), chat_line("nomodel", model="nosuch")]
        batch = await start_batch(h.client, lines)
        done = await wait_status(h.client, batch["id"])
        assert done["status"] == "completed"
        assert done["request_counts"] == {"total": 4, "completed": 2, "failed": 2}
        output = await read_jsonl(h.client, done["output_file_id"])
        errors = await read_jsonl(h.client, done["error_file_id"])
        assert [o["custom_id"] for o in output] == ["a", "b"]
        assert [e["custom_id"] for e in errors] == ["bad", "nomodel"]
        assert [e["response"]["status_code"] for e in errors] == [400, 404]
        assert all("error" in e["response"]["body"] for e in errors)
        assert len(h.local.calls) == 2  # the refused lines never reached the engine


async def test_malformed_input_files_are_refused_on_upload(tmp_path: Path) -> None:
    async with batch_harness(tmp_path) as h:
        good = chat_line("x")
        cases = [
            b"not json\n",
            jsonl([good, good]),  # custom_id twice
            jsonl([{**good, "method": "GET"}]),
            jsonl([{**good, "url": "/v1/other"}]),
            jsonl([{**good, "body": "text"}]),
            jsonl([{**good, "custom_id": ""}]),
            b"\n\n",
        ]
        for content in cases:
            got = await upload(h.client, content)
            assert got.status_code == 400, content
            assert got.json()["error"]["param"] == "file"
        wrong_purpose = await h.client.post(
            "/v1/files", data={"purpose": "fine-tune"},
            files={"file": ("in.jsonl", jsonl([good]))})
        assert wrong_purpose.status_code == 400
        # A file of embeddings lines cannot start a chat batch.
        emb = {"custom_id": "e", "method": "POST", "url": "/v1/embeddings",
               "body": {"model": "local", "input": "x"}}
        file_id = (await upload(h.client, jsonl([emb]))).json()["id"]
        mismatch = await h.client.post("/v1/batches", json={
            "input_file_id": file_id, "endpoint": "/v1/chat/completions",
            "completion_window": "24h"})
        assert mismatch.status_code == 400
        assert mismatch.json()["error"]["code"] == "mismatched_endpoint"


async def test_an_oversized_file_is_413(tmp_path: Path) -> None:
    async with batch_harness(tmp_path, max_file_bytes=200) as h:
        got = await upload(h.client, jsonl([chat_line(f"r{i}") for i in range(5)]))
        assert got.status_code == 413


async def test_cancel_keeps_finished_lines_and_stops_the_rest(tmp_path: Path) -> None:
    async with batch_harness(tmp_path) as h:
        h.local.then(Script(), Script(), Script(hang=True))  # the third line hangs
        batch = await start_batch(h.client, [chat_line(f"r{i}") for i in range(6)])
        for _ in range(3000):
            if h.local.active:
                break
            await asyncio.sleep(0.01)
        assert h.local.active == 1
        cancelling = (await h.client.post(f"/v1/batches/{batch['id']}/cancel")).json()
        assert cancelling["status"] == "cancelling" and cancelling["cancelling_at"]
        done = await wait_status(h.client, batch["id"])
        assert done["status"] == "cancelled" and done["cancelled_at"]
        assert h.local.cancelled == 1 and h.local.active == 0  # the running line stopped
        assert done["request_counts"]["completed"] == 2
        output = await read_jsonl(h.client, done["output_file_id"])
        errors = await read_jsonl(h.client, done["error_file_id"])
        assert [o["custom_id"] for o in output] == ["r0", "r1"]
        assert [e["custom_id"] for e in errors] == ["r2", "r3", "r4", "r5"]
        assert {e["error"]["code"] for e in errors} == {"batch_cancelled"}
        assert all(e["response"] is None for e in errors)
        # Lines that never ran left no settled row; the finished ones one each.
        settled = [r for r in await batch_rows(h, batch["id"]) if r["status"] == 200]
        assert len(settled) == 2
        assert len(h.local.calls) == 3


async def test_files_and_batches_belong_to_their_key(tmp_path: Path) -> None:
    async with batch_harness(tmp_path) as h:
        _, alice = await create_key(h.ledger, "alice")
        _, bob = await create_key(h.ledger, "bob")
        batch = await start_batch(h.client, [chat_line("a")], key=alice)
        done = await wait_status(h.client, batch["id"], key=alice)
        file_id, out_id = batch["input_file_id"], done["output_file_id"]
        for path in (f"/v1/files/{file_id}", f"/v1/files/{file_id}/content",
                     f"/v1/files/{out_id}", f"/v1/files/{out_id}/content",
                     f"/v1/batches/{batch['id']}"):
            assert (await h.client.get(path, headers=auth(bob))).status_code == 404, path
            assert (await h.client.get(path, headers=auth(alice))).status_code == 200, path
        cancel = await h.client.post(f"/v1/batches/{batch['id']}/cancel", headers=auth(bob))
        assert cancel.status_code == 404
        steal = await h.client.post("/v1/batches", headers=auth(bob), json={
            "input_file_id": file_id, "endpoint": "/v1/chat/completions",
            "completion_window": "24h"})
        assert steal.status_code == 404
        listed = (await h.client.get("/v1/batches", headers=auth(bob))).json()
        assert listed["data"] == [] and listed["has_more"] is False
        assert (await h.client.get("/v1/batches")).status_code == 401  # no key, keys exist
        # The ledger rows are the owner's.
        assert {r["key_id"] for r in await batch_rows(h, batch["id"])} != {None}


async def test_list_pages_newest_first(tmp_path: Path) -> None:
    async with batch_harness(tmp_path) as h:
        ids = [(await start_batch(h.client, [chat_line("a")]))["id"] for _ in range(5)]
        seen, after = [], None
        while True:
            params = {"limit": 2, **({"after": after} if after else {})}
            page = (await h.client.get("/v1/batches", params=params)).json()
            seen += [b["id"] for b in page["data"]]
            if not page["has_more"]:
                break
            after = page["last_id"]
        assert seen == ids[::-1]
        assert (await h.client.get("/v1/batches", params={"limit": 0})).status_code == 400


async def test_live_traffic_preempts_a_running_line_which_is_billed_once(
        tmp_path: Path) -> None:
    async with batch_harness(tmp_path, resume_after_s=0.2) as h:
        # The batch's first line holds the engine; then a live request that takes long.
        h.local.then(Script(hang=True), Script(hang=True))
        batch = await start_batch(h.client, [chat_line("a"), chat_line("b")])
        await asyncio.wait_for(h.local.started.wait(), 30)
        live = asyncio.create_task(h.chat("local"))
        for _ in range(3000):  # within a poll or two the batch line steps aside
            if h.local.cancelled:
                break
            await asyncio.sleep(0.01)
        assert h.local.cancelled == 1 and h.local.active == 1  # only the live call runs
        for _ in range(3000):  # the preempted line goes back to pending (retried later)
            if (await line_states(h, batch["id"]))["a"] == "pending":
                break
            await asyncio.sleep(0.01)
        assert await line_states(h, batch["id"]) == {"a": "pending", "b": "pending"}
        live.cancel()  # the live client leaves; the batch resumes once load is gone
        done = await wait_status(h.client, batch["id"])
        assert done["status"] == "completed"
        assert done["request_counts"] == {"total": 2, "completed": 2, "failed": 0}
        rows = await batch_rows(h, batch["id"])
        # The preempted attempt and its retry share one ledger row: the retry's.
        assert len(rows) == 2 and {r["status"] for r in rows} == {200}
        assert h.app.state.batches.scheduler.preempted >= 1


async def test_a_resting_scheduler_looks_seldom_yet_a_new_batch_runs_at_once(
        tmp_path: Path) -> None:
    """With no batch in progress the scheduler does not look at live load every `poll_s`
    (at 20 ms that cost an idle node 15 ms of CPU a second, taken from the engine's
    threads), and a batch created then is still picked up at once."""
    async with batch_harness(tmp_path) as h:  # poll_s 10 ms
        looks = 0
        capacity = h.node.capacity

        def counted() -> Any:
            nonlocal looks
            looks += 1
            return capacity()

        h.node.capacity = counted
        await asyncio.sleep(0.5)
        assert looks <= 0.5 / REST_LOOK_S + 2  # every poll_s would have been ~50
        batch = await start_batch(h.client, [chat_line("a")])
        done = await wait_status(h.client, batch["id"], timeout_s=IDLE_LOOK_S / 2)
        assert done["status"] == "completed"


async def test_upstream_failures_are_retried_then_reported(tmp_path: Path) -> None:
    async with batch_harness(tmp_path, max_failures=2) as h:
        broken = UpstreamError("engine answered garbage")
        h.local.then(Script(error=broken), Script(), Script(error=broken),
                     Script(error=broken))
        batch = await start_batch(h.client, [chat_line("a"), chat_line("b")])
        done = await wait_status(h.client, batch["id"])
        assert done["request_counts"] == {"total": 2, "completed": 1, "failed": 1}
        errors = await read_jsonl(h.client, done["error_file_id"])
        assert [(e["custom_id"], e["response"]["status_code"]) for e in errors] == [("b", 502)]
        assert len(h.local.calls) == 4  # a: failed once, then done; b: failed twice


async def test_a_busy_node_delays_lines_without_failing_them(tmp_path: Path) -> None:
    async with batch_harness(tmp_path, max_failures=1) as h:
        h.local.then(*[Script(error=ServiceUnavailable("engine restarting"))] * 2)
        batch = await start_batch(h.client, [chat_line("a")])
        done = await wait_status(h.client, batch["id"])
        assert done["request_counts"] == {"total": 1, "completed": 1, "failed": 0}
        assert len(h.local.calls) == 3


async def test_a_batch_never_spills_to_a_paid_api_unless_it_asked(tmp_path: Path) -> None:
    async with batch_harness(tmp_path) as h:
        # The auto route would spill when local fails; a batch line is pinned to local.
        h.local.then(*[Script(error=UpstreamError("broken"))] * 5)
        batch = await start_batch(h.client, [chat_line("a", model="auto")])
        done = await wait_status(h.client, batch["id"])
        assert done["request_counts"]["failed"] == 1
        assert not h.paid.calls and not h.fallback.calls


async def test_an_expiring_batch_that_allows_it_spills_its_clean_lines(tmp_path: Path) -> None:
    # spill_margin_s covers the whole window: the batch may spill from its first line.
    async with batch_harness(tmp_path, spill_margin_s=86_400) as h:
        h.local.then(Script(hang=True))  # live traffic fills the local engine (one slot)
        live = asyncio.create_task(h.chat("local"))
        await asyncio.wait_for(h.local.started.wait(), 30)
        lines = [chat_line("clean", model="auto"),
                 chat_line("secret", model="auto",
                           messages=[{"role": "user", "content": "write to jane.doe@example.org"}])]
        batch = await start_batch(h.client, lines, metadata={"spillgate_spill": "allow"})
        done = await wait_status(h.client, batch["id"])
        rows = {r["request_id"].rsplit("_", 1)[1]: r for r in await batch_rows(h, batch["id"])}
        assert done["status"] == "completed", done
        # Local is full: the clean line went to the paid API, the sensitive one stayed local.
        assert rows["0"]["tier"] == "api" and rows["1"]["tier"] == "local"
        assert len(h.paid.calls) == 1 and "jane.doe" not in str(h.paid.calls)
        live.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await live


async def test_lines_running_at_a_crash_are_retried_under_the_same_ledger_row(
        tmp_path: Path) -> None:
    async with batch_harness(tmp_path, concurrency=1) as h:
        h.local.then(Script(hang=True))
        batch = await start_batch(h.client, [chat_line("a"), chat_line("b")])
        await asyncio.wait_for(h.local.started.wait(), 30)
        node_id = h.ledger.node_id
    # A clean stop released the line; put back what a kill -9 leaves: the line `running`
    # for this node, its ledger row open.
    with sqlite3.connect(tmp_path / "ledger.db") as db:
        (rid,) = db.execute("SELECT request_id FROM batch_lines WHERE custom_id = 'a'").fetchone()
        db.execute("UPDATE batch_lines SET state = 'running', claimed_by = ? "
                   "WHERE custom_id = 'a'", (node_id,))
        db.execute("UPDATE requests SET state = 'open', status = NULL WHERE request_id = ?",
                   (rid,))
    async with batch_harness(tmp_path, concurrency=1) as h2:
        done = await wait_status(h2.client, batch["id"])
        assert done["request_counts"] == {"total": 2, "completed": 2, "failed": 0}
        rows = await batch_rows(h2, batch["id"])
        assert sorted(r["request_id"] for r in rows) == sorted(
            [rid, rid.removesuffix("_0") + "_1"])
        assert {(r["state"], r["status"]) for r in rows} == {("settled", 200)}


@pytest.mark.parametrize("window", ["0h", "8d", "1 day", "24"])
async def test_completion_window_is_checked(tmp_path: Path, window: str) -> None:
    async with batch_harness(tmp_path) as h:
        file_id = (await upload(h.client, jsonl([chat_line("a")]))).json()["id"]
        got = await h.client.post("/v1/batches", json={
            "input_file_id": file_id, "endpoint": "/v1/chat/completions",
            "completion_window": window})
        assert got.status_code == 400


async def test_the_batch_report_shows_tokens_cost_and_idle_absorbed(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    admin = "admin-key-for-the-batch-report-test"
    monkeypatch.setenv("SPILLGATE_ADMIN_KEY", admin)
    async with batch_harness(tmp_path) as h:
        batch = await start_batch(h.client, [chat_line(f"r{i}") for i in range(3)])
        assert (await wait_status(h.client, batch["id"]))["status"] == "completed"
        await h.chat("local")  # live traffic: not a batch figure
        rows = await batch_rows(h, batch["id"])
        got = await h.client.get("/admin/report/batches", params={"since": "1h"},
                                 headers=auth(admin))
        assert got.status_code == 200, got.text
        report = got.json()
        assert (await h.client.get("/admin/report/batches")).status_code == 401
    # Recomputed from the rows themselves: 3 lines of 5 prompt + 3 completion tokens.
    assert report["batches"] == 1 and report["requests"] == 3
    assert report["local_tokens"] == sum(r["prompt_tokens"] + r["completion_tokens"]
                                         for r in rows) == 24
    local_usd = sum(r["cost_usd"] for r in rows)
    assert Decimal(report["local_cost_usd"]) == local_usd
    assert Decimal(report["idle_cost_absorbed_usd"]) == local_usd
    assert report["per_batch"][batch["id"]]["requests"] == 3


def test_batch_figures_by_hand() -> None:
    def row(batch: str | None, tier: str, tokens: tuple[int, int], usd: str) -> dict[str, Any]:
        return {"tags": {"batch": batch} if batch else {}, "tier": tier,
                "prompt_tokens": tokens[0], "completion_tokens": tokens[1],
                "cost_usd": Decimal(usd)}

    rows = [row("b1", "local", (100, 300), "0.02"), row("b1", "local", (50, 50), "0.01"),
            row("b2", "api", (10, 10), "0.5"), row(None, "local", (1000, 1000), "0.07")]
    # One hour: 1,800 s busy costing $0.10, 1,800 s idle costing $0.10.
    periods = [{"busy_s": 900.0, "idle_s": 900.0, "busy_usd": Decimal("0.05"),
                "idle_usd": Decimal("0.05")}] * 2
    got = batch_figures(rows, periods)
    assert got["batches"] == 2 and got["requests"] == 3
    assert (got["local_tokens"], got["api_tokens"]) == (500, 20)
    assert Decimal(got["local_cost_usd"]) == Decimal("0.03")
    assert got["local_usd_per_million_tokens"] == pytest.approx(0.03 / 500 * 1e6)
    # The batch's $0.03 of the $0.10 busy cost is 30% of busy time, which was half the hour.
    assert got["utilization_added"] == pytest.approx(0.3 * 0.5)
    assert got["absorbed_share"] == pytest.approx(0.03 / (0.03 + 0.10))
    assert Decimal(got["idle_cost_left_usd"]) == Decimal("0.1")
    assert batch_figures([], [])["utilization_added"] is None
