"""Configuration: YAML + env overrides, clear errors naming the field, secure defaults."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
import yaml
from hypothesis import assume, given
from hypothesis import strategies as st

from spillgate.catalog import Catalog
from spillgate.errors import ConfigError, ModelNotFound
from spillgate.routing.routes import build_routes
from spillgate.settings import MIN_KEY_LENGTH, Settings, key_problem, load_settings
from spillgate.tenancy.keys import SECRET_PREFIX

REPO = Path(__file__).resolve().parents[2]


def write(tmp_path: Path, data: object) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_defaults_bind_loopback_and_serve_the_bundled_model() -> None:
    settings = load_settings()
    assert settings.server.host == "127.0.0.1" and settings.server.port == 8000
    assert settings.server.max_body_bytes == 1 << 20
    assert [(b.model, b.engine) for b in settings.local] == [
        ("smollm2", "llamacpp"), ("wordllama-l2-supercat-256", "embeddings")]


def test_env_overrides_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SPILLGATE_SERVER__PORT", "9123")
    settings = load_settings(write(tmp_path, {"server": {"port": 8001}}))
    assert settings.server.port == 9123


@pytest.mark.parametrize(("data", "field"), [
    ({"server": {"port": 70000}}, "server.port"),
    ({"server": {"prot": 1}}, "server.prot"),
    ({"routes": [{"name": "auto", "policy": "auto", "local": "smollm2"}]}, "routes.0"),
    ({"providers": [{"name": "x", "kind": "grpc", "base_url": "u", "api_key_env": None}]},
     "providers.0.kind"),
])
def test_bad_config_names_the_field(tmp_path: Path, data: object, field: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(write(tmp_path, data))
    assert field in str(caught.value)


def test_exposed_address_without_keys_refuses_to_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SPILLGATE_API_KEYS", raising=False)
    with pytest.raises(ConfigError, match=r"server\.host"):
        load_settings(write(tmp_path, {"server": {"host": "0.0.0.0"}}))
    monkeypatch.setenv("SPILLGATE_API_KEYS", "k-1234567890abcdef")
    assert load_settings(write(tmp_path, {"server": {"host": "0.0.0.0"}})).client_keys() == {
        "k-1234567890abcdef"}


def test_placeholder_keys_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SPILLGATE_API_KEYS", "changeme")
    with pytest.raises(ConfigError, match="placeholder"):
        load_settings()


def _routes(data: dict[str, object]) -> object:
    settings = Settings(**data)  # type: ignore[arg-type]
    return build_routes(settings, Catalog.load(REPO / "models" / "catalog.yaml"))


PROVIDER = {"name": "openai", "kind": "openai", "base_url": "http://127.0.0.1:1/v1",
            "api_key_env": None, "models": ["gpt-4o-mini"]}


def test_default_routes_cover_local_auto_and_concrete_models() -> None:
    table = _routes({"providers": [PROVIDER]})
    names = table.names()  # type: ignore[attr-defined]
    assert {"auto", "local", "smollm2", "openai/gpt-4o-mini"} <= set(names)
    auto = table.resolve("auto")  # type: ignore[attr-defined]
    assert auto.policy == "auto" and auto.paid[0].model == "gpt-4o-mini"
    with pytest.raises(ModelNotFound):
        table.resolve("gpt-5-ultra")  # type: ignore[attr-defined]


@pytest.mark.parametrize(("route", "message"), [
    ({"name": "a", "policy": "auto", "local": "smollm2", "paid": "openai/gpt-4o-mini",
      "fallbacks": ["openai/gpt-4o-mini"]}, "cycle"),
    ({"name": "a", "policy": "auto", "local": "smollm2", "paid": "openai/nope"},
     "not offered"),
    ({"name": "a", "policy": "local", "local": "mystery"}, "no local backend"),
])
def test_route_chains_are_validated_at_load(route: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        _routes({"providers": [PROVIDER], "routes": [route]})


# --- key rules --------------------------------------------------------------------------------
@given(st.text(max_size=MIN_KEY_LENGTH - 1))
def test_any_key_shorter_than_the_minimum_is_refused(key: str) -> None:
    assert key_problem(key) is not None


@given(st.binary(min_size=30, max_size=30))
def test_generated_virtual_keys_meet_the_rules(raw: bytes) -> None:
    # The shape create_key issues: the prefix and 30 random bytes, url-safe base64.
    secret = SECRET_PREFIX + base64.urlsafe_b64encode(raw).decode().rstrip("=")
    assume(len(set(secret[len(SECRET_PREFIX):])) > 1)  # `sg-AAAA…` is refused, by design
    assert key_problem(secret) is None


@pytest.mark.parametrize("key", ["changeme-changeme-1", "your-api-key-goes-here",
                                 "sk-xxxxxxxxxxxxxxxx", "<insert your key here>",
                                 "${SPILLGATE_KEY_VALUE}",
                                 "sk-...0123456789abc", "replace-me-with-a-real-key"])
def test_placeholders_are_refused_whatever_their_length(key: str) -> None:
    assert key_problem(key) == "a placeholder key is not allowed"


@pytest.mark.parametrize(("env", "value", "field"), [
    ("SPILLGATE_API_KEYS", "sk-good-client-key-0001,x", "server.api_keys_env"),
    ("SPILLGATE_ADMIN_KEY", "q7-z9", "server.admin_key_env"),
    ("SPILLGATE_ADMIN_KEY", "change-me-admin-key-please", "server.admin_key_env"),
])
def test_short_or_placeholder_keys_refuse_start_naming_the_setting_not_the_key(
    monkeypatch: pytest.MonkeyPatch, env: str, value: str, field: str,
) -> None:
    monkeypatch.delenv("SPILLGATE_API_KEYS", raising=False)
    monkeypatch.delenv("SPILLGATE_ADMIN_KEY", raising=False)
    monkeypatch.setenv(env, value)
    with pytest.raises(ConfigError) as caught:
        load_settings()
    assert field in str(caught.value)
    assert all(part not in str(caught.value) for part in value.split(","))


def test_metrics_key_env_must_name_a_set_good_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    config = write(tmp_path, {"server": {"metrics_key_env": "SG_METRICS_KEY"}})
    monkeypatch.delenv("SG_METRICS_KEY", raising=False)
    with pytest.raises(ConfigError, match="metrics_key_env"):
        load_settings(config)
    monkeypatch.setenv("SG_METRICS_KEY", "metrics")
    with pytest.raises(ConfigError, match="metrics_key_env"):
        load_settings(config)
    monkeypatch.setenv("SG_METRICS_KEY", "metrics-scraper-key-0123")
    assert load_settings(config).metrics_key() == "metrics-scraper-key-0123"
