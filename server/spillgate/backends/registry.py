"""Build every backend (and the supervisors of launched engines) from the configuration."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field

from spillgate.backends.base import Backend, Supervisor
from spillgate.backends.embedding import InProcessSupervisor, LocalEmbeddingBackend
from spillgate.backends.http import Timeouts
from spillgate.backends.openai_compat import OpenAICompatBackend
from spillgate.backends.reliability import CircuitBreaker
from spillgate.backends.supervisor import EngineSupervisor
from spillgate.catalog import Catalog, resolve_gguf, vllm_max_num_seqs
from spillgate.errors import ConfigError
from spillgate.settings import LocalBackendSettings, ProviderSettings, Settings


@dataclass
class Backends:
    backends: dict[str, Backend] = field(default_factory=dict)
    supervisors: dict[str, Supervisor] = field(default_factory=dict)
    breakers: dict[str, CircuitBreaker] = field(default_factory=dict)
    attempts: dict[str, int] = field(default_factory=dict)
    slots: dict[str, int] = field(default_factory=dict)  # sequences each local engine runs

    async def aclose(self) -> None:
        for supervisor in self.supervisors.values():
            await supervisor.stop()
        for backend in self.backends.values():
            await backend.aclose()


def build_backends(settings: Settings, catalog: Catalog) -> Backends:
    built = Backends()
    for local in settings.local:
        if local.engine == "embeddings":
            _add_embedding_backend(built, local)
            continue
        urls = local.base_urls or [f"http://127.0.0.1:{local.port}/v1"]
        built.backends[local.name] = OpenAICompatBackend(
            local.name, "local", urls,
            timeouts=Timeouts(local.connect_timeout_s, local.read_timeout_s),
            max_connections=local.max_connections,
        )
        command = None if local.base_urls else engine_command(local, catalog)
        built.supervisors[local.name] = EngineSupervisor(
            local.name, [u.removesuffix("/v1") + "/health" for u in urls],
            command=command, port=None if command is None else local.port,
            startup_timeout_s=local.startup_timeout_s,
            unsupported=vllm_unsupported(catalog, local.model) if local.engine == "vllm"
            else frozenset(),
        )
        # A local engine fails over to the next target instead of retrying: retrying a
        # full queue only adds wait, and a restarting engine is tracked by its supervisor
        # (so it has no breaker: one that could never open only cost a lock per call).
        built.attempts[local.name] = 1
        built.slots[local.name] = slot_count(local, catalog)
    for provider in settings.providers:
        built.backends[provider.name] = provider_backend(provider)
        built.breakers[provider.name] = CircuitBreaker(
            provider.breaker_failures, provider.breaker_reset_s
        )
        built.attempts[provider.name] = provider.max_attempts
    return built


def _add_embedding_backend(built: Backends, local: LocalBackendSettings) -> None:
    """The in-process embedding model: no URL, no engine to launch; `max_batch` bounds the
    requests embedding at once (each runs in a worker thread)."""
    built.backends[local.name] = LocalEmbeddingBackend(local.name, local.model)
    built.supervisors[local.name] = InProcessSupervisor(local.name)
    built.attempts[local.name] = 1
    built.slots[local.name] = local.max_batch


def vllm_unsupported(catalog: Catalog, model: str) -> frozenset[str]:
    """vLLM serves JSON modes, logprobs and n itself; `tools` only with a tool-call parser
    (`enable-auto-tool-choice` + `tool-call-parser` in the catalog's vllm_args)."""
    args = {k.replace("_", "-"): v for k, v in catalog.local_model(model).vllm_args.items()}
    if args.get("enable-auto-tool-choice") and args.get("tool-call-parser"):
        return frozenset()
    return frozenset({"tools"})  # routing.features.TOOLS (backends sit below routing)


def slot_count(local: LocalBackendSettings, catalog: Catalog) -> int:
    """Sequences the engine runs at once. A vLLM backend takes the number its launcher passes
    as --max-num-seqs (catalog `vllm_args`, or the chart's engine.maxNumSeqs written here as
    max_batch), never the llama.cpp default of max_batch."""
    if local.engine == "vllm" and "max_batch" not in local.model_fields_set:
        return vllm_max_num_seqs(catalog.local_model(local.model))
    return local.max_batch


def engine_command(local: LocalBackendSettings, catalog: Catalog) -> list[str]:
    model = catalog.local_model(local.model)
    if local.engine != model.engine:
        raise ConfigError(
            f"local.{local.name}.engine: {local.engine} but the catalog says {model.engine}"
        )
    if local.engine == "vllm":
        # Supervised: the gateway reaches it on loopback, so never expose it beyond that.
        return [sys.executable, "-m", "spillgate", "engine", "vllm", "--model", local.model,
                "--host", "127.0.0.1", "--port", str(local.port)]
    gguf = resolve_gguf(model, local.model_path)
    command = [
        sys.executable, "-m", "spillgate.engines.llamacpp",
        "--model-path", str(gguf), "--served-name", local.model,
        "--host", "127.0.0.1", "--port", str(local.port), "--n-ctx", str(local.n_ctx),
        "--max-batch", str(local.max_batch), "--max-queue", str(local.max_queue),
        "--refill-wait-ms", str(local.refill_wait_ms), "--weights", local.weights,
    ]
    if local.n_threads:
        command += ["--n-threads", str(local.n_threads)]
    return command


def provider_backend(provider: ProviderSettings) -> Backend:
    api_key = os.environ.get(provider.api_key_env or "", "") or None
    if provider.api_key_env and api_key is None:
        raise ConfigError(
            f"providers.{provider.name}.api_key_env: environment variable "
            f"{provider.api_key_env} is not set"
        )
    timeouts = Timeouts(provider.connect_timeout_s, provider.read_timeout_s,
                        provider.total_timeout_s)
    if provider.kind == "anthropic":
        from spillgate.backends.anthropic import AnthropicBackend

        return AnthropicBackend(
            provider.name, provider.base_url, api_key or "", timeouts=timeouts,
            max_connections=provider.max_connections,
        )
    return OpenAICompatBackend(
        provider.name, "api", [provider.base_url], timeouts=timeouts,
        max_connections=provider.max_connections, api_key=api_key,
    )
