"""The process-wide HTTP client for outbound calls (Connector, identity provider).

One aiohttp session per event loop, created on first use and reused by every
invocation, behind a small httpx-shaped surface (`request`, `get`, `post`,
`Response.status_code/json()/text`). aiohttp directly, because the send path is
CPU-bound: httpx's request and URL models cost about 0.25 ms per message on top
of aiohttp's own (see bench/RESULTS.md, send path), and its own pool slows down
as concurrency rises.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Mapping

from .loops import PerLoop

if TYPE_CHECKING:
    import aiohttp

MAX_CONNECTIONS = 64


class HttpStatusError(Exception):
    def __init__(self, response: "Response") -> None:
        super().__init__(f"HTTP {response.status_code} from {response.url}")
        self.response = response


@dataclass(frozen=True)
class Response:
    status_code: int
    headers: Mapping[str, str]
    content: bytes
    url: str

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", "replace")

    def json(self) -> Any:
        """The body as JSON; ValueError when it is not JSON."""
        return json.loads(self.content)

    def raise_for_status(self) -> "Response":
        if self.status_code >= 400:
            raise HttpStatusError(self)
        return self


class HttpClient:
    def __init__(self, session: "aiohttp.ClientSession") -> None:
        self.session = session

    @classmethod
    def open(cls, timeout: float) -> "HttpClient":
        """A client on a new session that ignores proxy variables and never follows redirects."""
        import aiohttp

        return cls(aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=MAX_CONNECTIONS), trust_env=False,
            timeout=aiohttp.ClientTimeout(total=timeout, connect=min(timeout, 10.0)),
        ))

    async def __aenter__(self) -> "HttpClient":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    @property
    def is_closed(self) -> bool:
        return self.session.closed

    async def request(self, method: str, url: str, *, content: bytes | None = None,
                      data: Mapping[str, str] | None = None, headers: Mapping[str, str] | None = None,
                      params: Mapping[str, Any] | None = None) -> Response:
        async with self.session.request(method, url, data=content if content is not None else data,
                                        headers=headers, params=params or None,
                                        allow_redirects=False) as response:
            body = await response.read()
            return Response(response.status, response.headers, body, url)

    async def get(self, url: str, **kwargs: Any) -> Response:
        return await self.request("GET", url, **kwargs)

    async def post(self, url: str, **kwargs: Any) -> Response:
        return await self.request("POST", url, **kwargs)

    async def aclose(self) -> None:
        await self.session.close()


_clients: PerLoop[HttpClient] = PerLoop(close=HttpClient.aclose)


def _new_client() -> HttpClient:
    from .settings import get_settings

    return HttpClient.open(get_settings().http_timeout)


def get_http_client() -> HttpClient:
    client = _clients.get(_new_client)
    if client.is_closed:
        _clients.pop()
        client = _clients.get(_new_client)
    return client


async def close_http_client() -> None:
    client = _clients.pop()
    if client is not None:
        await client.aclose()
