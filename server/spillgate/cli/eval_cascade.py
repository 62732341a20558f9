"""`spillgate eval cascade --data FILE`: run the local model on a labelled set and report how
well its confidence predicts right answers (reports/cascade_eval.py has the figures).

The model is asked through the OpenAI API (our llama.cpp engine, vLLM, or a node's `local`
route), greedy, a few tokens, with `logprobs: true` — exactly what a cascade draft gets.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

import orjson

from spillgate.errors import ConfigError
from spillgate.reports.cascade_eval import Graded, evaluate, grade, render
from spillgate.routing.cascade import token_logprobs

if TYPE_CHECKING:
    import aiohttp

SYSTEM = "Answer the question briefly."
log = logging.getLogger(__name__)


def add_cascade_eval(subparsers: Any) -> None:
    """Register `eval cascade`, under an `eval` command that may exist already (the
    routing evaluation registers one too)."""
    evals = subparsers.choices.get("eval") or subparsers.add_parser(
        "eval", help="evaluate routing decisions on labelled data")
    kinds = next((a for a in evals._actions if isinstance(a, argparse._SubParsersAction)),
                 None) or evals.add_subparsers(dest="eval_kind", required=True)
    run = kinds.add_parser("cascade", help="AUROC and escalation/accuracy per threshold of "
                           "the local model's confidence on a labelled set")
    run.add_argument("--data", type=Path, required=True,
                     help="JSONL rows {id, kind, prompt, gold} (scripts/cascade_eval_set.py)")
    run.add_argument("--base-url", default="http://127.0.0.1:8080/v1",
                     help="OpenAI-compatible base URL of the local model (engine or node)")
    run.add_argument("--model", default="smollm2", help="model name to send")
    run.add_argument("--api-key-env", help="env var holding a bearer key, if one is needed")
    run.add_argument("--max-tokens", type=int, default=12)
    run.add_argument("--first-k", type=int, default=8, help="tokens of first_k_logprob")
    run.add_argument("--concurrency", type=int, default=4)
    run.add_argument("--timeout-s", type=float, default=600.0, help="per question")
    run.add_argument("--format", choices=("md", "json"), default="md")
    run.add_argument("--output", type=Path, help="write the report here, not to stdout")
    run.add_argument("--drafts", type=Path,
                     help="also write each graded draft (JSONL, one line as each is graded, "
                          "so a run cut short keeps what it asked)")
    run.set_defaults(func=run_cascade_eval)


def load_rows(path: Path) -> list[dict[str, str]]:
    try:
        lines = path.read_bytes().splitlines()
    except OSError as exc:
        raise ConfigError(f"--data: cannot read {path}: {exc.strerror}") from None
    rows = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        row = orjson.loads(line)
        if not all(isinstance(row.get(k), str) for k in ("prompt", "gold", "kind")):
            raise ConfigError(f"--data line {number}: needs string prompt, gold and kind")
        rows.append(row)
    return rows


async def draft(session: aiohttp.ClientSession, args: argparse.Namespace,
                row: dict[str, str]) -> tuple[str, tuple[float, ...]]:
    body = {"model": args.model, "temperature": 0, "max_tokens": args.max_tokens,
            "logprobs": True, "messages": [{"role": "system", "content": SYSTEM},
                                           {"role": "user", "content": row["prompt"]}]}
    async with session.post(args.base_url.rstrip("/") + "/chat/completions",
                            data=orjson.dumps(body)) as response:
        answer = orjson.loads(await response.read())
        if response.status != 200:
            raise ConfigError(f"{args.base_url}: HTTP {response.status}: "
                              f"{answer.get('error', {}).get('message', '')}")
    text = answer["choices"][0]["message"].get("content") or ""
    per_choice = token_logprobs(answer)
    return text, tuple(per_choice[0]) if per_choice else ()


async def run_all(args: argparse.Namespace, rows: list[dict[str, str]],
                  ) -> list[tuple[Graded, str] | None]:  # fmt: skip
    """Each row's graded draft, or None where the model did not answer in time (left out
    of the figures and counted)."""
    import aiohttp  # the HTTP client only when a run needs it, not for `spillgate --help`

    headers = {"content-type": "application/json"}
    if args.api_key_env:
        headers["authorization"] = f"Bearer {os.environ.get(args.api_key_env, '')}"
    gate = asyncio.Semaphore(max(1, args.concurrency))
    timeout = aiohttp.ClientTimeout(total=args.timeout_s)
    with contextlib.ExitStack() as stack:
        drafts = stack.enter_context(args.drafts.open("wb")) if args.drafts else None
        return await _ask_all(args, rows, headers, gate, timeout, drafts)


async def _ask_all(args: argparse.Namespace, rows: list[dict[str, str]], headers: dict[str, str],
                   gate: asyncio.Semaphore, limits: aiohttp.ClientTimeout,
                   drafts: BinaryIO | None) -> list[tuple[Graded, str] | None]:
    import aiohttp

    done = 0
    async with aiohttp.ClientSession(headers=headers, timeout=limits) as session:
        async def one(index: int, row: dict[str, str]) -> tuple[Graded, str] | None:
            nonlocal done
            async with gate:
                try:
                    text, logprobs = await draft(session, args, row)
                except TimeoutError:
                    log.warning("question %s: no answer within %.0f s", index, args.timeout_s)
                    return None
                finally:
                    done += 1
                    if done % 20 == 0:
                        log.info("%d/%d questions asked", done, len(rows))
            graded = Graded(row.get("id", str(index)), row["kind"],
                            grade(row["kind"], row["gold"], text), logprobs)
            if drafts is not None:
                drafts.write(draft_line(graded, text))
                drafts.flush()
            return graded, text
        return await asyncio.gather(*(one(i, r) for i, r in enumerate(rows)))


def draft_line(item: Graded, text: str) -> bytes:
    return orjson.dumps({"id": item.id, "kind": item.kind, "answer": text,
                         "correct": item.correct, "logprobs": list(item.logprobs)}) + b"\n"


def run_cascade_eval(args: argparse.Namespace) -> int:
    rows = load_rows(args.data)
    if not rows:
        raise ConfigError(f"--data: {args.data} has no rows")
    import aiohttp  # here too: the except clause below names it (a NameError hid every error)

    try:
        answers = asyncio.run(run_all(args, rows))
    except aiohttp.ClientError as exc:
        raise ConfigError(f"{args.base_url}: {exc}") from None
    graded = [answer for answer in answers if answer is not None]
    if not graded:
        raise ConfigError(f"{args.base_url}: no question was answered in time")
    result = evaluate([item for item, _ in graded], args.first_k)
    result["unanswered"] = len(answers) - len(graded)
    report = render(result, args.format)
    if args.output:
        args.output.write_text(report, encoding="utf-8")
    else:
        sys.stdout.write(report)
    return 0
