"""Who may use the node, checked on the real app in-process (httpx.ASGITransport, the app's
own lifespan, a real SQLite ledger): the admin key is checked before an admin body is read
and the body is capped; errors never echo input or server paths; anonymous loopback access
ends once virtual keys exist; /metrics takes an optional bearer and hides key ids."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from spillgate.api.deps import Authenticator
from spillgate.app import create_app
from spillgate.errors import AuthenticationFailed
from spillgate.settings import Settings

pytestmark = pytest.mark.asyncio(loop_scope="session")
ADMIN = "admin-key-for-access-tests-0123456789"
METRICS = "metrics-key-for-access-tests-0123"


def _settings(tmp: Path, **server: object) -> Settings:
    # An attached engine at a closed port: the supervisor only probes, nothing is spawned.
    return Settings(
        server={"host": "127.0.0.1", **server},  # type: ignore[arg-type]
        local=[{"name": "local-cpu", "model": "smollm2",  # type: ignore[list-item]
                "base_urls": ["http://127.0.0.1:9/v1"]}],
        ledger={"dsn": f"sqlite+aiosqlite:///{tmp}/ledger.db"},  # type: ignore[arg-type]
    )


@pytest.fixture(autouse=True)
def _keys_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SPILLGATE_API_KEYS", raising=False)
    monkeypatch.setenv("SPILLGATE_ADMIN_KEY", ADMIN)
    monkeypatch.setenv("SG_TEST_METRICS_KEY", METRICS)


async def _client(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://node") as client:
            yield client


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    async for c in _client(_settings(tmp_path)):
        yield c


def _admin(key: str = ADMIN) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}


class _CountingBody:
    """A request body of `chunks` x 64 KiB that records how many chunks the server pulled."""

    def __init__(self, chunks: int) -> None:
        self.chunks, self.pulled = chunks, 0

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for _ in range(self.chunks):
            self.pulled += 1
            yield b"x" * 65536


# --- admin routes ---------------------------------------------------------------------------
async def test_admin_body_is_not_read_without_the_admin_key(
    client: httpx.AsyncClient,
) -> None:
    body = _CountingBody(chunks=160)  # 10 MiB, streamed without a content-length
    refused = await client.post("/admin/keys", content=body)
    assert refused.status_code == 401
    assert refused.json()["error"]["type"] == "authentication_error"
    assert body.pulled <= 1


async def test_admin_body_is_capped_at_64_kib(client: httpx.AsyncClient) -> None:
    body = _CountingBody(chunks=160)
    refused = await client.post("/admin/keys", content=body, headers=_admin())
    assert refused.status_code == 413
    assert body.pulled <= 3  # stopped at the cap, not at the end of the 10 MiB
    declared = await client.post("/admin/keys", content=b"{" + b" " * 70_000 + b"}",
                                 headers=_admin())
    assert declared.status_code == 413


@pytest.mark.parametrize("raw", [b"{bad", b'{"name": 5}', b"[]", b'{"name": "x", "rpm": -1}',
                                 b'{"name": "x", "tags": {"a": [1]}}'])
async def test_bad_admin_body_gets_400_without_echo_or_source_path(
    client: httpx.AsyncClient, raw: bytes,
) -> None:
    answer = await client.post("/admin/keys", content=raw, headers=_admin())
    assert answer.status_code == 400
    message = answer.json()["error"]["message"]
    assert ".py" not in message and "Endpoint" not in message and "File" not in message
    assert raw.decode() not in message


async def test_validation_errors_name_the_field_not_the_source(
    client: httpx.AsyncClient,
) -> None:
    answer = await client.get("/admin/report", params={"bucket": "fortnight"},
                              headers=_admin())
    assert answer.status_code == 400
    error = answer.json()["error"]
    assert error["param"] == "bucket"
    assert ".py" not in error["message"] and "fortnight" not in error["message"]


async def test_short_admin_key_disables_the_admin_api(
    client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SPILLGATE_ADMIN_KEY", "short")
    answer = await client.get("/admin/keys", headers=_admin("short"))
    assert answer.status_code == 403


# --- anonymous loopback access ----------------------------------------------------------------
async def test_loopback_without_keys_is_open_until_a_virtual_key_exists(
    client: httpx.AsyncClient,
) -> None:
    assert (await client.get("/v1/models")).status_code == 200


async def test_a_virtual_key_ends_anonymous_loopback_access(client: httpx.AsyncClient) -> None:
    made = await client.post("/admin/keys", json={"name": "team", "local_only": True},
                             headers=_admin())
    assert made.status_code == 201
    secret = made.json()["secret"]
    for headers in ({}, {"authorization": "Bearer sg-not-a-real-key-0123456789"}):
        refused = await client.get("/v1/models", headers=headers)
        assert refused.status_code == 401
        assert refused.json()["error"]["type"] == "authentication_error"
    anon_chat = await client.post("/v1/chat/completions", json={
        "model": "local", "messages": [{"role": "user", "content": "hi"}]})
    assert anon_chat.status_code == 401
    ok = await client.get("/v1/models", headers={"authorization": f"Bearer {secret}"})
    assert ok.status_code == 200


@pytest.mark.parametrize(("setting", "status"), [(True, 200), (False, 401)])
async def test_allow_anonymous_loopback_is_explicit(
    tmp_path: Path, setting: bool, status: int,
) -> None:
    async for client in _client(_settings(tmp_path, allow_anonymous_loopback=setting)):
        made = await client.post("/admin/keys", json={"name": "team"}, headers=_admin())
        assert made.status_code == 201
        assert (await client.get("/v1/models")).status_code == status


# --- /metrics ---------------------------------------------------------------------------------
async def test_metrics_bearer_is_optional_and_enforced_when_set(tmp_path: Path) -> None:
    async for client in _client(_settings(tmp_path, metrics_key_env="SG_TEST_METRICS_KEY")):
        assert (await client.get("/metrics")).status_code == 401
        assert (await client.get("/metrics", headers=_admin())).status_code == 401
        page = await client.get("/metrics", headers=_admin(METRICS))
        assert page.status_code == 200 and "spillgate_requests_total" in page.text
        assert (await client.get("/healthz")).status_code == 200  # probes stay open


@pytest.mark.parametrize("key_ids", [False, True])
async def test_metrics_show_key_ids_only_when_configured(tmp_path: Path, key_ids: bool) -> None:
    app = create_app(_settings(tmp_path, metrics_key_ids=key_ids))
    app.state.node.metrics.budget_remaining.labels("key-0a1b2c3d4e5f", "day").set(2.5)
    async with app.router.lifespan_context(app), httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://node") as client:
        page = (await client.get("/metrics")).text
    assert ("key-0a1b2c3d4e5f" in page) is key_ids
    assert "# TYPE spillgate_requests_total counter" in page  # the rest is all there


async def test_key_existence_is_asked_at_most_once_a_second() -> None:
    asked: list[float] = []
    now = [100.0]

    async def keys_exist() -> bool:
        asked.append(now[0])
        return now[0] >= 102.0  # the first virtual key appears at t=102

    auth = Authenticator(frozenset(), None, open_access=True, keys_exist=keys_exist,
                         clock=lambda: now[0])
    for step in range(20):  # 20 anonymous requests over 2 s, one every 0.1 s
        now[0] = 100.0 + step / 10
        await auth(None)
    assert asked == [100.0, 101.0]  # once a second, not once a request
    for at in (102.05, 102.5, 102.9):
        now[0] = at
        with pytest.raises(AuthenticationFailed):
            await auth(None)  # keys exist now: anonymous access has ended
    assert asked == [100.0, 101.0, 102.05]
