"""The process-wide HTTP client for outbound calls (Connector, OpenID metadata and keys, token and
managed-identity endpoints): one `httpx.AsyncClient` per event loop, made on first use, reused by
every invocation and closed when its loop ends.

Its transport is httpx-aiohttp's (httpx's API over aiohttp's connection pool), chosen on the send
path's measurements (bench/send_path.py, README): httpx's own pool (httpcore) slows down as
concurrency rises (encode/httpx#3215), aiohttp's does not.
"""

from __future__ import annotations

import logging
from http.cookiejar import CookieJar
from typing import TYPE_CHECKING, Any, Literal

from ..loops import PerLoop
from ..settings import get_settings

if TYPE_CHECKING:
    import httpx

SPARE_CONNECTIONS = 16  # beyond BotSendConcurrency's sends: replies, tokens, OpenID metadata and keys

Transport = Literal["aiohttp", "httpcore"]
TRANSPORT: Transport = "aiohttp"


class _CookiesKeptByAiohttp(CookieJar):
    """aiohttp's session under the transport keeps cookies, as the bot's client always has."""

    def extract_cookies(self, response: Any, request: Any) -> None:
        pass


def new_http_client(timeout: float, connections: int, transport: Transport = TRANSPORT) -> httpx.AsyncClient:
    """A client that ignores proxy variables, so that the bot's token goes only to the configured
    identity provider and verified Connector URLs, and never follows redirects. Its timeouts are
    httpx's, per phase: connecting (at most 10 s), each read, each write, the wait for a pooled
    connection. At most `connections` at once: a send waiting for the pool would come late for its slot.
    `transport` is there for the benchmark, which measures both."""
    import httpx  # on the first outbound call: a cold start whose first invocation makes none does not pay for it

    # The Functions host logs at Information: one line per request would drown the bot's own.
    for name in ("httpx", "httpcore"):
        logging.getLogger(name).setLevel(logging.WARNING)
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    options: dict[str, Any] = {
        "trust_env": False,
        "follow_redirects": False,
        "timeout": httpx.Timeout(timeout, connect=min(timeout, 10.0)),
    }
    if transport == "httpcore":
        return httpx.AsyncClient(transport=httpx.AsyncHTTPTransport(trust_env=False, limits=limits), **options)
    from httpx_aiohttp import AiohttpTransport  # with httpx, on the first outbound call

    # What aiohttp under httpx does anyway, httpx need not do on every request too: keep cookies, and
    # send Accept (Connection: keep-alive is HTTP/1.1's default). About 15 µs of CPU a send.
    client = httpx.AsyncClient(
        transport=AiohttpTransport(trust_env=False, limits=limits), cookies=_CookiesKeptByAiohttp(), **options
    )
    for name in ("Accept", "Connection"):
        del client.headers[name]
    return client


async def _close(client: httpx.AsyncClient) -> None:
    await client.aclose()


_clients: PerLoop[httpx.AsyncClient] = PerLoop(close=_close)


def _new_client() -> httpx.AsyncClient:
    settings = get_settings()
    return new_http_client(settings.http_timeout, settings.send_concurrency + SPARE_CONNECTIONS)


def get_http_client() -> httpx.AsyncClient:
    client = _clients.get(_new_client)
    if client.is_closed:
        _clients.pop()
        client = _clients.get(_new_client)
    return client


async def close_http_client() -> None:
    client = _clients.pop()
    if client is not None:
        await client.aclose()
