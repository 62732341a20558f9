"""`spillgate serve` launches its engine, restarts it when it dies, answers 503 meanwhile;
and refuses insecure start-ups."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import psutil
import pytest

from tests.conftest import run_node
from tests.support import REPO, free_port, wait_http

pytestmark = pytest.mark.integration


def _engine_child(node_pid: int) -> psutil.Process:
    for child in psutil.Process(node_pid).children(recursive=True):
        if "spillgate.engines.llamacpp" in " ".join(child.cmdline()):
            return child
    raise AssertionError("the node did not launch a llama.cpp engine")


def test_supervised_engine_is_restarted_and_local_requests_get_503_meanwhile(
    tmp_path: Path,
) -> None:
    config = {
        "server": {"port": free_port()},
        "local": [{"name": "local-cpu", "model": "smollm2", "port": free_port(),
                   "max_batch": 2}],
        "ledger": {"dsn": f"sqlite+aiosqlite:///{tmp_path}/ledger.db"},
    }
    with run_node(config, tmp_path) as node:
        root = node.base_url.removesuffix("/v1")
        wait_http(root + "/readyz", timeout_s=120)
        body = {"model": "local", "max_tokens": 4,
                "messages": [{"role": "user", "content": "hi"}]}
        assert httpx.post(node.base_url + "/chat/completions", json=body,
                          timeout=60).status_code == 200
        first = _engine_child(node.popen.pid)
        first.send_signal(signal.SIGKILL)
        first.wait(10)
        refused = httpx.post(node.base_url + "/chat/completions", json=body, timeout=60)
        assert refused.status_code == 503
        assert refused.json()["error"]["code"] == "local_unavailable"
        assert "retry-after" in refused.headers
        wait_http(root + "/readyz", timeout_s=120)
        assert _engine_child(node.popen.pid).pid != first.pid
        again = httpx.post(node.base_url + "/chat/completions", json=body, timeout=60)
        assert again.status_code == 200
    assert not psutil.pid_exists(first.pid) or first.status() == psutil.STATUS_ZOMBIE


def _serve(config: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "spillgate", "serve", "--config", str(config)],
        capture_output=True, text=True, timeout=60, cwd=REPO,
        env={k: v for k, v in {**os.environ, **env}.items() if k != "SPILLGATE_API_KEYS"},
    )


def test_non_loopback_without_keys_refuses_to_start(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(f"server: {{host: 0.0.0.0, port: {free_port()}}}\n")
    result = _serve(config, {})
    assert result.returncode == 2
    assert "server.host" in result.stderr and "SPILLGATE_API_KEYS" in result.stderr


def test_bad_config_names_the_field(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("server: {port: not-a-port}\n")
    result = _serve(config, {})
    assert result.returncode == 2 and "server.port" in result.stderr


def test_keys_are_enforced_when_configured(engine: object, tmp_path: Path) -> None:
    engine_url = engine.base_url  # type: ignore[attr-defined]
    config = {
        "server": {"port": free_port()},
        "local": [{"name": "local-cpu", "model": "smollm2", "base_urls": [engine_url]}],
        "ledger": {"dsn": f"sqlite+aiosqlite:///{tmp_path}/ledger.db"},
    }
    with run_node(config, tmp_path, env={"SPILLGATE_API_KEYS": "sk-test-key-0123456789"}) \
            as node:
        url = node.base_url + "/models"
        assert httpx.get(url).status_code == 401
        assert httpx.get(url, headers={"authorization": "Bearer wrong"}).status_code == 401
        ok = httpx.get(url, headers={"authorization": "Bearer sk-test-key-0123456789"})
        assert ok.status_code == 200
        assert httpx.get(node.base_url.removesuffix("/v1") + "/healthz").status_code == 200
