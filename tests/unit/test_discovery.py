"""DNS discovery: URL expansion per address, literal addresses kept, failures keep the name."""

from __future__ import annotations

import asyncio

import pytest

from spillgate.backends import discovery
from spillgate.backends.discovery import DnsDiscovery, DnsTarget, expand, system_resolver, with_host


def test_host_is_replaced_and_port_and_path_kept() -> None:
    assert with_host("http://engine.llm.svc:8000/v1", "10.0.0.7") == "http://10.0.0.7:8000/v1"
    assert with_host("http://engine:8000/v1", "fd00::7") == "http://[fd00::7]:8000/v1"
    assert with_host("https://engine/v1", "10.0.0.7") == "https://10.0.0.7/v1"


async def test_expand_one_url_per_address_and_keeps_literals() -> None:
    asked: list[tuple[str, int]] = []

    async def resolve(host: str, port: int) -> list[str]:
        asked.append((host, port))
        return ["10.0.0.2", "10.0.0.1", "10.0.0.2"]

    urls = await expand(["http://e.llm.svc:8000/v1", "http://10.9.9.9:1/v1", "https://x/v1"],
                        resolve)
    assert urls == sorted({"http://10.0.0.1:8000/v1", "http://10.0.0.2:8000/v1",
                           "http://10.9.9.9:1/v1", "https://10.0.0.1/v1",
                           "https://10.0.0.2/v1"})
    assert asked == [("e.llm.svc", 8000), ("x", 443)]  # a literal address is never looked up


async def test_failed_lookup_keeps_the_name() -> None:
    async def resolve(host: str, port: int) -> list[str]:
        raise OSError("Name or service not known")

    assert await expand(["http://gone.llm.svc:8000/v1"], resolve) == [
        "http://gone.llm.svc:8000/v1"]


async def test_system_resolver_reads_the_hosts_file() -> None:
    assert "127.0.0.1" in await system_resolver("localhost", 80)


async def test_refresh_applies_only_changes_and_only_when_due() -> None:
    answers = ["10.0.0.1"]
    applied: list[list[str]] = []

    async def resolve(host: str, port: int) -> list[str]:
        return list(answers)

    async def apply(urls: list[str]) -> None:
        applied.append(urls)

    discovery = DnsDiscovery([DnsTarget("gpu", ("http://e:80/v1",), 10.0, apply)], resolve)
    await discovery.refresh(0.0)
    answers.append("10.0.0.2")
    await discovery.refresh(5.0)  # not due yet
    await discovery.refresh(10.0)
    await discovery.refresh(20.0)  # same answer: nothing to apply
    assert applied == [["http://10.0.0.1:80/v1"],
                       ["http://10.0.0.1:80/v1", "http://10.0.0.2:80/v1"]]


@pytest.mark.parametrize("url", ["http://[::1]:8000/v1", "http://127.0.0.1/v1"])
async def test_addresses_pass_through(url: str) -> None:
    async def resolve(host: str, port: int) -> list[str]:
        raise AssertionError("must not be called")

    assert await expand([url], resolve) == [url]


async def test_slow_dns_is_cut_short(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(discovery, "LOOKUP_TIMEOUT_S", 0.05)

    async def resolve(host: str, port: int) -> list[str]:
        await asyncio.sleep(30)
        return ["10.0.0.1"]

    assert await expand(["http://slow.llm.svc:80/v1"], resolve) == ["http://slow.llm.svc:80/v1"]
