"""Node configuration: one pydantic-settings model, loaded from YAML with env overrides.

Precedence (highest first): environment variables (`SPILLGATE_` prefix, `__` between nested
names, e.g. `SPILLGATE_SERVER__PORT=9000`), then the YAML file given to `spillgate serve
--config`, then the defaults below. Secrets are never written in the file: the file names the
environment variable that holds each one.
"""

from __future__ import annotations

import ipaddress
import os
import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import Field, ValidationError, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from spillgate.config.alerts import AlertSettings
from spillgate.config.backends import LocalBackendSettings, ProviderSettings
from spillgate.config.base import StrictModel
from spillgate.config.batch import BatchSettings
from spillgate.config.cache import CacheSettings
from spillgate.config.cost import CostSettings
from spillgate.config.ledger import LedgerSettings
from spillgate.config.routes import ArmSettings, CascadeSettings, RouteSettings
from spillgate.config.rules import RuleMatchSettings, RuleSettings
from spillgate.config.server import ServerSettings
from spillgate.config.spend_guard import GuardLimits, SpendGuardSettings
from spillgate.config.telemetry import TelemetrySettings
from spillgate.errors import ConfigError

# The sections live in spillgate.config, one module a feature; they are imported from here.
__all__ = [
    "MIN_KEY_LENGTH", "PLACEHOLDER_SECRETS", "AlertSettings", "ArmSettings", "BatchSettings",
    "CacheSettings", "CascadeSettings", "CostSettings", "GuardLimits", "LedgerSettings",
    "LocalBackendSettings", "ProviderSettings", "RouteSettings", "RuleMatchSettings",
    "RuleSettings", "ServerSettings", "Settings", "SpendGuardSettings", "StrictModel",
    "TelemetrySettings", "check_secrets", "format_validation_error", "is_loopback",
    "key_problem", "load_settings", "repo_models_dir",
]

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
