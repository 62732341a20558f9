"""The llama.cpp engine's decode process (`--decoder process`; the default is a thread): it
answers as the in-process decode thread does, it never outlives the HTTP process, and when it
dies the engine says so (503 on /health and on requests) instead of hanging. Real processes,
real model."""

from __future__ import annotations

import concurrent.futures
import contextlib
import os
import signal
import time
from pathlib import Path

import httpx
import psutil
import pytest

from tests.integration.test_engine_llamacpp import (
    LONG_PROMPT,
    MODEL,
    assert_error,
    chat,
    events,
    gauge,
)
from tests.support import Proc, bundled_gguf, free_port, process_gone, spawn

pytestmark = pytest.mark.integration
GONE_WITHIN_S = 15.0


def _engine(tmp_path: Path, name: str, *extra: str,
            ) -> contextlib.AbstractContextManager[Proc]:
    port = free_port()
    argv = ["-m", "spillgate.engines.llamacpp", "--model-path", bundled_gguf(),
            "--served-name", MODEL, "--port", str(port), "--max-batch", "2", "--n-ctx", "512",
            "--n-threads", "1", *extra]
    return spawn(argv, tmp_path / f"{name}.log", f"http://127.0.0.1:{port}/v1",
                 f"http://127.0.0.1:{port}/health")



def _decoder_of(engine: Proc) -> psutil.Process:
    """The engine's child running the decode loop (multiprocessing's spawn entry point)."""
    for child in psutil.Process(engine.popen.pid).children():
        if "spawn_main" in " ".join(child.cmdline()):
            return child
    raise AssertionError("the engine started no decode process")


def _gone(proc: psutil.Process, within_s: float = GONE_WITHIN_S) -> bool:
    return process_gone(proc, within_s, 0.1)


def _stream_text(engine: Proc, body: dict[str, object]) -> str:
    with httpx.stream("POST", engine.base_url + "/chat/completions",
                      json={**body, "stream": True}, timeout=120) as response:
        assert response.status_code == 200
        chunks = events(list(response.iter_lines()))
    assert chunks[-1] == "[DONE]"
    return "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks[:-1])


def test_process_and_thread_decoders_give_the_same_greedy_answer(tmp_path: Path) -> None:
    body = chat("Name three colours.", max_tokens=12, temperature=0)
    answers = []
    for mode in ("process", "thread"):
        with _engine(tmp_path, mode, "--decoder", mode) as engine:
            whole = httpx.post(engine.base_url + "/chat/completions", json=body, timeout=120)
            assert whole.status_code == 200
            text = whole.json()["choices"][0]["message"]["content"]
            assert _stream_text(engine, body) == text != ""
            answers.append(text)
    assert answers[0] == answers[1]


def test_decode_process_exits_with_its_http_process(tmp_path: Path) -> None:
    with _engine(tmp_path, "orphan", "--decoder", "process") as engine:
        decoder = _decoder_of(engine)
        os.kill(engine.popen.pid, signal.SIGKILL)  # as the OOM killer would
        engine.popen.wait(10)
        assert _gone(decoder), "the decode process outlived the engine's HTTP process"


def test_a_dead_decode_process_turns_into_503s(tmp_path: Path) -> None:
    with _engine(tmp_path, "dead", "--decoder", "process") as engine:
        root = engine.base_url.removesuffix("/v1")
        assert httpx.get(root + "/health").json()["status"] == "ok"
        decoder = _decoder_of(engine)
        decoder.kill()
        assert _gone(decoder)
        deadline = time.monotonic() + GONE_WITHIN_S
        while (health := httpx.get(root + "/health")).status_code != 503:
            assert time.monotonic() < deadline, "the engine still says it is healthy"
            time.sleep(0.1)
        assert health.json()["status"] == "failed"
        refused = httpx.post(engine.base_url + "/chat/completions", json=chat("Hi"),
                             timeout=10)
        assert_error(refused, 503, "engine_unavailable")


def test_sigterm_to_the_group_lets_a_running_request_finish(tmp_path: Path) -> None:
    """The supervisor signals the engine's whole process group; the decode process must keep
    decoding while the HTTP process drains, not die with the signal."""
    with _engine(tmp_path, "drain", "--decoder", "process") as engine, \
            concurrent.futures.ThreadPoolExecutor(1) as pool:
        # Within uvicorn's 5 s drain even on a loaded machine; long enough to be seen running.
        body = {"model": MODEL, "prompt": LONG_PROMPT, "max_tokens": 32, "temperature": 0}
        reply = pool.submit(httpx.post, engine.base_url + "/completions", json=body,
                            timeout=120)
        deadline = time.monotonic() + 60
        while gauge(engine, "spillgate_engine_requests_running") != 1:
            assert time.monotonic() < deadline, "the request never started decoding"
            time.sleep(0.05)
        os.killpg(engine.popen.pid, signal.SIGTERM)
        answer = reply.result(timeout=60)
        assert answer.status_code == 200, answer.text
        assert answer.json()["usage"]["completion_tokens"] == 32
        assert engine.popen.wait(timeout=30) in (0, -signal.SIGTERM)
