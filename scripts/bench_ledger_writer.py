"""CPU the ledger writer thread spends per request: the direct driver path (ledger/direct.py)
side by side with SQLAlchemy's execution of the same batches (the asyncio batcher's path).

    PYTHONPATH=server .venv/bin/python scripts/bench_ledger_writer.py [--rounds 3]

Two batch shapes, on a fresh SQLite ledger file, thread CPU (`time.thread_time`) per request:
- c1: what one client makes (a 20 ms upstream): one transaction per request holding its
  final row and the next request's open row, one transaction every 20 ms. Run 20 ms apart
  the same code costs several times what it costs in a tight loop (cold caches, a woken
  CPU), so this shape sleeps between batches as the writer thread does;
- c16: sixteen final rows and sixteen open rows per transaction, back to back.
The paths alternate round by round so drift on a shared machine hits both alike.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from decimal import Decimal
from pathlib import Path

from sqlalchemy import Engine

from spillgate.ledger.direct import DirectWriter
from spillgate.ledger.record import RequestRecord, Usage
from spillgate.ledger.rows import RecordRow
from spillgate.ledger.store import Ledger
from spillgate.ledger.writer import RowOp, RowStatements, sync_sqlite_engine, write_batch

SHAPES = {"c1": (1, 0.02, 250), "c16": (16, 0.0, 60)}  # requests/batch, pause, batches


def _record(rid: str) -> RequestRecord:
    return RequestRecord(
        request_id=rid, key_id="key-bench", route="auto", stream=False,
        started_at=time.time(), tags={"project": "bench"}, reason="local_ok",
        backend="upstream", tier="local", model="smollm2", usage=Usage(12, 0, 5),
        status=200, ttft_s=0.02, latency_s=0.021, cost_usd=Decimal("0.0000012345"),
        counterfactual_usd=Decimal("0.0001"))  # fmt: skip


def _batches(per: int, count: int, tag: str) -> list[list[RowOp]]:
    """Each batch: the previous batch's requests finished, as many new ones begun."""
    out: list[list[RowOp]] = []
    previous: list[RequestRecord] = []
    for b in range(count):
        begun = [_record(f"{tag}-{b}-{i}") for i in range(per)]
        ops = [RowOp(r.request_id, RecordRow.of(r, final=True, at=time.time(), node_id="n"),
                     final=True) for r in previous]  # fmt: skip
        ops += [RowOp(r.request_id, RecordRow.of(r, final=False, at=0.0, node_id="n"),
                      final=False) for r in begun]  # fmt: skip
        out.append(ops)
        previous = begun
    return out


def _sqlalchemy(engine: Engine) -> Callable[[Sequence[RowOp]], None]:
    stmts = RowStatements("sqlite")

    def write(batch: Sequence[RowOp]) -> None:
        with engine.begin() as conn:  # BEGIN IMMEDIATE through the engine's begin event
            write_batch(conn, batch, stmts)

    return write


def _cpu_per_request(write: Callable[[Sequence[RowOp]], None], shape: str, tag: str) -> float:
    per, pause, count = SHAPES[shape]
    batches = _batches(per, count, tag)
    for batch in batches[:5]:  # warm-up: statements compiled, caches filled
        write(batch)
    spent = 0.0
    for batch in batches[5:]:
        began = time.thread_time()
        write(batch)
        spent += time.thread_time() - began
        if pause:
            time.sleep(pause)
    return 1e6 * spent / (per * (count - 5))


async def _create(db: Path) -> None:
    await (await Ledger.open(f"sqlite+aiosqlite:///{db}", node_id="n")).aclose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    results: dict[tuple[str, str], list[float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "ledger.db"
        asyncio.run(_create(db))
        engine = sync_sqlite_engine(f"sqlite+aiosqlite:///{db}")
        if engine is None:
            sys.exit("no SQLite file engine")
        direct = DirectWriter(engine)
        paths = {"sqlalchemy": _sqlalchemy(engine), "direct": direct.write}
        try:
            for r in range(args.rounds):
                for shape in SHAPES:
                    for name, write in paths.items():
                        cpu = _cpu_per_request(write, shape, f"{name}-{shape}-{r}")
                        results.setdefault((shape, name), []).append(cpu)
        finally:
            direct.close()
            engine.dispose()
    print("| batch shape | SQLAlchemy path µs/request | direct path µs/request | runs |")
    print("|---|---|---|---|")
    for shape in SHAPES:
        old, new = results[(shape, "sqlalchemy")], results[(shape, "direct")]
        runs = ", ".join(f"{a:.0f}/{b:.0f}" for a, b in zip(old, new, strict=True))
        print(f"| {shape} | {statistics.median(old):.0f} | {statistics.median(new):.0f} "
              f"| {runs} |")


if __name__ == "__main__":
    main()
