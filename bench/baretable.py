"""A bare Table Storage client on aiohttp (SharedKeyLite), for floors and fast seeding.

It does only what the benchmarks need: point read, insert, conditional replace.
No retries, no pipeline: the cost of one round trip and nothing else.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote

import aiohttp
from yarl import URL

from botcore.tables import table_endpoint

ODATA_HEADERS = {
    "Accept": "application/json;odata=nometadata",
    "DataServiceVersion": "3.0;NetFx",
    "MaxDataServiceVersion": "3.0;NetFx",
    "x-ms-version": "2019-02-02",
}


class BareTable:
    """Signs as the bot's client does (botcore.tables.SharedKeyLite); everything else is one raw request."""

    def __init__(self, session: aiohttp.ClientSession, connection_string: str, table: str) -> None:
        self.session, self.table = session, table
        self.endpoint, self.auth = table_endpoint(connection_string)  # http://host:port/account
        self.base_path = "/" + self.endpoint.split("/", 3)[3]  # /account

    async def _headers(self, method: str, path: str, extra: dict[str, str] | None = None) -> dict[str, str]:
        headers = {**ODATA_HEADERS, **(extra or {})}
        return {**headers, **await self.auth.headers(method, path, headers, None)}

    def _entity_path(self, pk: str, rk: str) -> str:
        pk_q = quote(pk.replace("'", "''"), safe="")
        rk_q = quote(rk.replace("'", "''"), safe="")
        return f"{self.base_path}/{self.table}(PartitionKey='{pk_q}',RowKey='{rk_q}')"

    def _url(self, path: str) -> URL:
        # encoded=True: send the path exactly as signed (yarl would otherwise re-normalise it).
        return URL(self.endpoint.rsplit("/", 1)[0] + path, encoded=True)

    async def get(self, pk: str, rk: str) -> tuple[dict[str, Any], str]:
        path = self._entity_path(pk, rk)
        async with self.session.get(self._url(path), headers=await self._headers("GET", path)) as response:
            body = await response.read()
            if response.status != 200:
                raise RuntimeError(f"GET entity: HTTP {response.status} {body[:200]!r}")
            return json.loads(body), response.headers["ETag"]

    async def replace(self, entity: dict[str, Any], etag: str) -> str:
        path = self._entity_path(entity["PartitionKey"], entity["RowKey"])
        headers = await self._headers("PUT", path, {"Content-Type": "application/json", "If-Match": etag})
        async with self.session.put(self._url(path), data=json.dumps(entity).encode(), headers=headers) as response:
            body = await response.read()
            if response.status != 204:
                raise RuntimeError(f"PUT entity: HTTP {response.status} {body[:200]!r}")
            return response.headers["ETag"]

    async def insert(self, entity: dict[str, Any] | bytes) -> None:
        """Insert one entity (a dict of JSON values, or its wire bytes with @odata.type annotations)."""
        path = f"{self.base_path}/{self.table}"
        body = entity if isinstance(entity, bytes) else json.dumps(entity).encode()
        headers = await self._headers("POST", path, {"Content-Type": "application/json", "Prefer": "return-no-content"})
        async with self.session.post(self._url(path), data=body, headers=headers) as response:
            body = await response.read()
            if response.status not in (201, 204):
                raise RuntimeError(f"POST entity: HTTP {response.status} {body[:200]!r}")
