"""Node configuration: one pydantic-settings model, loaded from YAML with env overrides.

Precedence (highest first): environment variables (`SPILLGATE_` prefix, `__` between nested
names, e.g. `SPILLGATE_SERVER__PORT=9000`), then the YAML file given to `spillgate serve
--config`, then the defaults below. Secrets are never written in the file: the file names the
environment variable that holds each one.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import re
import warnings
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from spillgate.errors import ConfigError

PLACEHOLDER_SECRETS = frozenset({"changeme", "change-me", "secret", "password", "sk-xxx", ""})
# Keys are bearer secrets compared in full: 16 characters is the least that cannot be
# guessed online, and it refuses the "x", "test", "sk-1" kind of key left in from a demo.
MIN_KEY_LENGTH = 16
# Words and shapes of a key copied from documentation. None can occur in a generated key
# (url-safe base64 or hex has no `<`, `$` or `.`; a word of 5+ letters is vanishingly rare).
_PLACEHOLDER = re.compile(
    r"change[-_ ]?me|replace[-_ ]?me|placeholder|your[-_ ]?(api[-_ ]?)?key|example|dummy"
    r"|<[^>]*>|\$\{[^}]*\}|\.\.\.", re.IGNORECASE)
_ONE_CHARACTER = re.compile(r"([a-z]{2,3}-)?(.)\2*", re.IGNORECASE)  # sk-xxxxxxxx, 00000000


def repo_models_dir() -> Path:
    """models/ of a source checkout (editable install), else ./models."""
    here = Path(__file__).resolve().parents[2] / "models"
    return here if here.is_dir() else Path("models")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ServerSettings(_Strict):
    host: str = Field("127.0.0.1", description="Address to bind. Non-loopback needs an API key.")
    port: int = Field(8000, ge=1, le=65535, description="TCP port of the OpenAI-compatible API.")
    api_keys_env: str | None = Field(
        "SPILLGATE_API_KEYS",
        description="Env var holding comma-separated static client bearer keys. Unset or empty "
        "means no static keys (allowed only on loopback).",
    )
    admin_key_env: str = Field(
        "SPILLGATE_ADMIN_KEY", description="Env var holding the admin API bearer key."
    )
    max_body_bytes: int = Field(
        1 << 20, ge=1024, description="Request bodies larger than this are refused with 413."
    )
    default_max_tokens: int = Field(
        256, ge=1, description="max_tokens inserted when a request has none."
    )
    max_tokens_ceiling: int = Field(4096, ge=1, description="max_tokens is clamped to this.")
    max_n: int = Field(4, ge=1, description="`n` (choices per request) is clamped to this.")
    max_top_logprobs: int = Field(5, ge=0, description="`top_logprobs` is clamped to this.")
    log_level: Literal["debug", "info", "warning", "error"] = Field(
        "info", description="Log level. Prompts and completions are never logged at any level."
    )
    allow_anonymous_loopback: bool | None = Field(
        None, description="Requests without a valid key on a loopback bind with no static "
        "keys. Unset: allowed until the first virtual key exists, then refused (so a client "
        "cannot drop its key to escape the key's budget or local_only). true: always allowed; "
        "false: never.",
    )
    metrics_key_env: str | None = Field(
        None, description="Env var holding a bearer key that GET /metrics then requires. "
        "Unset: /metrics is open (scrape it from inside the cluster only).",
    )
    metrics_key_ids: bool = Field(
        False, description="Label per-key metrics (remaining budget) with virtual key ids. "
        "Off: those series are left out of /metrics.",
    )
    max_header_bytes: int = Field(
        64 * 1024, ge=1024, description="Request line and headers larger than this get 431 "
        "and the connection is closed, before anything is buffered further.",
    )
    max_headers: int = Field(
        100, ge=8, description="More header fields than this in one request get 431."
    )
    header_timeout_s: float = Field(
        10.0, gt=0, description="A connection must deliver a request's complete headers "
        "within this many seconds of its first byte (or of connecting), else it is closed "
        "(slow-header attacks).",
    )


class LocalBackendSettings(_Strict):
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
    max_queue: int = Field(32, ge=1, description="Waiting requests before the engine says 429.")
    max_connections: int = Field(256, ge=1, description="HTTP connection pool size.")
    sensitive_priority: bool = Field(
        True, description="Send sensitive requests with `priority: -1` so the engine admits them "
        "before spillable ones (vLLM needs --scheduling-policy priority; the launcher sets it)."
    )
    connect_timeout_s: float = Field(2.0, gt=0, description="Connect timeout to the engine.")
    read_timeout_s: float = Field(120.0, gt=0, description="Max gap between bytes.")
    startup_timeout_s: float = Field(120.0, gt=0, description="Time a new engine has to be ready.")


class ProviderSettings(_Strict):
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


class CascadeSettings(_Strict):
    """`policy: cascade`: the local model drafts, its token log-probabilities decide."""

    signal: Literal["mean_logprob", "min_logprob", "first_k_logprob"] = Field(
        "mean_logprob", description="Confidence of a draft: the mean, the minimum, or the "
        "mean over the first `first_k` tokens of its token log-probabilities.",
    )
    threshold: float = Field(
        -1.0, le=0, description="Keep the draft when its confidence is at least this "
        "(a log-probability, <= 0); escalate to the paid model otherwise. Tune it with "
        "`spillgate eval cascade` on your own data.",
    )
    first_k: int = Field(8, ge=1, description="Tokens the first_k_logprob signal averages.")
    stream: Literal["local", "buffer"] = Field(
        "local", description="Streams on a cascade route: `local` streams the local model "
        "without a cascade; `buffer` drafts in full, then sends the kept draft or the paid "
        "answer as one buffered stream (no early first token).",
    )


class ArmSettings(_Strict):
    """One arm of a canary split: a name, a weight, and what it changes on the route."""

    name: str = Field(min_length=1, max_length=64, description="Tagged on each ledger row.")
    weight: float = Field(gt=0, description="Share of traffic (relative to the other arms).")
    policy: Literal["local", "api", "auto", "cascade"] | None = Field(
        None, description="Overrides the route's policy.")
    local: str | None = Field(None, description="Overrides the route's local model.")
    paid: str | None = Field(None, description="Overrides the route's paid model.")
    fallbacks: list[str] | None = Field(None, description="Overrides the paid fallbacks.")
    cascade: CascadeSettings | None = Field(None, description="Overrides cascade settings.")


class RouteSettings(_Strict):
    name: str = Field(description="The `model` a client sends to use this route.")
    policy: Literal["local", "api", "auto", "cascade"] = Field(
        description="local: local only; api: the paid model; auto: local first, spill when "
        "the local tier cannot serve in time; cascade: the local model drafts and the paid "
        "model answers when the draft is unsure (`cascade`)."
    )
    local: str | None = Field(None, description="Local model served by this route.")
    paid: str | None = Field(None, description="Paid model `<provider>/<model>` to spill to.")
    fallbacks: list[str] = Field(
        default_factory=list, description="Ordered paid models tried when `paid` fails."
    )
    local_only: bool = Field(False, description="Treat every request on this route as sensitive.")
    ttft_slo_ms: float = Field(2000.0, gt=0, description="Time-to-first-token objective.")
    local_deadline_ms: float | None = Field(
        None, gt=0, description="auto routes, streams: a local request with no first token by "
        "then is cancelled and sent to the paid model (before any byte reached the client; "
        "never for sensitive requests). Default: 60% of ttft_slo_ms, leaving the rest for "
        "the paid API's own first token."
    )
    on_budget_exhausted: Literal["local", "reject"] = Field(
        "local", description="With no paid budget left: stay local (and queue) or answer 429."
    )
    router: Path | None = Field(
        None, description="auto routes: a learned dispatcher (`spillgate router train`) that "
        "sends the prompts it scores hardest to the paid model (reason router_paid) and the "
        "rest local (router_local); overflow and sensitivity still apply."
    )
    paid_share: float | None = Field(
        None, gt=0, lt=1, description="With `router`: the share of the router's training "
        "prompts that score above the threshold (calibrated when it was trained)."
    )
    threshold: float | None = Field(
        None, ge=0, le=1, description="With `router`: a raw score threshold instead of "
        "paid_share (scores above it go to the paid model)."
    )
    cascade: CascadeSettings = Field(
        default_factory=CascadeSettings, description="policy cascade: signal and threshold.")
    arms: list[ArmSettings] = Field(
        default_factory=list, description="Canary: split the route's traffic between arms "
        "by a stable hash of `x-spillgate-arm-key` (else the API key); each row is tagged.")
    cache: Literal["off", "exact", "semantic"] = Field(
        "off", description="Response cache of this route (chat completions): off; exact "
        "repeats only; or exact plus guarded paraphrase matches (see the top-level `cache`)."
    )
    cache_temperature: bool = Field(
        False, description="Also cache requests sampled at temperature > 0 (absent means the "
        "API default, 1). Off: only temperature 0 answers are cached."
    )
    cache_tool_calls: bool = Field(
        False, description="Also cache answers that call tools (off: never stored)."
    )

    @model_validator(mode="after")
    def _targets_present(self) -> RouteSettings:
        if self.policy in ("local", "auto", "cascade") and not self.local:
            raise ValueError(f"route {self.name!r}: policy {self.policy} needs `local`")
        if self.policy in ("api", "auto", "cascade") and not self.paid:
            raise ValueError(f"route {self.name!r}: policy {self.policy} needs `paid`")
        if self.router is not None and self.policy != "auto":
            raise ValueError(f"route {self.name!r}: `router` needs policy auto (a local and a "
                             "paid model to choose between)")
        if self.router is not None and (self.paid_share is None) == (self.threshold is None):
            raise ValueError(f"route {self.name!r}: with `router`, set exactly one of "
                             "`paid_share` and `threshold`")
        if self.router is None and (self.paid_share is not None or self.threshold is not None):
            raise ValueError(f"route {self.name!r}: `paid_share` and `threshold` need `router`")
        names = [arm.name for arm in self.arms]
        if len(set(names)) != len(names):
            raise ValueError(f"route {self.name!r}: arm names repeat")
        for arm in self.arms:
            self.arm_settings(arm)  # each arm is a complete route of its own
        return self

    def arm_settings(self, arm: ArmSettings) -> RouteSettings:
        """This route as one of its arms sees it (validated again: an arm may not leave a
        policy without its models)."""
        changes = arm.model_dump(exclude={"name", "weight"}, exclude_none=True)
        return RouteSettings.model_validate({**self.model_dump(), **changes, "arms": []})


# 24 characters: `rule:<name>+<auto reason>+fallback` must fit the ledger's 64-character
# reason column.
_RULE_NAME = r"^[A-Za-z0-9_.-]{1,24}$"


class RuleMatchSettings(_Strict):
    tags: dict[str, str] = Field(
        default_factory=dict, description="x-spillgate-tags the request must carry (all).")
    key_ids: list[str] = Field(default_factory=list, description="Virtual key ids (any).")
    endpoints: list[Literal["chat/completions", "completions", "embeddings"]] = Field(
        default_factory=list, description="Endpoints (any).")
    models: list[str] = Field(default_factory=list, description="`model` asked (any).")
    min_prompt_tokens: int | None = Field(
        None, ge=0, description="Prompt estimate (body bytes / 4) at least this.")
    max_prompt_tokens: int | None = Field(
        None, ge=0, description="Prompt estimate (body bytes / 4) at most this.")
    tools: bool | None = Field(None, description="true: requests with tools; false: without.")


class RuleSettings(_Strict):
    name: str = Field(pattern=_RULE_NAME, description="Shown as reason `rule:<name>`.")
    match: RuleMatchSettings = Field(
        default_factory=RuleMatchSettings, description="Conditions, all of which must hold.")
    tier: Literal["local", "api"] | None = Field(
        None, description="Pin this tier on the asked route.")
    model: str | None = Field(None, description="Pin this model (a route or model name).")

    @model_validator(mode="after")
    def _one_pin(self) -> RuleSettings:
        if (self.tier is None) == (self.model is None):
            raise ValueError(f"rule {self.name!r}: set exactly one of `tier` and `model`")
        low, high = self.match.min_prompt_tokens, self.match.max_prompt_tokens
        if low is not None and high is not None and low > high:
            raise ValueError(f"rule {self.name!r}: min_prompt_tokens exceeds max_prompt_tokens")
        return self


class CacheSettings(_Strict):
    ttl_s: float = Field(3600.0, gt=0, description="Seconds a cached answer may be served.")
    max_entries: int = Field(100_000, ge=1, description="Cached answers kept (all tenants).")
    max_bytes: int = Field(
        256 << 20, ge=1024, description="Bytes of cached answers kept; the least recently "
        "used go first when either bound is reached."
    )
    threshold: float = Field(
        0.905, gt=0, le=1, description="Semantic routes: least cosine similarity of a "
        "paraphrase hit (calibrated in docs/cache-eval.md); a candidate must also pass the "
        "guards (numbers, negation, names, units)."
    )


class LedgerSettings(_Strict):
    dsn: str = Field(
        "sqlite+aiosqlite:///var/spillgate.db",
        description="SQLAlchemy async DSN. SQLite (WAL) for one node; postgresql+asyncpg://… "
        "for several replicas.",
    )
    dsn_env: str | None = Field(None, description="Env var holding the DSN (overrides `dsn`).")
    node_id: str | None = Field(
        None, min_length=1, max_length=128,
        description="This process's name in the shared ledger (its rows, reservations and "
        "hardware periods; start-up recovery closes only its own open rows at once). "
        "Default: the host name. Give each replica on one host its own.",
    )


class TelemetrySettings(_Strict):
    interval_s: float = Field(1.0, gt=0, description="Sampling period of NVML and engine /metrics.")
    stale_after_s: float = Field(5.0, gt=0, description="Older readings count as unknown.")
    nvml: bool = Field(True, description="Read GPU telemetry through NVML when available.")
    dcgm_url: str | None = Field(
        None, description="Kubernetes: NVIDIA DCGM exporter /metrics URL read for GPU "
        "utilization, memory and power instead of local NVML (the gateway pod has no GPU)."
    )
    dcgm_pod_prefix: str = Field(
        "", description="Only GPUs the DCGM exporter attributes to pods whose name starts "
        "with this (the engine pods); empty: every GPU it reports."
    )
    dcgm_namespace: str = Field("", description="Only GPUs of pods in this namespace (if set).")
    min_dwell_s: float = Field(
        5.0, ge=0, description="Overflow hysteresis: least time between two spill-state changes."
    )
    kv_cache_high: float = Field(
        0.9, gt=0, le=1, description="KV-cache usage at which a vLLM backend spills every request."
    )
    headroom: float = Field(
        0.8, gt=0, le=1, description="Share of a route's TTFT objective the admission limit "
        "plans to use (the rest absorbs estimation error)."
    )


class CostSettings(_Strict):
    hardware_profile: str = Field("cpu-node", description="Profile name in hardware.yaml.")
    units: int = Field(
        1, ge=0, description="Units of that profile in this node (GPUs, or CPU nodes). 0 is "
        "refused unless the profile costs nothing.",
    )

    @model_validator(mode="before")
    @classmethod
    def _gpus_alias(cls, data: Any) -> Any:
        """`gpus` was the old name of `units`: accepted, with a warning, never both."""
        if not isinstance(data, dict) or "gpus" not in data:
            return data
        data = dict(data)
        if "units" in data:
            raise ValueError("cost.gpus is the deprecated name of cost.units: set only units")
        warnings.warn("cost.gpus is deprecated: rename it to cost.units", DeprecationWarning,
                      stacklevel=2)
        logging.getLogger(__name__).warning("cost.gpus is deprecated: rename it to cost.units")
        data["units"] = data.pop("gpus")
        return data


class GuardLimits(_Strict):
    limit_usd: Decimal | None = Field(
        None, gt=0, description="Paid spend (USD) within one window that trips the guard.")
    baseline_multiple: Decimal | None = Field(
        None, gt=1, description="Trip when one window's spend exceeds this multiple of the "
        "trailing baseline (the mean spend per window over the baseline_windows before it).")


class SpendGuardSettings(_Strict):
    """A circuit breaker on paid spend: when it trips, `auto` routes stay local."""

    window_s: float = Field(60.0, gt=0, description="Sliding window the spend is summed over.")
    baseline_windows: int = Field(
        10, ge=1, description="Windows before the current one that make the trailing baseline.")
    min_usd: Decimal = Field(
        Decimal(0), ge=0, description="A window spending less than this never trips the baseline "
        "rule (a cent after a silent hour is no spike).")
    cooldown_s: float = Field(
        300.0, gt=0, description="Least time the guard stays open; it closes after that once "
        "the window's spend is back under the limits.")
    fallback: Literal["reject", "local"] = Field(
        "reject", description="While open, requests on paid-only routes: reject (429 "
        "spend_guard_open) or serve them from the route's `local` model when it names one.")
    node: GuardLimits = Field(default_factory=GuardLimits,
                              description="Limits on the whole node's paid spend.")
    per_key: GuardLimits = Field(default_factory=GuardLimits,
                                 description="The same limits applied to each key's spend.")

    @model_validator(mode="after")
    def _floor_with_baseline(self) -> SpendGuardSettings:
        if (self.node.baseline_multiple or self.per_key.baseline_multiple) and not self.min_usd:
            raise ValueError("spend_guard.min_usd: set a floor (USD per window) with "
                             "baseline_multiple; a quiet start is a baseline of zero, so any "
                             "spend would trip the guard")
        return self


class AlertSettings(_Strict):
    budget_thresholds: list[float] = Field(
        default_factory=lambda: [0.8, 1.0], description="Shares of a key's daily and monthly "
        "budget that raise an alert (gauge, webhook) when used (spent or reserved).")
    webhook_url_env: str | None = Field(
        None, description="Env var holding a URL that alert events are POSTed to as JSON "
        "(retried with backoff, off the request path). Unset: gauges only.")
    webhook_queue: int = Field(256, ge=1, description="Alert events waiting to be sent; "
                               "more are dropped (and logged), never blocking a request.")
    webhook_attempts: int = Field(5, ge=1, le=20, description="Tries per event.")

    @model_validator(mode="after")
    def _shares(self) -> AlertSettings:
        if any(not 0 < t <= 10 for t in self.budget_thresholds):
            raise ValueError("alerts.budget_thresholds: each share must be in (0, 10]")
        return self


class BatchSettings(_Strict):
    """The Batch API (/v1/files, /v1/batches): work run on idle local capacity."""

    enabled: bool = Field(True, description="Serve /v1/files and /v1/batches and run batches.")
    max_file_bytes: int = Field(
        50 * 1024 * 1024, ge=1, description="Largest JSONL file POST /v1/files accepts."
    )
    max_lines: int = Field(50_000, ge=1, description="Most requests in one batch input file.")
    concurrency: int = Field(
        1, ge=1, le=64, description="Batch lines in flight at once (1-2 on a CPU engine)."
    )
    live_inflight_max: int = Field(
        0, ge=0, description="Batch lines start only while live (non-batch) requests in "
        "flight on the local engines are at most this many.",
    )
    poll_s: float = Field(
        0.02, gt=0, description="How often the scheduler looks at live load (backs off "
        "within this time)."
    )
    resume_after_s: float = Field(
        1.0, ge=0, description="Live load must have been below the limit this long before "
        "batch lines start again.",
    )
    preempt: bool = Field(
        True, description="Cancel running batch lines (retried later) when live load returns."
    )
    max_failures: int = Field(
        5, ge=1, description="Retryable failures (429, 5xx) before a line goes to the error file."
    )
    spill_margin_s: float = Field(
        3600.0, ge=0, description="A batch whose metadata allows spilling may send its "
        "non-sensitive lines to paid APIs this long before its window expires.",
    )


class Settings(BaseSettings):
    """Everything the node needs, validated once at start-up."""

    model_config = SettingsConfigDict(
        env_prefix="SPILLGATE_", env_nested_delimiter="__", extra="forbid", frozen=True
    )

    server: ServerSettings = Field(default_factory=ServerSettings, description="API server.")
    models_dir: Path = Field(
        default_factory=repo_models_dir,
        description="Folder holding catalog.yaml, pricing.yaml and hardware.yaml.",
    )
    local: list[LocalBackendSettings] = Field(
        default_factory=lambda: [
            LocalBackendSettings(name="local-cpu", model="smollm2"),
            LocalBackendSettings(name="local-embed", model="wordllama-l2-supercat-256",
                                 engine="embeddings"),
        ],
        description="Local engines (supervised or attached).",
    )
    providers: list[ProviderSettings] = Field(default_factory=list, description="Paid APIs.")
    routes: list[RouteSettings] = Field(default_factory=list, description="Model aliases.")
    rules: list[RuleSettings] = Field(
        default_factory=list, description="Stage rules, matched in order before any other "
        "routing: the first that matches pins a tier or a model (spillgate.routing.stage_rules).")
    ledger: LedgerSettings = Field(default_factory=LedgerSettings, description="Cost ledger.")
    telemetry: TelemetrySettings = Field(default_factory=TelemetrySettings, description="Sampler.")
    cost: CostSettings = Field(default_factory=CostSettings, description="Hardware cost model.")
    spend_guard: SpendGuardSettings = Field(
        default_factory=SpendGuardSettings, description="Paid-spend guard (off without limits).")
    alerts: AlertSettings = Field(default_factory=AlertSettings, description="Budget alerts.")
    cache: CacheSettings = Field(default_factory=CacheSettings, description="Response cache.")
    batch: BatchSettings = Field(default_factory=BatchSettings, description="Batch API.")

    @model_validator(mode="after")
    def _unique_names(self) -> Settings:
        for kind, names in (
            ("local backend", [b.name for b in self.local]),
            ("provider", [p.name for p in self.providers]),
            ("route", [r.name for r in self.routes]),
            ("rule", [r.name for r in self.rules]),
        ):
            dupes = {n for n in names if names.count(n) > 1}
            if dupes:
                raise ValueError(f"duplicate {kind} names: {sorted(dupes)}")
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (env_settings, init_settings)

    # --- derived facts -------------------------------------------------------------------
    def client_keys(self) -> frozenset[str]:
        raw = os.environ.get(self.server.api_keys_env or "", "")
        return frozenset(k.strip() for k in raw.split(",") if k.strip())

    def admin_key(self) -> str | None:
        key = os.environ.get(self.server.admin_key_env, "").strip()
        return key or None

    def metrics_key(self) -> str | None:
        key = os.environ.get(self.server.metrics_key_env or "", "").strip()
        return key or None

    def alert_webhook_url(self) -> str | None:
        url = os.environ.get(self.alerts.webhook_url_env or "", "").strip()
        return url or None

    def ledger_dsn(self) -> str:
        if self.ledger.dsn_env and os.environ.get(self.ledger.dsn_env):
            return os.environ[self.ledger.dsn_env]
        return self.ledger.dsn


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def load_settings(path: Path | None = None, overrides: dict[str, Any] | None = None) -> Settings:
    """Read the YAML file (if any), apply env overrides, validate; ConfigError names the field."""
    data: dict[str, Any] = {}
    if path is not None:
        try:
            loaded = yaml.safe_load(path.read_text()) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigError(f"cannot read config {path}: {exc}") from exc
        if not isinstance(loaded, dict):
            raise ConfigError(f"config {path}: top level must be a mapping")
        data = loaded
    _deep_merge(data, overrides or {})
    try:
        settings = Settings(**data)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc)) from exc
    check_secrets(settings)
    return settings


def _deep_merge(base: dict[str, Any], extra: dict[str, Any]) -> None:
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            _deep_merge(base[key], value)
        else:
            base[key] = value


def format_validation_error(exc: ValidationError) -> str:
    lines = []
    for err in exc.errors():
        field = ".".join(str(p) for p in err["loc"]) or "(top level)"
        lines.append(f"  {field}: {err['msg']}")
    return "invalid configuration:\n" + "\n".join(lines)


def key_problem(key: str) -> str | None:
    """Why `key` cannot be a bearer key (placeholder, too short), or None when it can."""
    if (key.lower() in PLACEHOLDER_SECRETS or _PLACEHOLDER.search(key)
            or _ONE_CHARACTER.fullmatch(key)):
        return "a placeholder key is not allowed"
    if len(key) < MIN_KEY_LENGTH:
        return f"a key needs at least {MIN_KEY_LENGTH} characters (got {len(key)})"
    return None


def check_secrets(settings: Settings) -> None:
    """Refuse to start with an exposed address and no key, or with placeholder or short
    keys (client, admin, metrics). The message names the setting, never the key."""
    keys = settings.client_keys()
    named = [("server.api_keys_env", settings.server.api_keys_env, k) for k in sorted(keys)]
    named += [(field, env, key) for field, env, key in (
        ("server.admin_key_env", settings.server.admin_key_env, settings.admin_key()),
        ("server.metrics_key_env", settings.server.metrics_key_env, settings.metrics_key()),
    ) if key]
    for field, env, key in named:
        problem = key_problem(key)
        if problem:
            raise ConfigError(f"{field} (${env}): {problem}")
    if settings.server.metrics_key_env and not settings.metrics_key():
        raise ConfigError(f"server.metrics_key_env: ${settings.server.metrics_key_env} is "
                          "not set (unset metrics_key_env to leave /metrics open)")
    if not keys and not is_loopback(settings.server.host):
        raise ConfigError(
            f"server.host: binding {settings.server.host} needs client keys in "
            f"${settings.server.api_keys_env}; without keys only loopback is allowed"
        )
