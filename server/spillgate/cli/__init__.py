"""`spillgate serve | engine | fake-provider | keys | report | plan | bench | router | eval`."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from spillgate.errors import ConfigError

if TYPE_CHECKING:
    from spillgate.settings import Settings

log = logging.getLogger("spillgate")


def _engine(argv: list[str]) -> int:
    if not argv or argv[0] not in ("llamacpp", "vllm"):
        print("usage: spillgate engine {llamacpp|vllm} [options]  (--help for options)",
              file=sys.stderr)
        return 2
    if argv[0] == "llamacpp":
        from spillgate.engines.llamacpp.main import run as run_llamacpp

        return run_llamacpp(argv[1:])
    from spillgate.engines.vllm import run as run_vllm

    return run_vllm(argv[1:])


def _fake_provider(argv: list[str]) -> int:
    from spillgate.fakes.provider import main as fake_main

    fake_main(argv)
    return 0


# Subcommands that parse their own arguments (they wrap other programs' option sets).
PASSTHROUGH: dict[str, Callable[[list[str]], int]] = {
    "engine": _engine,
    "fake-provider": _fake_provider,
}


def _engine_port_taken(settings: Settings) -> str | None:
    """Why an engine to launch cannot bind (its port is held), else None: said once at
    start, instead of an engine that fails and restarts forever."""
    from spillgate.backends.supervisor import port_in_use, port_taken_message

    for backend in settings.local:
        if not backend.base_urls and port_in_use(backend.port):
            return f"local.{backend.name}: engine {port_taken_message(backend.port)}"
    return None


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from spillgate.api.http_limits import HeadLimits, head_limited_protocol
    from spillgate.app import create_app
    from spillgate.settings import load_settings

    server = {k: v for k, v in (("host", args.host), ("port", args.port)) if v}
    try:
        settings = load_settings(args.config, {"server": server} if server else None)
        if args.model_path:
            local = [b.model_copy(update={"model_path": args.model_path}) for b in settings.local]
            settings = settings.model_copy(update={"local": local})
        app = create_app(settings)
    except ConfigError as exc:
        print(f"spillgate: {exc}", file=sys.stderr)
        return 2
    if not settings.client_keys():
        log.warning("no client API keys configured: open access, allowed on loopback only")
    taken = _engine_port_taken(settings)
    if taken:
        print(f"spillgate: {taken}", file=sys.stderr)
        return 2
    limits = HeadLimits(settings.server.max_header_bytes, settings.server.max_headers,
                        settings.server.header_timeout_s)
    uvicorn.run(app, host=settings.server.host, port=settings.server.port,
                log_level=settings.server.log_level, loop="uvloop",
                # httptools, with bounded request heads, serving the hot routes without ASGI
                http=head_limited_protocol(limits, app.hot),
                access_log=False, timeout_graceful_shutdown=10,
                # Nothing reads the client's address (keys decide access), so uvicorn's
                # X-Forwarded-* middleware would only cost a layer per request; and the
                # answers do not advertise the server software.
                proxy_headers=False, server_header=False)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="spillgate", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the node (gateway + supervised engines)")
    serve.add_argument("--config", type=Path, help="YAML config file (env overrides apply)")
    serve.add_argument("--host", help="override server.host")
    serve.add_argument("--port", type=int, help="override server.port")
    serve.add_argument("--model-path", help="serve this GGUF file instead of the catalog's")
    serve.set_defaults(func=_serve)
    sub.add_parser("engine", help="run an engine process: llamacpp | vllm", add_help=False)
    sub.add_parser("fake-provider", help="fake OpenAI/Anthropic API for tests and demos",
                   add_help=False)
    from spillgate.cli.keys import add_keys_commands
    from spillgate.cli.report import add_report_commands

    add_keys_commands(sub)
    add_report_commands(sub)
    from spillgate.cli.router import add_router_commands

    add_router_commands(sub)
    from spillgate.costing.bench import add_bench_command

    add_bench_command(sub)
    from spillgate.cli.eval_cascade import add_cascade_eval

    add_cascade_eval(sub)  # joins an `eval` command registered before it, if any
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    if args_list and args_list[0] in PASSTHROUGH:
        return PASSTHROUGH[args_list[0]](args_list[1:])
    args = build_parser().parse_args(args_list)
    try:
        result: int = args.func(args)
    except ConfigError as exc:
        print(f"spillgate: {exc}", file=sys.stderr)
        return 2
    return result


if __name__ == "__main__":
    sys.exit(main())
