"""The process-wide HTTP client for outbound calls (Connector, identity provider).

One `httpx.AsyncClient` per event loop, created on first use and reused by every
invocation. Its transport is aiohttp: httpx's own connection pool slows down as
concurrency rises, aiohttp's does not (see the benchmarks).
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import httpx

MAX_CONNECTIONS = 64

_clients: dict[asyncio.AbstractEventLoop, "httpx.AsyncClient"] = {}


def get_http_client() -> "httpx.AsyncClient":
    loop = asyncio.get_running_loop()
    client = _clients.get(loop)
    if client is None or client.is_closed:
        import httpx
        from httpx_aiohttp import AiohttpTransport

        from .settings import get_settings

        # httpx logs every request at INFO; a broadcast would flood the log. The connector
        # logs what matters (failures, with the service's correlation id).
        logging.getLogger("httpx").setLevel(logging.WARNING)
        for old_loop in [l for l in _clients if l.is_closed()]:
            del _clients[old_loop]
        client = httpx.AsyncClient(
            transport=AiohttpTransport(trust_env=False, limits=httpx.Limits(max_connections=MAX_CONNECTIONS)),
            timeout=httpx.Timeout(get_settings().http_timeout, connect=10.0),
            trust_env=False,
            follow_redirects=False,
        )
        _clients[loop] = client
    return client


async def close_http_client() -> None:
    client = _clients.pop(asyncio.get_running_loop(), None)
    if client is not None:
        await client.aclose()
