"""A supervised engine never outlives its gateway, and a taken engine port is said once.

Real processes: the node launching our llama.cpp engine (or, through `spillgate engine vllm`,
a stand-in `vllm` program that execs the fake vLLM server), killed with SIGKILL as the OOM
killer would; and bare processes armed with `bind_to_parent` to check each mechanism alone.
"""

from __future__ import annotations

import os
import signal
import socket
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psutil
import pytest

from spillgate.engines.lifeline import PARENT_PID_ENV
from tests.conftest import run_node
from tests.support import REPO, free_port, process_gone, wait_http

pytestmark = pytest.mark.integration
GONE_WITHIN_S = 30.0  # generous: the engine gets SIGTERM at once, and has a 5 s drain


def _gone(proc: psutil.Process, within_s: float = GONE_WITHIN_S) -> bool:
    return process_gone(proc, within_s, 0.2)


def _engine_of(node_pid: int, marker: str) -> psutil.Process:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        for child in psutil.Process(node_pid).children(recursive=True):
            if marker in " ".join(child.cmdline()):
                return child
        time.sleep(0.2)
    raise AssertionError(f"the node launched no process matching {marker!r}")


def _kill_node_and_check_engine(node_pid: int, engine: psutil.Process, port: int) -> None:
    os.kill(node_pid, signal.SIGKILL)  # the node alone: the engine has its own session
    assert _gone(engine), f"engine {engine.pid} outlived its gateway"
    probe = socket.socket()
    probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    probe.bind(("127.0.0.1", port))  # a new gateway's engine can bind again
    probe.close()


def test_llamacpp_engine_exits_when_its_gateway_is_killed(tmp_path: Path) -> None:
    port = free_port()
    config = {
        "server": {"port": free_port()},
        "local": [{"name": "local-cpu", "model": "smollm2", "port": port, "max_batch": 1}],
        "ledger": {"dsn": f"sqlite+aiosqlite:///{tmp_path}/ledger.db"},
    }
    with run_node(config, tmp_path) as node:
        wait_http(node.base_url.removesuffix("/v1") + "/readyz", timeout_s=180)
        engine = _engine_of(node.popen.pid, "spillgate.engines.llamacpp")
        _kill_node_and_check_engine(node.popen.pid, engine, port)


def _fake_vllm_program(folder: Path) -> Path:
    """A `vllm` on PATH that turns `vllm serve … --port P` into the fake vLLM server."""
    program = folder / "vllm"
    program.write_text(f"#!{sys.executable}\n" + textwrap.dedent("""
        import os, sys
        argv = sys.argv[1:]
        port = argv[argv.index("--port") + 1]
        name = argv[argv.index("--served-model-name") + 1]
        os.execv(sys.executable, [sys.executable, "-m", "spillgate.fakes.vllm",
                                  "--port", port, "--served-name", name])
    """))
    program.chmod(program.stat().st_mode | stat.S_IXUSR)
    return program


def test_vllm_engine_exits_when_its_gateway_is_killed(tmp_path: Path) -> None:
    if (Path(sys.executable).parent / "vllm").exists():
        pytest.skip("a real vLLM is installed next to this interpreter")
    program = _fake_vllm_program(tmp_path)
    port = free_port()
    config = {
        "server": {"port": free_port()},
        "local": [{"name": "gpu", "model": "llama-3.1-8b-instruct-awq", "engine": "vllm",
                   "port": port}],
        "ledger": {"dsn": f"sqlite+aiosqlite:///{tmp_path}/ledger.db"},
    }
    env = {"PATH": f"{program.parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    with run_node(config, tmp_path, env=env) as node:
        wait_http(node.base_url.removesuffix("/v1") + "/readyz", timeout_s=60)
        engine = _engine_of(node.popen.pid, "spillgate.fakes.vllm")
        _kill_node_and_check_engine(node.popen.pid, engine, port)


# --- each mechanism alone, on bare processes ------------------------------------------------
_CHILD = ("import time; from spillgate.engines.lifeline import bind_to_parent; "
          "assert bind_to_parent(watch_stdin={watch}); print('armed', flush=True); "
          "time.sleep(600)")
_PARENT = ("import os, subprocess, sys, time; "
           "child = subprocess.Popen([sys.executable, '-c', sys.argv[1]], stdin={stdin}, "
           "stdout=subprocess.PIPE, env={{**os.environ, {env!r}: str(os.getpid())}}); "
           "child.stdout.readline(); print(child.pid, flush=True); time.sleep(600)")


def _parent_with_child(watch: bool, stdin: str) -> tuple[subprocess.Popen[bytes], int]:
    parent = subprocess.Popen(
        [sys.executable, "-c", _PARENT.format(stdin=stdin, env=PARENT_PID_ENV),
         _CHILD.format(watch=watch)], stdout=subprocess.PIPE, cwd=REPO)
    assert parent.stdout is not None
    return parent, int(parent.stdout.readline())


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_parent_death_signal_alone_stops_the_engine() -> None:
    # stdin is the parent's own (not a lifeline): only the kernel's signal can stop the child.
    parent, child_pid = _parent_with_child(watch=False, stdin="None")
    with parent:
        child = psutil.Process(child_pid)
        parent.send_signal(signal.SIGKILL)
    assert _gone(child)


def test_lifeline_pipe_alone_stops_the_engine() -> None:
    # The parent lives on; only its end of the pipe closes (as the kernel does at its death).
    code = ("import os, subprocess, sys, time; "
            f"child = subprocess.Popen([sys.executable, '-c', sys.argv[1]], stdin=subprocess.PIPE, "
            f"stdout=subprocess.PIPE, env={{**os.environ, {PARENT_PID_ENV!r}: str(os.getpid())}}); "
            "child.stdout.readline(); print(child.pid, flush=True); sys.stdin.readline(); "
            "child.stdin.close(); time.sleep(600)")
    parent = subprocess.Popen([sys.executable, "-c", code, _CHILD.format(watch=True)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, cwd=REPO)
    assert parent.stdin is not None and parent.stdout is not None
    with parent:
        try:
            child = psutil.Process(int(parent.stdout.readline()))
            time.sleep(0.5)
            assert child.is_running() and child.status() != psutil.STATUS_ZOMBIE
            parent.stdin.write(b"close\n")
            parent.stdin.flush()
            assert _gone(child)
        finally:
            parent.kill()


def test_an_engine_whose_gateway_is_already_gone_does_not_start() -> None:
    # A pid that is not the engine's parent (this process): as if the gateway had died and
    # the engine had been reparented before it could arm the parent-death signal.
    env = {**os.environ, PARENT_PID_ENV: str(os.getpid() + 1)}
    result = subprocess.run(
        [sys.executable, "-m", "spillgate.engines.llamacpp", "--model-path", "/nonexistent.gguf",
         "--served-name", "x", "--port", str(free_port())],
        capture_output=True, text=True, timeout=60, env=env, cwd=REPO, stdin=subprocess.DEVNULL)
    assert result.returncode == 1 and "exited before the engine started" in result.stderr


# --- a taken engine port --------------------------------------------------------------------
def test_gateway_says_once_that_the_engine_port_is_taken(tmp_path: Path) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        config = tmp_path / "node.yaml"
        config.write_text(f"server: {{port: {free_port()}}}\n"
                          f"local: [{{name: local-cpu, model: smollm2, port: {port}}}]\n"
                          f"ledger: {{dsn: 'sqlite+aiosqlite:///{tmp_path}/l.db'}}\n")
        result = subprocess.run(
            [sys.executable, "-m", "spillgate", "serve", "--config", str(config)],
            capture_output=True, text=True, timeout=120, cwd=REPO)
    assert result.returncode == 2
    assert f"port {port} is already in use" in result.stderr
    assert "local.local-cpu" in result.stderr
    assert "starting engine" not in result.stderr  # no engine was launched to fail
