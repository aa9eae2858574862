"""A bare Table and Queue Storage client on aiohttp (Shared Key Lite), for floors and fast seeding.

The benchmarks' own, not the bot's (botcore speaks to storage only through the Azure SDK): the
floor is one signed request and its JSON, with no retries, no pipeline and no type decoding on
reads, so that beside it the price of the SDK shows. It does only what the benchmarks need: point
read, insert, replace with and without If-Match, a batch of inserts, a table, a queue put.
Signing follows the Storage REST documentation ("Authorize with Shared Key", Shared Key Lite).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import formatdate
from typing import Any
from urllib.parse import quote
from xml.sax.saxutils import escape

import aiohttp
from yarl import URL

API_VERSION = "2019-02-02"
ODATA_HEADERS = {
    "Accept": "application/json;odata=nometadata",
    "DataServiceVersion": "3.0;NetFx",
    "MaxDataServiceVersion": "3.0;NetFx",
    "x-ms-version": API_VERSION,
}
_INT32 = range(-(2**31), 2**31)
_FAILED_PART = re.compile(rb"HTTP/1\.1 [45]\d\d")


# ---- the account and its signatures ---------------------------------------------------------------


@dataclass(frozen=True)
class Account:
    """Name, key and service endpoints of a connection string (endpoints must be explicit, as Azurite's are)."""

    name: str
    key: bytes
    table_endpoint: str  # http://127.0.0.1:10002/devstoreaccount1: Azurite puts the account in the path
    queue_endpoint: str

    @classmethod
    def from_connection_string(cls, connection_string: str) -> Account:
        parts = dict(p.split("=", 1) for p in connection_string.split(";") if "=" in p)
        missing = {"AccountName", "AccountKey", "TableEndpoint", "QueueEndpoint"} - parts.keys()
        if missing:
            raise ValueError(f"the connection string lacks {', '.join(sorted(missing))}")
        return cls(
            parts["AccountName"],
            base64.b64decode(parts["AccountKey"]),
            parts["TableEndpoint"].rstrip("/"),
            parts["QueueEndpoint"].rstrip("/"),
        )

    def authorization(self, string_to_sign: str) -> str:
        digest = hmac.new(self.key, string_to_sign.encode(), hashlib.sha256).digest()
        return f"SharedKeyLite {self.name}:{base64.b64encode(digest).decode()}"

    def resource(self, path: str) -> str:
        """The canonicalized resource of a request path (query parameters other than comp are not signed)."""
        return f"/{self.name}{path}"


def _split(endpoint: str) -> tuple[str, str]:
    """(origin, base path) of a service endpoint: Azurite puts the account in the path, Azure does not."""
    scheme, _, rest = endpoint.partition("://")
    host, _, path = rest.partition("/")
    return f"{scheme}://{host}", f"/{path}" if path else ""


def _url(origin: str, path: str) -> URL:
    # encoded=True: send the path exactly as signed (yarl would otherwise re-normalise it).
    return URL(origin + path, encoded=True)


def table_headers(account: Account, path: str, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """Headers of a Table request: the Table service's Shared Key Lite signs the date and the resource only."""
    date = formatdate(usegmt=True)
    return {
        **ODATA_HEADERS,
        **(extra or {}),
        "x-ms-date": date,
        "Authorization": account.authorization(f"{date}\n{account.resource(path)}"),
    }


def queue_headers(account: Account, method: str, path: str, content_type: str = "") -> dict[str, str]:
    """Headers of a Queue request: Shared Key Lite for the Blob and Queue services signs the verb,
    Content-MD5 (none), Content-Type, Date (empty, as x-ms-date is sent), the x-ms- headers sorted by
    name, then the resource."""
    x_ms = {"x-ms-date": formatdate(usegmt=True), "x-ms-version": API_VERSION}
    canonical = "".join(f"{name}:{value}\n" for name, value in sorted(x_ms.items()))
    to_sign = f"{method}\n\n{content_type}\n\n{canonical}{account.resource(path)}"
    headers = {**x_ms, "Authorization": account.authorization(to_sign)}
    if content_type:
        headers["Content-Type"] = content_type
    return headers


# ---- entities on the wire -------------------------------------------------------------------------


def encode_entity(entity: Mapping[str, Any]) -> dict[str, Any]:
    """Table JSON for the values the bot stores: str, bool and Int32 as they are, datetime as Edm.DateTime
    (UTC) with its @odata.type; None is left out. Anything else is refused rather than guessed."""
    out: dict[str, Any] = {}
    for name, value in entity.items():
        if value is None:
            continue
        if isinstance(value, (str, bool)) or (isinstance(value, int) and value in _INT32):
            out[name] = value
        elif isinstance(value, datetime):
            utc = value.astimezone(UTC) if value.tzinfo else value
            out[name], out[name + "@odata.type"] = utc.strftime("%Y-%m-%dT%H:%M:%S.%fZ"), "Edm.DateTime"
        else:
            raise TypeError(f"property {name}: {type(value).__name__} {value!r} is not encoded by the bare client")
    return out


def _json(entity: Mapping[str, Any]) -> bytes:
    return json.dumps(encode_entity(entity), separators=(",", ":"), ensure_ascii=False).encode()


def _check(status: int, body: bytes, ok: Iterable[int], what: str) -> None:
    if status not in ok:
        raise RuntimeError(f"{what}: HTTP {status} {body[:300]!r}")


# ---- the clients ----------------------------------------------------------------------------------


class BareTable:
    """One table: each call is one signed aiohttp request."""

    def __init__(self, session: aiohttp.ClientSession, connection_string: str, table: str) -> None:
        self.session, self.table = session, table
        self.account = Account.from_connection_string(connection_string)
        self.origin, self.base_path = _split(self.account.table_endpoint)

    def _entity_path(self, pk: str, rk: str) -> str:
        pk_q = quote(pk.replace("'", "''"), safe="")
        rk_q = quote(rk.replace("'", "''"), safe="")
        return f"{self.base_path}/{self.table}(PartitionKey='{pk_q}',RowKey='{rk_q}')"

    async def _call(
        self, method: str, path: str, body: bytes | None, extra: Mapping[str, str] | None, ok: Iterable[int], what: str
    ) -> tuple[bytes, Any]:
        headers = table_headers(self.account, path, extra)
        async with self.session.request(method, _url(self.origin, path), data=body, headers=headers) as response:
            content = await response.read()
            _check(response.status, content, ok, f"table {self.table}: {what}")
            return content, response.headers

    async def get(self, pk: str, rk: str) -> tuple[dict[str, Any], str]:
        """The entity's properties as JSON gives them (datetimes stay text), and its ETag."""
        content, headers = await self._call("GET", self._entity_path(pk, rk), None, None, (200,), "read")
        return json.loads(content), headers["ETag"]

    async def replace(self, entity: Mapping[str, Any], etag: str) -> str:
        """Replace an existing entity only if its ETag is still `etag`; returns the new ETag."""
        return await self._put(entity, {"If-Match": etag}, "replace")

    async def upsert(self, entity: Mapping[str, Any]) -> str:
        """Insert or replace (a PUT without If-Match); returns the new ETag."""
        return await self._put(entity, {}, "upsert")

    async def _put(self, entity: Mapping[str, Any], condition: dict[str, str], what: str) -> str:
        path = self._entity_path(entity["PartitionKey"], entity["RowKey"])
        _, headers = await self._call(
            "PUT", path, _json(entity), {"Content-Type": "application/json", **condition}, (204,), what
        )
        return headers["ETag"]

    async def insert(self, entity: Mapping[str, Any] | bytes) -> None:
        """Insert one entity, given as values or as its wire JSON."""
        body = entity if isinstance(entity, bytes) else _json(entity)
        await self._call(
            "POST",
            f"{self.base_path}/{self.table}",
            body,
            {"Content-Type": "application/json", "Prefer": "return-no-content"},
            (201, 204),
            "insert",
        )

    async def insert_batch(self, entities: Iterable[Mapping[str, Any]]) -> None:
        """Insert up to 100 entities of one partition in one entity group transaction ($batch, multipart/mixed)."""
        batch, changeset = f"batch_{uuid.uuid4()}", f"changeset_{uuid.uuid4()}"
        target = f"{self.origin}{self.base_path}/{self.table}"
        parts = [
            f"--{changeset}\r\nContent-Type: application/http\r\nContent-Transfer-Encoding: binary\r\n\r\n"
            f"POST {target} HTTP/1.1\r\nContent-Type: application/json\r\nAccept: {ODATA_HEADERS['Accept']}\r\n"
            f"Prefer: return-no-content\r\nDataServiceVersion: 3.0;\r\n\r\n".encode()
            + _json(entity)
            + b"\r\n"
            for entity in entities
        ]
        body = b"".join(
            [
                f"--{batch}\r\nContent-Type: multipart/mixed; boundary={changeset}\r\n\r\n".encode(),
                *parts,
                f"--{changeset}--\r\n--{batch}--\r\n".encode(),
            ]
        )
        content, _ = await self._call(
            "POST",
            f"{self.base_path}/$batch",
            body,
            {"Content-Type": f"multipart/mixed; boundary={batch}"},
            (202,),
            "batch",
        )
        failed = _FAILED_PART.search(content)
        if failed:  # the service answers 202 for the batch and puts the failing operation's status inside
            raise RuntimeError(f"table {self.table}: batch: {content[failed.start() : failed.start() + 300]!r}")

    async def create(self) -> None:
        """Create the table (it must not exist)."""
        await self._call(
            "POST",
            f"{self.base_path}/Tables",
            json.dumps({"TableName": self.table}).encode(),
            {"Content-Type": "application/json", "Prefer": "return-no-content"},
            (201, 204),
            "create",
        )


class BareQueue:
    """One queue: a put is one signed aiohttp request."""

    def __init__(self, session: aiohttp.ClientSession, connection_string: str, queue: str) -> None:
        self.session, self.queue = session, queue
        self.account = Account.from_connection_string(connection_string)
        self.origin, base_path = _split(self.account.queue_endpoint)
        self.messages_path = f"{base_path}/{queue}/messages"

    async def send(self, content: str) -> str:
        """Put a text message (sent as is, XML-escaped); returns its id."""
        body = f"<QueueMessage><MessageText>{escape(content)}</MessageText></QueueMessage>".encode()
        headers = queue_headers(self.account, "POST", self.messages_path, "application/xml")
        async with self.session.post(_url(self.origin, self.messages_path), data=body, headers=headers) as response:
            answer = await response.read()
            _check(response.status, answer, (201,), f"queue {self.queue}: put")
        return answer.split(b"<MessageId>", 1)[1].split(b"</MessageId>", 1)[0].decode()
