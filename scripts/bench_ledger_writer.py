"""CPU the ledger writer thread spends per request: the direct driver path (ledger/direct.py)
side by side with SQLAlchemy's execution of the same batches (the asyncio batcher's path).

    PYTHONPATH=server .venv/bin/python scripts/bench_ledger_writer.py [--rounds 3]

Two batch shapes, on a fresh SQLite ledger file, thread CPU (`time.thread_time`) per request:
- c1: what one client makes (a 20 ms upstream): one transaction per request holding its
  final row and the next request's open row, one transaction every 20 ms. Run 20 ms apart
  the same code costs several times what it costs in a tight loop (cold caches, a woken
  CPU), so this shape sleeps between batches as the writer thread does;
- c16: sixteen final rows and sixteen open rows per transaction, back to back.
The paths alternate round by round so drift on a shared machine hits both alike; a round
reports its median batch.

Old code against new, side by side: `--trees OLD NEW` runs the direct path of each tree's
`spillgate` (this script in a subprocess with PYTHONPATH=TREE/server), alternating round by
round; it also times the direct path's Python alone (the statements sent nowhere: the part
that holds the GIL) and what the event loop does to queue a row (RecordRow.of, RowOp).

    .venv/bin/python scripts/bench_ledger_writer.py --trees /tmp/base . [--rounds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from decimal import Decimal
from pathlib import Path

from sqlalchemy import Engine

from spillgate.ledger.direct import DirectWriter
from spillgate.ledger.record import RequestRecord, Usage
from spillgate.ledger.rows import RecordRow
from spillgate.ledger.store import Ledger
from spillgate.ledger.writer import RowOp, RowStatements, sync_sqlite_engine, write_batch

SHAPES = {"c1": (1, 0.02, 250), "c16": (16, 0.0, 300)}  # requests/batch, pause, batches


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
    spent = []
    for batch in batches[5:]:
        began = time.thread_time()
        write(batch)
        spent.append(time.thread_time() - began)
        if pause:
            time.sleep(pause)
    # the median batch: a batch the thread was preempted in (other work on a shared
    # machine, its caches gone) moves a sum more than the change measured
    return 1e6 * statistics.median(spent) / per


async def _create(db: Path) -> None:
    await (await Ledger.open(f"sqlite+aiosqlite:///{db}", node_id="n")).aclose()


class _NoDatabase:
    """Where `_python_cost` sends the statements: parameters taken as sqlite3 takes them
    (each row a sequence), nothing stored, no row found by the lookup."""

    def execute(self, sql: str, params: Sequence[object] = ()) -> list[object]:
        return []

    def executemany(self, sql: str, params: Iterable[Sequence[object]]) -> None:
        for row in params:
            tuple(row)


def _python_cost(writer: DirectWriter, shape: str, tag: str) -> float:
    """The direct path's Python alone (no SQLite: what holds the GIL), µs per request."""
    per, pause, count = SHAPES[shape]
    spent = []
    for batch in _batches(per, count, tag):
        began = time.thread_time()
        writer._write(_NoDatabase(), batch)  # type: ignore[arg-type]
        spent.append(time.thread_time() - began)
        if pause:
            time.sleep(pause)
    return 1e6 * statistics.median(spent[5:]) / per


def _queue_cost(count: int = 20000) -> float:
    """Thread CPU µs the event loop spends to queue one row (RecordRow.of + its RowOp)."""
    records = [_record(f"q-{i}") for i in range(count)]
    began = time.thread_time()
    for r in records:
        RowOp(r.request_id, RecordRow.of(r, final=True, at=0.0, node_id="n"), final=True)
    return 1e6 * (time.thread_time() - began) / count


def _trees(trees: list[str], rounds: int) -> None:
    """The direct path of each tree, one subprocess per tree and round, alternating."""
    results: dict[str, list[dict[str, float]]] = {t: [] for t in trees}
    for _ in range(rounds):
        for tree in trees:
            env = {**os.environ, "PYTHONPATH": str(Path(tree).resolve() / "server")}
            out = subprocess.run([sys.executable, __file__, "--rounds", "1", "--json"],
                                 env=env, check=True, capture_output=True, text=True).stdout
            results[tree].append(json.loads(out))
    old, new = trees
    print(f"| µs/request (thread CPU) | {old} | {new} | runs (old/new) |")
    print("|---|---|---|---|")
    shapes = [f"{shape} {what}" for what in ("direct", "Python") for shape in SHAPES]
    for what in (*shapes, "queue"):
        a = [r[what] for r in results[old]]
        b = [r[what] for r in results[new]]
        runs = ", ".join(f"{x:.1f}/{y:.1f}" for x, y in zip(a, b, strict=True))
        print(f"| {what} | {statistics.median(a):.1f} | {statistics.median(b):.1f} | {runs} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--trees", nargs=2, metavar=("OLD", "NEW"))
    parser.add_argument("--json", action="store_true", help="the direct path only, as JSON")
    args = parser.parse_args()
    if args.trees:
        _trees(args.trees, args.rounds)
        return
    results: dict[tuple[str, str], list[float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "ledger.db"
        asyncio.run(_create(db))
        engine = sync_sqlite_engine(f"sqlite+aiosqlite:///{db}")
        if engine is None:
            sys.exit("no SQLite file engine")
        direct = DirectWriter(engine)
        paths = {"sqlalchemy": _sqlalchemy(engine), "direct": direct.write}
        if args.json:
            del paths["sqlalchemy"]
        try:
            for r in range(args.rounds):
                for shape in SHAPES:
                    for name, write in paths.items():
                        cpu = _cpu_per_request(write, shape, f"{name}-{shape}-{r}")
                        results.setdefault((shape, name), []).append(cpu)
        finally:
            direct.close()
            engine.dispose()
    if args.json:
        python = {f"{shape} Python": _python_cost(DirectWriter(engine), shape, f"p-{shape}")
                  for shape in SHAPES}  # fmt: skip
        print(json.dumps({f"{shape} direct": statistics.median(results[(shape, "direct")])
                          for shape in SHAPES} | python | {"queue": _queue_cost()}))
        return
    print("| batch shape | SQLAlchemy path µs/request | direct path µs/request | runs |")
    print("|---|---|---|---|")
    for shape in SHAPES:
        old, new = results[(shape, "sqlalchemy")], results[(shape, "direct")]
        runs = ", ".join(f"{a:.0f}/{b:.0f}" for a, b in zip(old, new, strict=True))
        print(f"| {shape} | {statistics.median(old):.0f} | {statistics.median(new):.0f} "
              f"| {runs} |")


if __name__ == "__main__":
    main()
