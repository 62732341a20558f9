"""`spillgate engine vllm`: launch vLLM's own OpenAI server for a catalog model.

vLLM is not re-implemented or wrapped: this builds the `vllm serve` command line from the
catalog entry (weights from `source.path`, else the pre-fetched `source.hf_repo`; tuning from
`vllm_args`) and replaces this process with it, so the supervisor's signals reach vLLM itself.

`vllm_args` mapping → flags: `key: value` → `--key value`; `true` → bare `--key`; `false` →
`--no-key` (vLLM's boolean options accept the negated form); a list → `--key a b`; a mapping →
`--key '<json>'`; `null` → left out. Host, port, model and served name are ours to set.

Flags this launcher does not know are passed through to `vllm serve` as written (so a Helm
`extraArgs` list works with or without a `--` separator). `--max-num-seqs` is always passed:
the gateway sizes its admission from the same number (`catalog.vllm_max_num_seqs`).

The bind address defaults to 0.0.0.0 inside a container (Kubernetes sets
KUBERNETES_SERVICE_HOST in every pod; Docker writes /.dockerenv), where the kubelet's probes
and the Service reach the pod from outside its network namespace; elsewhere to 127.0.0.1.

    spillgate engine vllm --model llama-3.1-8b-instruct-awq [--catalog PATH] [--port 8081]
                          [--host ADDR] [--dry-run] [extra vllm flags]
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from spillgate.catalog import Catalog, vllm_max_num_seqs
from spillgate.engines.lifeline import ParentGone, bind_to_parent
from spillgate.errors import ConfigError
from spillgate.settings import repo_models_dir

RESERVED = frozenset({"host", "port", "model", "served-model-name", "scheduling-policy"})
INSTALL_HINT = "vLLM is not installed: pip install .[gpu]  (needs a CUDA GPU)"


def _flag(key: str) -> str:
    return "--" + key.strip().lstrip("-").replace("_", "-")


def _option(key: str, value: Any) -> list[str]:
    flag = _flag(key)
    if value is None:
        return []
    if isinstance(value, bool):
        return [flag] if value else ["--no-" + flag[2:]]
    if isinstance(value, Mapping):
        return [flag, json.dumps(value, separators=(",", ":"))]
    if isinstance(value, list | tuple):
        return [flag, *(str(v) for v in value)]
    return [flag, str(value)]


def model_source(catalog_entry: Mapping[str, Any]) -> str:
    source = catalog_entry.get("source") or {}
    if source.get("path"):
        return str(Path(str(source["path"])).expanduser())
    if source.get("hf_repo"):
        return str(source["hf_repo"])
    name = catalog_entry.get("name", "?")
    raise ConfigError(f"model {name!r}: a vLLM model needs source.path or source.hf_repo")


def vllm_argv(
    catalog_entry: Mapping[str, Any],
    *,
    host: str,
    port: int,
    served_name: str,
    extra: Sequence[str] = (),
) -> list[str]:
    """`vllm serve …` for one catalog entry (the first element is the program name `vllm`)."""
    # Priority scheduling lets the gateway put sensitive requests (which cannot spill) ahead
    # of spillable ones in the engine's queue (request field `priority`, lower first).
    argv = ["vllm", "serve", model_source(catalog_entry), "--served-model-name", served_name,
            "--host", host, "--port", str(port), "--scheduling-policy", "priority"]
    # A flag given on the command line (Helm extraArgs, maxNumSeqs) overrides the catalog's.
    overridden = {a.split("=", 1)[0] for a in extra if a.startswith("--")}
    for key, value in (catalog_entry.get("vllm_args") or {}).items():
        if _flag(str(key))[2:] in RESERVED:
            raise ConfigError(
                f"model {catalog_entry.get('name', '?')!r}: vllm_args.{key} is set by spillgate"
            )
        if _flag(str(key)) not in overridden:
            argv += _option(str(key), value)
    reserved = {_flag(k) for k in RESERVED}
    clash = [a for a in extra if a.split("=", 1)[0] in reserved]
    if clash:
        raise ConfigError(f"extra vLLM flag {clash[0]} is set by spillgate; use its own option")
    return argv + list(extra)


def with_max_num_seqs(command: Sequence[str], default: int) -> list[str]:
    """The command with `--max-num-seqs` added when neither the catalog nor the extra flags
    set it: vLLM's own default varies by version and GPU, the gateway's slot count must not."""
    if any(a.split("=", 1)[0] == "--max-num-seqs" for a in command):
        return list(command)
    return [*command, "--max-num-seqs", str(default)]


def in_container(environ: Mapping[str, str] = os.environ,
                 dockerenv: Path = Path("/.dockerenv")) -> bool:
    """True inside a Kubernetes pod or a Docker container (SPILLGATE_IN_CONTAINER=1 forces it)."""
    if environ.get("SPILLGATE_IN_CONTAINER") in ("1", "true"):
        return True
    return bool(environ.get("KUBERNETES_SERVICE_HOST")) or dockerenv.exists()


def default_host() -> str:
    return "0.0.0.0" if in_container() else "127.0.0.1"


def find_vllm() -> str | None:
    """The `vllm` program next to this interpreter (same venv) or on PATH."""
    beside = Path(sys.executable).parent / "vllm"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    return shutil.which("vllm")


def _parser() -> argparse.ArgumentParser:
    # allow_abbrev=False: a vLLM flag that starts like one of ours (`--port-…`) must pass
    # through untouched rather than be taken for ours.
    p = argparse.ArgumentParser(prog="spillgate engine vllm", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                allow_abbrev=False)
    p.add_argument("--model", required=True, help="local model name in the catalog")
    p.add_argument("--catalog", type=Path, help="catalog.yaml (default: models/catalog.yaml)")
    p.add_argument("--host", default=None,
                   help="address vLLM binds (default: 0.0.0.0 in a container, else 127.0.0.1)")
    p.add_argument("--port", type=int, default=8081, help="port vLLM listens on")
    p.add_argument("--served-name", help="model name clients send (default: --model)")
    p.add_argument("--dry-run", action="store_true", help="print the command and exit")
    return p


def run(argv: list[str]) -> int:
    """Entry point of `spillgate engine vllm`; execs vLLM (returns only on error or dry run)."""
    extra: list[str] = []
    if "--" in argv:
        cut = argv.index("--")
        argv, extra = argv[:cut], argv[cut + 1:]
    args, unknown = _parser().parse_known_args(argv)
    extra = unknown + extra
    try:
        catalog = Catalog.load(args.catalog or repo_models_dir() / "catalog.yaml")
        model = catalog.local_model(args.model)
        if model.engine != "vllm":
            raise ConfigError(f"model {model.name!r} runs on {model.engine}, not vllm")
        entry = {"name": model.name, "source": model.source, "vllm_args": model.vllm_args}
        command = with_max_num_seqs(
            vllm_argv(entry, host=args.host or default_host(), port=args.port,
                      served_name=args.served_name or model.name, extra=extra),
            vllm_max_num_seqs(model))
    except ConfigError as exc:
        print(f"spillgate: {exc}", file=sys.stderr)
        return 2
    if args.dry_run:
        print(shlex.join(command))
        return 0
    program = find_vllm()
    if program is None:
        print(f"spillgate: {INSTALL_HINT}", file=sys.stderr)
        return 2
    try:
        bind_to_parent(watch_stdin=False)  # the parent-death signal survives the exec
    except ParentGone as exc:
        print(f"spillgate: {exc}", file=sys.stderr)
        return 1
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(program, [program, *command[1:]])  # noqa: S606 (an argv list, no shell)
    return 0  # not reached: execv replaces the process
