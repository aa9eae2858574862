"""The process-wide HTTP client for outbound calls (Connector, identity provider).

One `httpx.AsyncClient` per event loop, created on first use and reused by every
invocation. Its transport is aiohttp: httpx's own connection pool slows down as
concurrency rises, aiohttp's does not (see the benchmarks).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from .loops import PerLoop

if TYPE_CHECKING:
    import httpx

MAX_CONNECTIONS = 64

_clients: PerLoop["httpx.AsyncClient"] = PerLoop()


def _new_client() -> "httpx.AsyncClient":
    import httpx
    from httpx_aiohttp import AiohttpTransport

    from .settings import get_settings

    # httpx logs every request at INFO; a broadcast would flood the log. The connector
    # logs what matters (failures, with the service's correlation id).
    logging.getLogger("httpx").setLevel(logging.WARNING)
    return httpx.AsyncClient(
        transport=AiohttpTransport(trust_env=False, limits=httpx.Limits(max_connections=MAX_CONNECTIONS)),
        timeout=httpx.Timeout(get_settings().http_timeout, connect=10.0),
        trust_env=False,
        follow_redirects=False,
    )


def get_http_client() -> "httpx.AsyncClient":
    client = _clients.get(_new_client)
    if client.is_closed:
        _clients.pop()
        client = _clients.get(_new_client)
    return client


async def close_http_client() -> None:
    client = _clients.pop()
    if client is not None:
        await client.aclose()
