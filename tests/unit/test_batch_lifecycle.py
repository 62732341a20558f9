"""How batches end, in process: `finalizing` seen by clients and finished after a restart,
a revoked key's batch stopped and failed; chunked uploads refused while they stream. Real
routing, ledger (SQLite file) and scheduler; the engines are in-process fakes."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from pathlib import Path
from typing import Any

from spillgate.fakes.backend import Script
from spillgate.tenancy.keys import create_key, revoke_key
from tests.batch_support import (
    batch_harness,
    batch_rows,
    chat_line,
    jsonl,
    line_states,
    read_jsonl,
    start_batch,
    wait_status,
)

ENDED = ("completed", "failed", "expired", "cancelled")


async def _statuses_until(h: Any, batch_id: str, until: tuple[str, ...] = ENDED,
                          timeout_s: float = 90.0) -> list[dict[str, Any]]:
    """Every distinct status the client saw while polling (the object it saw first with
    it), until one of `until`."""
    seen: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        got = (await h.client.get(f"/v1/batches/{batch_id}")).json()
        if not seen or seen[-1]["status"] != got["status"]:
            seen.append(got)
        if got["status"] in until:
            break
        await asyncio.sleep(0.02)
    return seen


async def test_clients_see_finalizing_before_the_files_exist(tmp_path: Path) -> None:
    # A slow poll: finalizing lasts one scheduler round (the files come on the next one).
    async with batch_harness(tmp_path, poll_s=1.0) as h:
        batch = await start_batch(h.client, [chat_line("a"), chat_line("b")])
        seen = await _statuses_until(h, batch["id"])
    statuses = [s["status"] for s in seen]
    assert statuses[-2:] == ["finalizing", "completed"], statuses
    finalizing, completed = seen[-2], seen[-1]
    assert finalizing["finalizing_at"] and finalizing["output_file_id"] is None
    assert finalizing["completed_at"] is None
    assert finalizing["request_counts"] == {"total": 2, "completed": 2, "failed": 0}
    assert completed["output_file_id"] and completed["completed_at"] >= completed[
        "finalizing_at"] == finalizing["finalizing_at"]


async def test_a_node_stopped_while_finalizing_finishes_once_after_restart(
        tmp_path: Path) -> None:
    # Rounds 3 s apart: the node is stopped between "finalizing" and the files.
    async with batch_harness(tmp_path, poll_s=3.0) as h:
        batch = await start_batch(h.client, [chat_line(f"r{i}") for i in range(3)])
        seen = await _statuses_until(h, batch["id"], ("finalizing", *ENDED))
        assert seen[-1]["status"] == "finalizing", seen[-1]
    with sqlite3.connect(tmp_path / "ledger.db") as db:
        assert db.execute("SELECT status FROM batches").fetchone() == ("finalizing",)
        assert db.execute("SELECT count(*) FROM batch_files WHERE purpose = 'batch_output'"
                          ).fetchone() == (0,)
    async with batch_harness(tmp_path) as h2:
        done = await wait_status(h2.client, batch["id"])
        assert done["status"] == "completed" and done["finalizing_at"] and done["completed_at"]
        output = await read_jsonl(h2.client, done["output_file_id"])
        rows = await batch_rows(h2, batch["id"])
        assert len(h2.local.calls) == 0  # nothing ran again
    assert sorted(o["custom_id"] for o in output) == ["r0", "r1", "r2"]  # once each
    assert len(rows) == 3 and {r["status"] for r in rows} == {200}
    with sqlite3.connect(tmp_path / "ledger.db") as db:
        assert db.execute("SELECT count(*) FROM batch_files WHERE purpose = 'batch_output'"
                          ).fetchone() == (1,)


async def test_a_revoked_keys_batch_stops_and_fails_keeping_finished_lines(
        tmp_path: Path) -> None:
    async with batch_harness(tmp_path) as h:
        key_id, alice = await create_key(h.ledger, "alice")
        h.local.then(Script(), Script(hang=True))  # r0 is answered, r1 holds the engine
        batch = await start_batch(h.client, [chat_line(f"r{i}") for i in range(4)], key=alice)
        for _ in range(3000):
            if h.local.active:
                break
            await asyncio.sleep(0.01)
        assert h.local.active == 1
        assert await revoke_key(h.ledger, key_id.key_id)
        # The revoked key's polls are refused once the key caches forget it: read the store.
        store, files = h.app.state.batches.store, h.app.state.batches.files
        final = await store.get(key_id.key_id, batch["id"])
        for _ in range(6000):
            if final["status"] == "failed":
                break
            await asyncio.sleep(0.01)
            final = await store.get(key_id.key_id, batch["id"])
        states = await line_states(h, batch["id"])
        rows = await batch_rows(h, batch["id"])
        output = (await files.content(key_id.key_id, final["output_file_id"])).splitlines()
        errors = (await files.content(key_id.key_id, final["error_file_id"])).splitlines()
        assert h.local.cancelled == 1 and h.local.active == 0  # the running line stopped
        assert len(h.local.calls) == 2  # no new line started after the revocation
    assert final["status"] == "failed" and final["failed_at"]
    assert final["errors"][0]["code"] == "key_revoked"
    assert states == {"r0": "done", "r1": "aborted", "r2": "aborted", "r3": "aborted"}
    assert len(output) == 1 and b'"custom_id":"r0"' in output[0]
    assert len(errors) == 3 and all(b'"batch_failed"' in e for e in errors)
    # The finished line is billed once; the stopped one settled no answer.
    assert [r["status"] for r in rows if r["status"] == 200] == [200]
    assert {r["key_id"] for r in rows} == {key_id.key_id}


async def test_a_chunked_upload_is_refused_once_past_the_cap(tmp_path: Path) -> None:
    cap, chunk = 1_000, 8 * 1024
    sent = 0

    async def body() -> Any:
        nonlocal sent
        head = (b"--b\r\nContent-Disposition: form-data; name=\"purpose\"\r\n\r\nbatch\r\n"
                b"--b\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.jsonl\""
                b"\r\nContent-Type: application/jsonl\r\n\r\n")
        sent += len(head)
        yield head
        line = jsonl([chat_line("x" * 40)])
        for _ in range(1000):  # 8 MB if read to the end
            piece = (line * (chunk // len(line) + 1))[:chunk]
            sent += len(piece)
            yield piece
        yield b"\r\n--b--\r\n"

    async with batch_harness(tmp_path, max_file_bytes=cap) as h:
        got = await h.client.post("/v1/files", content=body(), headers={
            "content-type": "multipart/form-data; boundary=b"})
        assert "content-length" not in got.request.headers  # chunked
    assert got.status_code == 413
    assert got.json()["error"]["code"] == "payload_too_large"
    # Read up to the cap (plus the form's allowance), not the whole 8 MB.
    assert sent <= cap + 64 * 1024 + 2 * chunk
