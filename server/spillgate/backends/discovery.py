"""Attach mode on Kubernetes: one DNS name, one replica per engine pod.

A headless Service's name resolves to the address of every ready pod behind it. A backend with
`resolve_dns` turns each of its base URLs into one URL per address, so the gateway sends each
request to the least loaded pod and scrapes each pod's /metrics (through a ClusterIP it would
reach a random pod each time). Pods come and go, so the name is looked up again every
`dns_refresh_s`; a lookup that fails or finds nothing keeps the URL as written, which then fails
its health checks like any unreachable engine.

The resolver is injected (the default asks the system through `getaddrinfo`), so tests swap the
DNS transport, not the code that uses it.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

log = logging.getLogger(__name__)

Resolver = Callable[[str, int], Awaitable[list[str]]]
LOOKUP_TIMEOUT_S = 2.0  # a slow DNS server must not stall the capacity monitor's round


async def system_resolver(host: str, port: int) -> list[str]:
    """Every address of `host` (A and AAAA records), in the order the system returned them."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    seen: dict[str, None] = {}
    for _family, _type, _proto, _name, sockaddr in infos:
        seen.setdefault(str(sockaddr[0]), None)
    return list(seen)


def _is_address(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def with_host(url: str, address: str) -> str:
    """`url` with its host replaced by `address` (IPv6 in brackets), port and path kept."""
    parts = urlsplit(url)
    host = f"[{address}]" if ":" in address else address
    netloc = host if parts.port is None else f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


async def expand(urls: Sequence[str], resolve: Resolver) -> list[str]:
    """One URL per address of each URL's host; a literal address or a failed lookup keeps the
    URL as written."""
    out: list[str] = []
    for url in urls:
        parts = urlsplit(url)
        host = parts.hostname or ""
        if not host or _is_address(host):
            out.append(url)
            continue
        port = parts.port or (443 if parts.scheme == "https" else 80)
        try:
            async with asyncio.timeout(LOOKUP_TIMEOUT_S):
                addresses = await resolve(host, port)
        except (OSError, UnicodeError, TimeoutError) as exc:
            log.warning("DNS lookup of %s failed (%s); keeping the name", host, exc)
            addresses = []
        if addresses:
            out.extend(with_host(url, a) for a in addresses)
        else:
            out.append(url)
    return sorted(dict.fromkeys(out))


@dataclass
class DnsTarget:
    """One backend to keep resolved: its URLs as configured and what to call on a change."""

    name: str
    urls: tuple[str, ...]
    refresh_s: float
    apply: Callable[[list[str]], Awaitable[None]]
    current: tuple[str, ...] = ()
    due_at: float = 0.0


class DnsDiscovery:
    """Re-resolves each target when due (the capacity monitor calls `refresh` every round)."""

    def __init__(self, targets: Sequence[DnsTarget], resolve: Resolver = system_resolver) -> None:
        self.targets = list(targets)
        self._resolve = resolve

    async def refresh(self, now: float) -> None:
        for target in self.targets:
            if now < target.due_at:
                continue
            target.due_at = now + target.refresh_s
            urls = await expand(target.urls, self._resolve)
            if tuple(urls) != target.current:
                log.info("engine %s: %d replica(s) at %s", target.name, len(urls),
                         ", ".join(urls))
                target.current = tuple(urls)
                await target.apply(urls)
