"""Storage transactions counted where they happen: an HTTP proxy in front of Azurite.

The bot reaches Table and Queue Storage over HTTP (the Azure SDK on aiohttp), one REST request per
operation, and the storage service bills each request as a transaction. So a proxy between the bot and
Azurite sees every transaction as Azure would bill it. `classify` names a request's kind from its shape
alone (service, method, path, query, If-Match); the proxy adds what only the answer tells: how many messages
a queue get returned, how many entities a query page held and whether another page follows, and how many
operations a batch carried.

Shared Key signs the path, the query and the x-ms- headers but not the host, so the proxy forwards each
request unchanged to Azurite's port and Azurite accepts it. The proxy serves in a thread of its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import threading
import time
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

import aiohttp
from aiohttp import web
from multidict import CIMultiDict
from yarl import URL

from devhost.azurite import ACCOUNT, Azurite, connection_string

TABLE, QUEUE = "table", "queue"

# Kinds of Table Storage requests.
ENTITY_READ = "entity read"
ENTITY_INSERT = "entity insert"
ENTITY_UPDATE = "entity update"  # replace or merge of an existing entity: If-Match an ETag, or * for any
ENTITY_UPSERT = "entity upsert"  # insert or replace (merge): no If-Match
ENTITY_DELETE = "entity delete"
BATCH = "batch transaction"
QUERY = "query"  # a query's first page
QUERY_NEXT = "query, next page"  # a page asked for with the continuation of the one before
TABLE_CREATE = "table create"
# Kinds of Queue Storage requests.
MESSAGE_PUT = "message put"
MESSAGE_GET = "message get"  # a receive: visible messages, hidden for a while
MESSAGE_PEEK = "message peek"
MESSAGE_UPDATE = "message update"  # a received message's visibility (or content) changed
MESSAGE_DELETE = "message delete"
QUEUE_CREATE = "queue create"
QUEUE_PROPERTIES = "queue properties"
QUEUE_CLEAR = "queue clear"
OTHER = "other"

ENTITY_WRITES = (ENTITY_INSERT, ENTITY_UPDATE, ENTITY_UPSERT, ENTITY_DELETE)
# A receive that found nothing: what an idle listener's polls are.
MESSAGE_GET_EMPTY = "message get, none returned"

_ENTITY_PATH = re.compile(r"^/[^/()$]+\(PartitionKey='.*',\s*RowKey='.*'\)$", re.DOTALL)
_TABLE_PATH = re.compile(r"^/[^/()$]+(\(\))?$")
_BATCH_OPERATION = re.compile(rb"^(?:GET|POST|PUT|PATCH|MERGE|DELETE) \S+ HTTP/1\.1\r?$", re.MULTILINE)


def account_path(path: str) -> str:
    """A request's path after the account: Azurite addresses the account in the path, Azure in the host name."""
    if path == f"/{ACCOUNT}" or path.startswith(f"/{ACCOUNT}/"):
        return path[len(ACCOUNT) + 1 :] or "/"
    return path


def classify(service: str, method: str, path: str, query: Mapping[str, str], headers: Mapping[str, str]) -> str:
    """The kind of one Table or Queue Storage request. `path` is the request's path after the account (Azurite
    puts the account first in the path, Azure in the host name); `headers` need only hold If-Match, if sent."""
    method = method.upper()
    path = unquote(path)
    if service == TABLE:
        return _table_kind(method, path, query, headers)
    if service == QUEUE:
        return _queue_kind(method, path, query)
    raise ValueError(f"not a storage service this proxy counts: {service!r}")


def _table_kind(method: str, path: str, query: Mapping[str, str], headers: Mapping[str, str]) -> str:
    if path == "/$batch":
        return BATCH if method == "POST" else OTHER
    if path.lower() == "/tables":
        return TABLE_CREATE if method == "POST" else OTHER
    if _ENTITY_PATH.match(path):
        if method == "GET":
            return ENTITY_READ
        if method in ("PUT", "PATCH", "MERGE"):
            return ENTITY_UPDATE if any(k.lower() == "if-match" for k in headers) else ENTITY_UPSERT
        return ENTITY_DELETE if method == "DELETE" else OTHER
    if _TABLE_PATH.match(path):
        if method == "GET":
            continued = any(k in query for k in ("NextPartitionKey", "NextRowKey"))
            return QUERY_NEXT if continued else QUERY
        return ENTITY_INSERT if method == "POST" else OTHER
    return OTHER


def _queue_kind(method: str, path: str, query: Mapping[str, str]) -> str:
    parts = path.strip("/").split("/")
    if len(parts) == 1 and parts[0]:
        if "comp" in query:
            return QUEUE_PROPERTIES if method in ("GET", "HEAD") and query["comp"] == "metadata" else OTHER
        return QUEUE_CREATE if method == "PUT" else OTHER
    if len(parts) == 2 and parts[1] == "messages":
        if method == "POST":
            return MESSAGE_PUT
        if method == "GET":
            return MESSAGE_PEEK if query.get("peekonly", "").lower() == "true" else MESSAGE_GET
        return QUEUE_CLEAR if method == "DELETE" else OTHER
    if len(parts) == 3 and parts[1] == "messages":
        return {"DELETE": MESSAGE_DELETE, "PUT": MESSAGE_UPDATE}.get(method, OTHER)
    return OTHER


def batch_operations(body: bytes) -> int:
    """How many operations a batch request carries: one request line each in its multipart body."""
    return len(_BATCH_OPERATION.findall(body))


@dataclass(frozen=True)
class Record:
    """One request as the proxy saw it."""

    at: float  # time.monotonic() when the answer came
    service: str
    kind: str
    resource: str  # the table or queue
    status: int
    returned: int | None = None  # messages a get or peek returned; entities a query page held
    more: bool = False  # a query page with a continuation: another page follows
    operations: int = 0  # the operations a batch carried

    @property
    def counted_as(self) -> str:
        """The kind, with a receive that found nothing told apart (an idle listener's poll)."""
        return MESSAGE_GET_EMPTY if self.kind == MESSAGE_GET and not self.returned else self.kind


def tally(records: Iterable[Record]) -> Counter[str]:
    """Requests by kind (`Record.counted_as`)."""
    return Counter(r.counted_as for r in records)


_HOP_BY_HOP = frozenset(
    {"host", "content-length", "transfer-encoding", "connection", "keep-alive", "te", "trailer", "upgrade"}
)


class CountingProxy:
    """Azurite's table and queue endpoints behind a proxy of their own that records every request; blobs go
    to Azurite directly. `connection_string` addresses the proxy."""

    def __init__(self, storage: Azurite) -> None:
        self.storage = storage
        self.records: list[Record] = []  # appended by the proxy's thread
        self.urls: dict[str, str] = {}
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="storage-proxy", daemon=True)
        self._runners: list[web.AppRunner] = []
        self._session: aiohttp.ClientSession | None = None

    @classmethod
    @contextlib.contextmanager
    def serving(cls, storage: Azurite) -> Iterator[CountingProxy]:
        proxy = cls(storage)
        proxy._thread.start()
        try:
            asyncio.run_coroutine_threadsafe(proxy._start(), proxy._loop).result(30)
            yield proxy
        finally:
            asyncio.run_coroutine_threadsafe(proxy._stop(), proxy._loop).result(30)
            proxy._loop.call_soon_threadsafe(proxy._loop.stop)
            proxy._thread.join(10)
            proxy._loop.close()

    @property
    def connection_string(self) -> str:
        return connection_string(self.urls[QUEUE], self.urls[TABLE], self.storage.urls["blob"])

    def mark(self) -> int:
        """Where the records stand now: `since(mark)` gives those that came after."""
        return len(self.records)

    def since(self, mark: int) -> list[Record]:
        return self.records[mark:]

    async def _start(self) -> None:
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=256), auto_decompress=False, timeout=aiohttp.ClientTimeout(60)
        )
        for service in (TABLE, QUEUE):
            app = web.Application(client_max_size=8 << 20)  # a batch may carry 4 MiB
            upstream = self.storage.urls[service]
            app.router.add_route("*", "/{tail:.*}", self._handler(service, upstream))
            runner = web.AppRunner(app, access_log=None, handle_signals=False)
            await runner.setup()
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
            self.urls[service] = f"http://127.0.0.1:{port}"
            self._runners.append(runner)

    async def _stop(self) -> None:
        for runner in self._runners:
            await runner.cleanup()
        if self._session is not None:
            await self._session.close()

    def _handler(self, service: str, upstream: str) -> Any:
        async def forward(request: web.Request) -> web.StreamResponse:
            assert self._session is not None
            body = await request.read()
            headers = CIMultiDict((k, v) for k, v in request.headers.items() if k.lower() not in _HOP_BY_HOP)
            async with self._session.request(
                request.method,
                URL(upstream + request.raw_path, encoded=True),
                data=body if body else None,
                headers=headers,
                skip_auto_headers=("Content-Type", "Accept-Encoding", "User-Agent"),
                allow_redirects=False,
            ) as answer:
                payload = await answer.read()
                answer_headers = CIMultiDict((k, v) for k, v in answer.headers.items() if k.lower() not in _HOP_BY_HOP)
            self.records.append(self._record(service, request, body, answer.status, answer_headers, payload))
            return web.Response(status=answer.status, headers=answer_headers, body=payload)

        return forward

    @staticmethod
    def _record(
        service: str, request: web.Request, body: bytes, status: int, headers: Mapping[str, str], payload: bytes
    ) -> Record:
        path = account_path(request.path)
        kind = classify(service, request.method, path, request.query, request.headers)
        resource = unquote(path.strip("/").split("/")[0].split("(")[0])
        returned: int | None = None
        more = False
        operations = 0
        if kind in (MESSAGE_GET, MESSAGE_PEEK) and status == 200:
            returned = payload.count(b"<QueueMessage>")
        elif kind in (QUERY, QUERY_NEXT) and status == 200:
            returned = len(json.loads(payload).get("value", []))
            more = "x-ms-continuation-NextPartitionKey" in headers
        elif kind == BATCH:
            operations = batch_operations(body)
        return Record(time.monotonic(), service, kind, resource, status, returned, more, operations)
