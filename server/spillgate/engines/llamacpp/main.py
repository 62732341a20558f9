"""Command line of the engine process: load the GGUF, build the app, serve it with uvicorn."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

import uvicorn

from spillgate.engines.lifeline import ParentGone, bind_to_parent
from spillgate.engines.llamacpp import weights
from spillgate.engines.llamacpp.app import DecodeLoop, create_app
from spillgate.engines.llamacpp.chat import ChatTemplate
from spillgate.engines.llamacpp.decoder import DecoderProcess, DecoderSpec
from spillgate.engines.llamacpp.metrics import EngineMetrics
from spillgate.engines.llamacpp.model import ContextShape, LlamaModel
from spillgate.engines.llamacpp.scheduler import Scheduler, SchedulerConfig
from spillgate.engines.llamacpp.service import Engine
from spillgate.errors import ConfigError
from spillgate.held_head import HeldHeadProtocol

log = logging.getLogger("spillgate.engine")
HANDOFF_WAIT_MS = 2.0


def default_threads() -> int:
    """Every core, with the decode/HTTP hand-off on (see `--handoff-wait-ms`). Measured on the
    2-core machine, quiet: 59.7 tokens/s at concurrency 1 with 2 threads vs 39.1 with 1. On
    cores shared with other busy processes llama.cpp's spinning barriers make fewer threads
    far better (0.5 vs 7.0 tokens/s there): `--adapt-threads` drops to one thread while that
    measures faster (threads.py). Off by default: quiet, it cost ~5% tokens/s and, with a
    batch running beside live traffic, live p95 1.26x vs 0.95x fixed (scripts/bench_batch.py
    --live 60 --lines 0, one run each)."""
    return os.cpu_count() or 1


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="spillgate engine llamacpp",
        description="Serve one GGUF model over the OpenAI protocol with continuous batching.")
    parser.add_argument("--model-path", type=Path, required=True, help="GGUF file to serve.")
    parser.add_argument("--served-name", required=True, help="Model name clients must send.")
    parser.add_argument("--host", default="127.0.0.1", help="Listen address.")
    parser.add_argument("--chat-template-file", type=Path,
                        help="Jinja chat template replacing the GGUF's own (e.g. one that "
                             "renders `tools`).")
    parser.add_argument("--port", type=int, default=8081, help="Listen port.")
    parser.add_argument("--n-ctx", type=int, default=2048,
                        help="Context window of each sequence (prompt + completion tokens).")
    parser.add_argument("--n-threads", type=int, default=default_threads(),
                        help="CPU threads for llama.cpp (default: every core).")
    parser.add_argument("--max-batch", type=int, default=4,
                        help="Sequences decoded together (each gets its own KV cache).")
    parser.add_argument("--max-queue", type=int, default=32,
                        help="Requests allowed to wait for a slot before answering 429.")
    # Prefill costs about the same per token from 32-token chunks up, but every running stream
    # waits for the whole chunk: 128 keeps that stall a quarter of 512's
    # (docs/performance-history.md).
    parser.add_argument("--prefill-chunk", type=int, default=128,
                        help="Prompt tokens processed per decode step (bounds stalls).")
    parser.add_argument("--handoff-wait-ms", type=float,
                        help="Longest wait, per decode step, for the HTTP side to take the "
                             "previous step's tokens before decoding again (0: never; "
                             f"default: {HANDOFF_WAIT_MS} ms when --n-threads takes every "
                             "core, else 0).")
    parser.add_argument("--refill-wait-ms", type=float, default=4.0,
                        help="After a request finishes while others decode: longest wait for "
                             "the next request before decoding again, so a client that asks "
                             "again at once joins the next step (0: never; default: 4).")
    parser.add_argument("--adapt-threads", action=argparse.BooleanOptionalAction, default=False,
                        help="Decode with 1 thread instead of --n-threads while that measures "
                             "faster (cores shared with other busy work), trying again now and "
                             "then (default: off; for boxes whose cores other work also uses).")
    parser.add_argument("--reuse-prefix", action=argparse.BooleanOptionalAction, default=True,
                        help="Keep a slot's KV cells after its request, so the next request "
                             "in that slot computes only the part of its prompt past the "
                             "prefix they share (default: on).")
    # Thread by default: on the 2-core reference machine, quiet, the decode process served
    # 64.1 / 71.0 tokens/s at 1 / 4 streams against 71.4 / 80.5 in a thread
    # (docs/performance-history.md).
    parser.add_argument("--weights", choices=weights.CHOICES, default=weights.AUTO,
                        help="Serve the GGUF as it is, or llama.cpp's conversion of it to a "
                             "type with fast batched CPU kernels, made on first start "
                             "(weights.py; scripts/weights_tradeoff.py measures the quality "
                             "and speed of each). Default auto: a small Q4_1/Q5_1 model as "
                             "BF16 where llama.cpp has its AVX-512 BF16 kernel, else as-is.")
    parser.add_argument("--weights-cache", type=Path, default=None,
                        help="Where requantized files are kept (default: "
                             "$SPILLGATE_WEIGHTS_CACHE or ~/.cache/spillgate/weights).")
    parser.add_argument("--decoder", choices=("process", "thread"), default="thread",
                        help="Where the decode loop runs: a thread of this process (default) "
                             "or a process of its own (the HTTP side cannot hold up decoding; "
                             "for boxes with cores to spare for the HTTP side).")
    args = parser.parse_args(argv)
    if args.handoff_wait_ms is None:
        every_core = args.n_threads >= (os.cpu_count() or 1)
        args.handoff_wait_ms = HANDOFF_WAIT_MS if every_core else 0.0
    for name in ("handoff_wait_ms", "refill_wait_ms"):
        if not 0 <= getattr(args, name) <= 100:
            parser.error(f"--{name.replace('_', '-')} must be between 0 and 100")
    for name in ("n_ctx", "n_threads", "max_batch", "max_queue", "prefill_chunk"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    return args


def build(args: argparse.Namespace) -> tuple[Engine, DecodeLoop]:
    """Load the model (seconds) and wire engine and decode loop together. With `--decoder
    process` this process keeps only the vocabulary; the child loads the weights."""
    shape = ContextShape(n_ctx=args.n_ctx, n_seq=args.max_batch,
                         n_batch=args.prefill_chunk + args.max_batch, n_threads=args.n_threads)
    in_process = args.decoder == "thread"
    path = weights.prepared(args.model_path, args.weights,
                            args.weights_cache or weights.default_cache_dir())
    model = LlamaModel(path, shape, context=in_process)
    source = model.metadata("tokenizer.chat_template")
    if args.chat_template_file is not None:
        try:
            source = args.chat_template_file.read_text()
        except OSError as exc:
            model.close()
            raise ConfigError(f"--chat-template-file: {exc}") from exc
    template = ChatTemplate(source,
                            bos_token=model.token_text(model.bos_token),
                            eos_token=model.token_text(model.eos_token))
    config = SchedulerConfig(
        max_batch=args.max_batch, max_queue=args.max_queue, prefill_chunk=args.prefill_chunk,
        handoff_wait_s=args.handoff_wait_ms / 1000, adapt_threads=args.adapt_threads,
        reuse_prefix=args.reuse_prefix, refill_wait_s=args.refill_wait_ms / 1000)
    scheduler: DecodeLoop
    if in_process:
        metrics = EngineMetrics(queue_capacity=args.max_queue, max_batch=args.max_batch)
        scheduler = Scheduler(model, metrics, config)
    else:
        scheduler = DecoderProcess(DecoderSpec(path, shape, config),
                                   handoff=args.handoff_wait_ms > 0)
        try:
            scheduler.launch()
        except ConfigError:
            model.close()
            raise
    engine = Engine(served_name=args.served_name, model=model, template=template,
                    n_ctx=args.n_ctx)
    return engine, scheduler


def run(argv: list[str]) -> int:
    """Entry point of `spillgate engine llamacpp`; returns the process exit status."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    # llama.cpp's own log is very chatty at load time; keep its errors only.
    logging.getLogger("llama-cpp-python").setLevel(logging.ERROR)
    args = parse_args(argv)
    try:
        bind_to_parent(watch_stdin=True)  # before the model loads: never outlive the gateway
    except ParentGone as exc:
        print(f"spillgate engine: {exc}", file=sys.stderr)
        return 1
    try:
        engine, scheduler = build(args)
    except ConfigError as exc:
        print(f"spillgate engine: {exc}", file=sys.stderr)
        return 2
    log.info("serving %s (n_ctx=%d, max_batch=%d, max_queue=%d, threads=%d, decoder=%s) on "
             "%s:%d", args.served_name, args.n_ctx, args.max_batch, args.max_queue,
             args.n_threads, args.decoder, args.host, args.port)
    try:
        uvicorn.run(create_app(engine, scheduler), host=args.host, port=args.port,
                    log_level="warning", access_log=False,
                    http=HeldHeadProtocol,  # a plain answer leaves in one write, head and body
                    # SIGTERM: let short requests end, then cancel the rest (frees their slots)
                    timeout_graceful_shutdown=5)
    finally:
        scheduler.stop()  # idempotent; also when uvicorn never ran the lifespan's shutdown
        if not scheduler.thread_alive:  # never free the context under a running decode
            engine.model.close()
    return 0
