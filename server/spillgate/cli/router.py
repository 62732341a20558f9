"""`spillgate router train` and `spillgate eval routing`: argparse only; the model is
`routing.learned_train`, the files `learned_file`, the figures `reports.routing_eval`."""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # numpy comes with these: imported by the commands, not by `--help`
    from spillgate.learned_file import Rows
    from spillgate.routing.learned import Embed, LearnedRouter


def add_router_commands(subparsers: Any) -> None:
    """Register `router train` and `eval routing` on the `spillgate` subparsers."""
    router = subparsers.add_parser("router", help="learned dispatcher: train a router model")
    router_sub = router.add_subparsers(dest="router_command", required=True)
    train = router_sub.add_parser("train", help="fit a router on {prompt, weak_ok, strong_ok}")
    train.add_argument("--data", type=Path, required=True, help="labelled JSONL rows")
    train.add_argument("--output", type=Path, required=True, help="router file to write")
    train.add_argument("--target", choices=("weak_fails_strong_ok", "weak_fails"),
                       default="weak_fails_strong_ok", help="what the score predicts")
    train.add_argument("--l2", type=float, default=10_000.0, help="L2 penalty (standardised)")
    train.add_argument("--no-embedding", action="store_true",
                       help="structural features only (no embedding model needed)")
    _split_args(train, with_pinned_default=True)
    train.set_defaults(func=run_train)

    evaluate = subparsers.add_parser("eval", help="offline evaluation of routing policies")
    eval_sub = evaluate.add_subparsers(dest="eval_command", required=True)
    routing = eval_sub.add_parser("routing", help="APGR, CPT and the quality curve of a router")
    routing.add_argument("--data", type=Path, required=True, help="labelled JSONL rows")
    routing.add_argument("--router", type=Path, required=True, help="router file to score with")
    routing.add_argument("--scores", type=Path, help="write {index, score} JSONL here")
    routing.add_argument("--format", choices=("json", "md", "html"), default="md")
    routing.add_argument("--output", type=Path, help="write the report here, not stdout")
    routing.add_argument("--seed", type=int, default=0, help="seed of the random baseline")
    _split_args(routing, with_pinned_default=False)
    routing.set_defaults(func=run_eval_routing)


def _split_args(parser: argparse.ArgumentParser, with_pinned_default: bool) -> None:
    parser.add_argument("--split-seed", type=int,
                        help="halve the rows' subjects with this seed (held-out evaluation)")
    parser.add_argument("--half", type=int, choices=(1, 2), default=1,
                        help="with --split-seed: which half of the subjects to use")
    parser.add_argument("--pinned", default="gsm8k",
                        help="comma-separated subjects kept out of the halving")
    parser.add_argument("--with-pinned", action=argparse.BooleanOptionalAction,
                        default=with_pinned_default,
                        help="with --split-seed: also use the pinned subjects' rows")


def _rows(args: argparse.Namespace) -> Rows:
    from spillgate.learned_file import read_rows, select_half

    rows = read_rows(args.data)
    if args.split_seed is None:
        return rows
    pinned = tuple(s for s in args.pinned.split(",") if s)
    return select_half(rows, args.split_seed, args.half, pinned, args.with_pinned)


def _embedder() -> tuple[Embed, str]:
    from spillgate.embeddings import load_local_embedder

    embedder = load_local_embedder()
    return embedder.embed, embedder.model_id


def run_train(args: argparse.Namespace) -> int:
    from spillgate.learned_file import save_router
    from spillgate.routing.learned_train import TrainOptions, train

    rows = _rows(args)
    embed, embedder_id = (None, None) if args.no_embedding else _embedder()
    began = time.perf_counter()
    try:
        router = train(rows.data, TrainOptions(target=args.target, l2=args.l2,
                                               use_embedding=not args.no_embedding),
                       embed=embed, embedder_id=embedder_id, data_sha256=rows.sha256)
    except ValueError as exc:
        print(f"spillgate: {exc}", file=sys.stderr)
        return 2
    if args.split_seed is not None:  # the model file says what it was trained on
        router = replace(router, meta={**router.meta, "split": {
            "seed": args.split_seed, "half": args.half, "pinned": args.pinned,
            "with_pinned": args.with_pinned}})
    save_router(args.output, router)
    print(f"trained on {len(rows.indexes)} rows in {time.perf_counter() - began:.1f} s; "
          f"threshold for 30% paid: {router.threshold_for_share(0.3):.4f}; wrote {args.output}",
          file=sys.stderr)
    return 0


def run_eval_routing(args: argparse.Namespace) -> int:
    from spillgate.learned_file import load_router
    from spillgate.reports.routing_eval import evaluate, render

    rows = _rows(args)
    router = load_router(args.router)
    scores = router.scores(rows.data.prompts, _embed_for(router))
    if args.scores:
        args.scores.parent.mkdir(parents=True, exist_ok=True)
        args.scores.write_text("".join(
            json.dumps({"index": i, "score": round(float(s), 8)}) + "\n"
            for i, s in zip(rows.indexes, scores, strict=True)))
    try:
        report = evaluate(scores, rows.data.prompts, rows.data.weak_ok, rows.data.strong_ok,
                          seed=args.seed)
    except ValueError as exc:
        print(f"spillgate: {exc}", file=sys.stderr)
        return 2
    report["router"] = {"file": str(args.router), **dict(router.meta)}
    text = render(report, args.format)
    if args.output:
        args.output.write_text(text)
    else:
        sys.stdout.write(text)
    return 0


def _embed_for(router: LearnedRouter) -> Embed | None:
    return None if router.embedder is None else _embedder()[0]
