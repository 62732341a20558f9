"""`spillgate keys create|list|revoke`: argparse only, over spillgate.tenancy.keys.

The secret of a new key is printed once and never again.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Awaitable, Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

from spillgate.cli.report import decimal_arg
from spillgate.ledger.store import Ledger
from spillgate.tenancy.keys import create_key, list_keys, revoke_key


# --- spillgate keys ... ----------------------------------------------------------------------
def add_keys_commands(subparsers: Any) -> None:
    """Register `keys create|list|revoke` on the `spillgate` argparse subparsers."""
    keys = subparsers.add_parser("keys", help="virtual API keys: create | list | revoke")
    actions = keys.add_subparsers(dest="keys_command", required=True)
    create = actions.add_parser("create", help="create a key and print its secret once")
    create.add_argument("name", help="who or what the key is for")
    create.add_argument("--daily-budget", type=_usd, help="paid-API USD per UTC day")
    create.add_argument("--monthly-budget", type=_usd, help="paid-API USD per UTC month")
    create.add_argument("--rpm", type=_count, help="requests per minute, all replicas together")
    create.add_argument("--tpm", type=_count, help="tokens per minute, all replicas together")
    create.add_argument("--local-only", action="store_true",
                        help="treat every request of this key as sensitive: never leaves")
    create.add_argument("--tag", action="append", default=[], type=_tag, metavar="K=V",
                        help="tag recorded on the key (repeatable)")
    create.add_argument("--cache-namespace", default=None,
                        help="keys with the same namespace share response-cache entries")
    lst = actions.add_parser("list", help="list keys (never their secrets)")
    lst.add_argument("--all", action="store_true", help="include revoked keys")
    revoke = actions.add_parser("revoke", help="revoke a key by its id")
    revoke.add_argument("key_id")
    for action in (create, lst, revoke):
        source = action.add_mutually_exclusive_group()
        source.add_argument("--dsn", help="ledger DSN (default: from the config)")
        source.add_argument("--config", type=Path, help="node config file holding the DSN")
        action.add_argument("--json", action="store_true", help="print JSON")
    keys.set_defaults(func=run_keys)


def _usd(text: str) -> Decimal:
    value = decimal_arg(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"not a non-negative amount: {text!r}")
    return value


def _count(text: str) -> int:
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"not a non-negative integer: {text!r}")
    return int(text)


def _tag(text: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep or not name.strip():
        raise argparse.ArgumentTypeError(f"tags are K=V: {text!r}")
    return name.strip(), value.strip()


def run_keys(args: argparse.Namespace) -> int:
    dsn = args.dsn or _dsn_from_config(args.config)
    command: Callable[[Ledger, argparse.Namespace], Awaitable[int]] = {
        "create": _create, "list": _list, "revoke": _revoke}[args.keys_command]
    return asyncio.run(_with_ledger(dsn, command, args))


def _dsn_from_config(path: Path | None) -> str:
    from spillgate.settings import load_settings

    return load_settings(path).ledger_dsn()


async def _with_ledger(dsn: str, command: Callable[[Ledger, argparse.Namespace],
                       Awaitable[int]], args: argparse.Namespace) -> int:
    ledger = await Ledger.open(dsn)
    try:
        return await command(ledger, args)
    finally:
        await ledger.aclose()


async def _create(ledger: Ledger, args: argparse.Namespace) -> int:
    try:
        info, secret = await create_key(
            ledger, args.name, daily_budget_usd=args.daily_budget,
            monthly_budget_usd=args.monthly_budget, rpm=args.rpm, tpm=args.tpm,
            local_only=args.local_only, tags=dict(args.tag),
            cache_namespace=args.cache_namespace,
        )  # fmt: skip
    except ValueError as exc:
        print(f"spillgate keys: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps({"key": info.to_json(), "secret": secret}))
    else:
        print(f"created {info.key_id} ({info.name})")
        print(f"secret: {secret}")
        print("store it now: it is not kept and cannot be shown again")
    return 0


async def _list(ledger: Ledger, args: argparse.Namespace) -> int:
    keys = [k.to_json() for k in await list_keys(ledger, include_revoked=args.all)]
    if args.json:
        print(json.dumps({"data": keys}))
        return 0
    columns = ("key_id", "name", "prefix", "daily_budget_usd", "monthly_budget_usd", "rpm",
               "tpm", "local_only", "revoked_at")
    table = [columns, *[tuple("-" if k[c] is None else str(k[c]) for c in columns)
                        for k in keys]]
    widths = [max(len(row[i]) for row in table) for i in range(len(columns))]
    for row in table:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
    return 0


async def _revoke(ledger: Ledger, args: argparse.Namespace) -> int:
    if not await revoke_key(ledger, args.key_id):
        print(f"spillgate keys: no live key {args.key_id!r}", file=sys.stderr)
        return 1
    print(json.dumps({"key_id": args.key_id, "revoked": True}) if args.json
          else f"revoked {args.key_id}")
    return 0
