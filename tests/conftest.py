"""Shared fixtures: one llama.cpp engine per test session (loading the model once)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from hypothesis import settings

from tests.pg import ledger_dsn, pg_dsn  # noqa: F401  (fixtures: SQLite and PostgreSQL)
from tests.support import REPO, Proc, bundled_gguf, free_port, spawn, wait_http, write_config

# Engines started by tests (and the nodes that supervise them) keep converted weights in the
# checkout's var/, made once per checkout, never in the user's home (`weights: auto`).
os.environ.setdefault("SPILLGATE_WEIGHTS_CACHE", str(REPO / "var" / "weights-cache"))

# CI replays one fixed sequence of generated examples, so whether a change lands never hinges
# on a lucky or unlucky draw; every other run explores new examples, and what they find is
# kept as a named regression test (see tests/unit/test_sensitivity_encodings.py).
settings.register_profile("ci", derandomize=True, print_blob=True)
if os.environ.get("CI"):
    settings.load_profile("ci")


@pytest.fixture(scope="session")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proc]:
    """Our llama.cpp engine with the bundled SmolLM2 model, on a free loopback port."""
    port = free_port()
    log = Path(tmp_path_factory.mktemp("engine")) / "engine.log"
    argv = ["-m", "spillgate.engines.llamacpp", "--model-path", bundled_gguf(),
            "--served-name", "smollm2", "--port", str(port), "--max-batch", "4",
            "--max-queue", "16", "--n-ctx", "2048"]
    with spawn(argv, log, f"http://127.0.0.1:{port}/v1",
               f"http://127.0.0.1:{port}/health") as proc:
        yield proc


def _fake(tmp: Path, name: str) -> contextlib.AbstractContextManager[Proc]:
    port = free_port()
    return spawn(["-m", "spillgate.fakes.provider", "--port", str(port)], tmp / f"{name}.log",
                 f"http://127.0.0.1:{port}", f"http://127.0.0.1:{port}/health")


@pytest.fixture(scope="session")
def paid_fake(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proc]:
    """The recording, fault-injecting fake OpenAI + Anthropic API, as its own process."""
    with _fake(tmp_path_factory.mktemp("paid"), "paid") as proc:
        yield proc


@pytest.fixture(scope="session")
def local_fake(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proc]:
    """A second fake standing in for a local engine, so tests can saturate or slow it."""
    with _fake(tmp_path_factory.mktemp("localfake"), "local") as proc:
        yield proc


@pytest.fixture
def fakes(paid_fake: Proc, local_fake: Proc) -> tuple[Proc, Proc]:
    """(local, paid) fakes with recordings and faults cleared."""
    for fake in (paid_fake, local_fake):
        httpx.delete(fake.base_url + "/_fake/requests").raise_for_status()
        httpx.delete(fake.base_url + "/_fake/faults").raise_for_status()
    return local_fake, paid_fake


def node_config(engine_url: str, fake_url: str, tmp: Path, **server: object) -> dict[str, object]:
    """A node attached to the session engine, with the fake as OpenAI and Anthropic."""
    return {
        "server": {"port": free_port(), **server},
        "local": [{"name": "local-cpu", "model": "smollm2", "base_urls": [engine_url]},
                  {"name": "local-embed", "model": "wordllama-l2-supercat-256",
                   "engine": "embeddings"}],
        "providers": [
            {"name": "openai", "kind": "openai", "base_url": fake_url + "/v1",
             "api_key_env": "FAKE_OPENAI_KEY", "models": ["gpt-4o-mini"],
             "max_attempts": 3, "breaker_failures": 50},
            {"name": "anthropic", "kind": "anthropic", "base_url": fake_url,
             "api_key_env": "FAKE_ANTHROPIC_KEY", "models": ["claude-3-5-haiku-latest"],
             "max_attempts": 2, "breaker_failures": 50},
        ],
        "routes": [
            {"name": "auto", "policy": "auto", "local": "smollm2",
             "paid": "openai/gpt-4o-mini", "fallbacks": ["anthropic/claude-3-5-haiku-latest"]},
            {"name": "local", "policy": "local", "local": "smollm2"},
        ],
        "ledger": {"dsn": f"sqlite+aiosqlite:///{tmp}/ledger.db"},
    }


NODE_ENV = {"FAKE_OPENAI_KEY": "sk-fake-openai-key-for-tests",
            "FAKE_ANTHROPIC_KEY": "sk-ant-fake-key-for-tests"}


@contextlib.contextmanager
def run_node(config: dict[str, object], tmp: Path, env: dict[str, str] | None = None,
             ) -> Iterator[Proc]:
    path = write_config(tmp / "node.yaml", config)
    port = config["server"]["port"]  # type: ignore[index]
    argv = ["-m", "spillgate", "serve", "--config", str(path)]
    with spawn(argv, tmp / "node.log", f"http://127.0.0.1:{port}/v1",
               f"http://127.0.0.1:{port}/healthz", env={**NODE_ENV, **(env or {})}) as proc:
        yield proc


@pytest.fixture(scope="session")
def node(engine: Proc, paid_fake: Proc, tmp_path_factory: pytest.TempPathFactory,
         ) -> Iterator[Proc]:
    """The real node in front of the real engine and the fake providers."""
    tmp = Path(tmp_path_factory.mktemp("node"))
    with run_node(node_config(engine.base_url, paid_fake.base_url, tmp), tmp) as proc:
        wait_http(proc.base_url.removesuffix("/v1") + "/readyz")
        yield proc
