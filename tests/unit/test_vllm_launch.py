"""`spillgate engine vllm`: command line built from the catalog; dry run needs no vLLM."""

from __future__ import annotations

import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from spillgate.backends.registry import vllm_unsupported
from spillgate.catalog import Catalog
from spillgate.engines import vllm as vllm_engine
from spillgate.engines.vllm import run, vllm_argv
from spillgate.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]
CATALOG = REPO / "models" / "catalog.yaml"


def catalog_entry(name: str) -> dict[str, object]:
    entries = yaml.safe_load(CATALOG.read_text())["local"]
    entry: dict[str, object] = next(e for e in entries if e["name"] == name)
    return entry


def test_argv_from_the_shipped_catalog_entry() -> None:
    entry = catalog_entry("llama-3.1-8b-instruct-awq")
    argv = vllm_argv(entry, host="127.0.0.1", port=8081, served_name="llama-awq",
                     extra=["--max-num-seqs", "64"])
    source = entry["source"]
    assert isinstance(source, dict)
    assert argv[:3] == ["vllm", "serve", source["hf_repo"]]
    pairs = dict(zip(argv[3::2], argv[4::2], strict=False))
    assert pairs["--served-model-name"] == "llama-awq" and pairs["--port"] == "8081"
    args = entry["vllm_args"]
    assert isinstance(args, dict)
    for key, value in args.items():
        if key == "max-num-seqs":  # the command line's value wins over the catalog's
            assert argv.count("--max-num-seqs") == 1
            continue
        if value is True:  # booleans are bare flags, not "--flag True"
            assert f"--{key}" in argv and "True" not in argv
        else:
            assert argv[argv.index(f"--{key}") + 1] == str(value)
    assert argv[-2:] == ["--max-num-seqs", "64"]


def test_value_kinds_and_local_path() -> None:
    entry = {
        "name": "m",
        "source": {"path": "/models/llama", "hf_repo": "ignored/when-path-set"},
        "vllm_args": {"enforce_eager": True, "enable-prefix-caching": False,
                      "limit-mm-per-prompt": {"image": 2}, "api-key": None,
                      "middleware": ["a.B", "c.D"]},
    }
    argv = vllm_argv(entry, host="0.0.0.0", port=1, served_name="m")
    assert argv[2] == "/models/llama"
    assert argv[9:11] == ["--scheduling-policy", "priority"]  # sensitive requests go first
    tail = argv[11:]
    assert tail == ["--enforce-eager", "--no-enable-prefix-caching",
                    "--limit-mm-per-prompt", '{"image":2}', "--middleware", "a.B", "c.D"]


@pytest.mark.parametrize("key", ["port", "served_model_name", "--host"])
def test_reserved_keys_are_refused(key: str) -> None:
    with pytest.raises(ConfigError, match="set by spillgate"):
        vllm_argv({"name": "m", "source": {"hf_repo": "r"}, "vllm_args": {key: 1}},
                  host="h", port=1, served_name="m")


def test_entry_without_source_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"source\.path or source\.hf_repo"):
        vllm_argv({"name": "m", "source": {}}, host="h", port=1, served_name="m")


def test_dry_run_prints_the_command(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(vllm_engine, "in_container", lambda: False)  # a bare host: loopback
    code = run(["--model", "llama-3.1-8b-instruct-fp8", "--catalog", str(CATALOG),
                "--port", "9123", "--dry-run", "--", "--max-num-seqs", "32"])
    assert code == 0
    printed = shlex.split(capsys.readouterr().out)
    assert printed == vllm_argv(catalog_entry("llama-3.1-8b-instruct-fp8"), host="127.0.0.1",
                                port=9123, served_name="llama-3.1-8b-instruct-fp8",
                                extra=["--max-num-seqs", "32"])


def test_dry_run_through_the_cli() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "spillgate", "engine", "vllm", "--model",
         "llama-3.1-8b-instruct-awq", "--dry-run"],
        capture_output=True, text=True, timeout=60, cwd=REPO, check=False,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("vllm serve hugging-quants/")


def test_llamacpp_model_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["--model", "smollm2", "--catalog", str(CATALOG), "--dry-run"]) == 2
    assert "not vllm" in capsys.readouterr().err


def test_missing_vllm_says_how_to_install(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(vllm_engine, "find_vllm", lambda: None)
    assert run(["--model", "llama-3.1-8b-instruct-awq", "--catalog", str(CATALOG)]) == 2
    assert "pip install .[gpu]" in capsys.readouterr().err


def test_container_detection(tmp_path: Path) -> None:
    absent = tmp_path / "no-dockerenv"
    assert not vllm_engine.in_container({}, absent)
    assert vllm_engine.in_container({"KUBERNETES_SERVICE_HOST": "10.0.0.1"}, absent)
    assert vllm_engine.in_container({"SPILLGATE_IN_CONTAINER": "1"}, absent)
    marker = tmp_path / ".dockerenv"
    marker.touch()
    assert vllm_engine.in_container({}, marker)


def _dry_run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> list[str]:
    assert run([*argv, "--catalog", str(CATALOG), "--dry-run"]) == 0
    return shlex.split(capsys.readouterr().out)


def test_in_a_pod_vllm_binds_every_address(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.96.0.1")
    printed = _dry_run(["--model", "llama-3.1-8b-instruct-fp8"], capsys)
    assert printed[printed.index("--host") + 1] == "0.0.0.0"
    printed = _dry_run(["--model", "llama-3.1-8b-instruct-fp8", "--host", "10.1.2.3"], capsys)
    assert printed[printed.index("--host") + 1] == "10.1.2.3"


def test_unknown_flags_pass_through_without_a_separator(
    capsys: pytest.CaptureFixture[str],
) -> None:
    printed = _dry_run(["--model", "llama-3.1-8b-instruct-fp8", "--host", "0.0.0.0",
                        "--max-num-seqs", "128", "--max-num-batched-tokens", "8192",
                        "--enforce-eager"], capsys)
    assert printed[-5:] == ["--max-num-seqs", "128", "--max-num-batched-tokens", "8192",
                            "--enforce-eager"]
    assert printed.count("--max-num-seqs") == 1  # overrides the catalog's 256


def test_max_num_seqs_is_always_passed(capsys: pytest.CaptureFixture[str]) -> None:
    entry = {"name": "m", "source": {"hf_repo": "r"}, "vllm_args": {}}
    argv = vllm_engine.with_max_num_seqs(vllm_argv(entry, host="h", port=1, served_name="m"),
                                         256)
    assert argv[-2:] == ["--max-num-seqs", "256"]
    printed = _dry_run(["--model", "llama-3.1-8b-instruct-awq", "--host", "h"], capsys)
    catalog_value = catalog_entry("llama-3.1-8b-instruct-awq")["vllm_args"]
    assert isinstance(catalog_value, dict)
    assert printed[printed.index("--max-num-seqs") + 1] == str(catalog_value["max-num-seqs"])


def test_reserved_flag_in_passthrough_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    code = run(["--model", "llama-3.1-8b-instruct-fp8", "--catalog", str(CATALOG), "--dry-run",
                "--", "--served-model-name", "other"])
    assert code == 2 and "set by spillgate" in capsys.readouterr().err


@pytest.mark.parametrize("name", ["llama-3.1-8b-instruct-awq", "llama-3.1-8b-instruct-fp8"])
def test_catalog_vllm_entries_serve_tools(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    printed = _dry_run(["--model", name, "--host", "h"], capsys)
    assert "--enable-auto-tool-choice" in printed
    assert printed[printed.index("--tool-call-parser") + 1] == "llama3_json"
    assert vllm_unsupported(Catalog.load(CATALOG), name) == frozenset()


def test_vllm_without_a_tool_parser_declares_tools_unsupported(tmp_path: Path) -> None:
    catalog = tmp_path / "catalog.yaml"
    catalog.write_text(yaml.safe_dump({"local": [{
        "name": "m", "engine": "vllm", "quantization": "fp16", "context_length": 4096,
        "license": "x", "source": {"hf_repo": "r"}, "vllm_args": {"max-num-seqs": 8}}]}))
    assert vllm_unsupported(Catalog.load(catalog), "m") == frozenset({"tools"})
