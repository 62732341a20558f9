"""`server:` the HTTP API: bind address, client keys, request limits."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from spillgate.config.base import StrictModel


class ServerSettings(StrictModel):
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
