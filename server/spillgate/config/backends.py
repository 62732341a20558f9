"""`local:` and `providers:` the engines served here and the paid APIs spilled to."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from spillgate.config.base import StrictModel


class LocalBackendSettings(StrictModel):
    name: str = Field(description="Backend name, shown in x-spillgate-backend and metrics.")
    model: str = Field(description="Served model name (a `local` entry of the catalog).")
    engine: Literal["llamacpp", "vllm", "embeddings"] = Field(
        "llamacpp", description="Engine kind. `embeddings`: the bundled embedding model, served "
        "inside the gateway process (no port, no engine process); it answers /v1/embeddings.",
    )
    base_urls: list[str] = Field(
        default_factory=list,
        description="Attach mode: base URLs (…/v1) of engines already running. Requests go to "
        "the least loaded. Empty means `spillgate serve` launches and supervises the engine.",
    )
    resolve_dns: bool = Field(
        False, description="Attach mode: resolve each base URL's host name to every address it "
        "has (a headless Service lists one per ready pod) and treat each as a replica; "
        "re-resolved every dns_refresh_s as pods come and go."
    )
    dns_refresh_s: float = Field(10.0, gt=0, description="Period of the resolve_dns lookup.")
    port: int = Field(8081, ge=1, le=65535, description="Port for a supervised engine.")
    model_path: str | None = Field(
        None, description="GGUF file overriding the catalog's source (llamacpp only)."
    )
    n_ctx: int = Field(2048, ge=256, description="Context window given to a llama.cpp engine.")
    n_threads: int | None = Field(
        None, ge=1, description="CPU threads (default: every core; fewer on a box shared "
        "with busy processes).")
    max_batch: int = Field(4, ge=1, description="Sequences decoded together (llama.cpp).")
    weights: Literal["auto", "as-is", "q8_0", "q4_0", "q5_0", "iq4_nl", "f16", "bf16"] = Field(
        "auto", description="llama.cpp: serve the GGUF as it is, or its conversion to a type "
        "with fast batched CPU kernels (made on the engine's first start). auto: a small "
        "Q4_1/Q5_1 model as BF16 where the llama.cpp build reports AVX-512 BF16, else as it "
        "is (README, performance, has each type's quality and speed).",
    )
    refill_wait_ms: float = Field(
        4.0, ge=0, le=100, description="llama.cpp: after a request finishes while others "
        "decode, the longest wait for the next request before decoding again, so a client "
        "that asks again at once joins the next step (0: never wait).",
    )
    max_queue: int = Field(32, ge=1, description="Waiting requests before the engine says 429.")
    max_connections: int = Field(256, ge=1, description="HTTP connection pool size.")
    sensitive_priority: bool = Field(
        True, description="Send sensitive requests with `priority: -1` so the engine admits them "
        "before spillable ones (vLLM needs --scheduling-policy priority; the launcher sets it)."
    )
    connect_timeout_s: float = Field(2.0, gt=0, description="Connect timeout to the engine.")
    read_timeout_s: float = Field(120.0, gt=0, description="Max gap between bytes.")
    startup_timeout_s: float = Field(120.0, gt=0, description="Time a new engine has to be ready.")


class ProviderSettings(StrictModel):
    name: str = Field(description="Provider name; paid models are addressed `<name>/<model>`.")
    kind: Literal["openai", "anthropic"] = Field(description="Wire protocol of the API.")
    base_url: str = Field(description="API base URL (operator config only, never from clients).")
    api_key_env: str | None = Field(description="Env var holding the provider's API key.")
    models: list[str] = Field(default_factory=list, description="Upstream model ids offered.")
    max_connections: int = Field(256, ge=1, description="HTTP connection pool size.")
    connect_timeout_s: float = Field(5.0, gt=0, description="Connect timeout.")
    read_timeout_s: float = Field(60.0, gt=0, description="Max gap between bytes.")
    total_timeout_s: float = Field(300.0, gt=0, description="Max duration of one call.")
    max_attempts: int = Field(3, ge=1, le=10, description="Attempts per call (retries + 1).")
    breaker_failures: int = Field(5, ge=1, description="Consecutive failures opening the breaker.")
    breaker_reset_s: float = Field(30.0, gt=0, description="Open time before a half-open probe.")
