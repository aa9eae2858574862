"""Table and Queue clients built from the app's storage connection settings.

The connection is named `BotStorage` (falling back to `AzureWebJobsStorage`) and
takes the forms the Functions host understands: a connection string, or the
identity-based family `<name>__tableServiceUri`, `<name>__queueServiceUri`,
`<name>__credential=managedidentity`, `<name>__clientId`. Clients (botcore.tables,
botcore.queues) are created on first use and cached per event loop, sharing one
aiohttp session that ignores proxy variables, so that no call re-reads the environment.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Mapping

from .loops import PerLoop
from .settings import QUEUES, STORAGE_CONNECTION, TABLES, ConfigurationError

if TYPE_CHECKING:
    from .queues import QueueClient
    from .tables import TableClient

FALLBACK_CONNECTION = "AzureWebJobsStorage"
STORAGE_TIMEOUT = 30.0  # seconds per storage call; a turn must not hang on a dead socket
DEVELOPMENT_STORAGE = (
    "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;"
    "AccountKey=Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==;"
    "BlobEndpoint=http://127.0.0.1:10000/devstoreaccount1;"
    "QueueEndpoint=http://127.0.0.1:10001/devstoreaccount1;"
    "TableEndpoint=http://127.0.0.1:10002/devstoreaccount1;"
)


@dataclass(frozen=True)
class StorageConnection:
    """Either a connection string, or service URIs plus a managed identity."""

    connection_string: str | None = None
    table_uri: str | None = None
    queue_uri: str | None = None
    client_id: str | None = None


def connection_from_env(env: Mapping[str, str] | None = None) -> StorageConnection:
    env = os.environ if env is None else env
    for name in (STORAGE_CONNECTION, FALLBACK_CONNECTION):
        value = env.get(name, "").strip()
        if value:
            if value.replace(" ", "").lower() == "usedevelopmentstorage=true":
                value = DEVELOPMENT_STORAGE
            return StorageConnection(connection_string=value)
        prefix = name + "__"
        family = {k[len(prefix):].lower(): v for k, v in env.items() if k.startswith(prefix) and v}
        if family:
            account = family.get("accountname")
            table_uri = family.get("tableserviceuri") or (
                account and f"https://{account}.table.core.windows.net"
            )
            queue_uri = family.get("queueserviceuri") or (
                account and f"https://{account}.queue.core.windows.net"
            )
            if not (table_uri and queue_uri):
                raise ConfigurationError(
                    f"{prefix}tableServiceUri and {prefix}queueServiceUri (or {prefix}accountName) are required"
                )
            credential = family.get("credential", "managedidentity").lower()
            if credential != "managedidentity":
                raise ConfigurationError(f"{prefix}credential must be managedidentity")
            return StorageConnection(
                table_uri=table_uri, queue_uri=queue_uri, client_id=family.get("clientid")
            )
    raise ConfigurationError(
        f"no storage connection: set {STORAGE_CONNECTION} (a connection string, or "
        f"{STORAGE_CONNECTION}__tableServiceUri/__queueServiceUri with a managed identity)"
    )


class _Clients:
    """The storage clients of one event loop, sharing one aiohttp session."""

    def __init__(self, connection: StorageConnection) -> None:
        import aiohttp

        self.connection = connection
        self.session = aiohttp.ClientSession(
            trust_env=False, timeout=aiohttp.ClientTimeout(total=STORAGE_TIMEOUT, connect=10.0))
        self.credential: Any = None
        if connection.connection_string is None:
            from .tokens import ManagedIdentityCredential

            self.credential = ManagedIdentityCredential(
                os.environ.get("IDENTITY_ENDPOINT", ""),
                os.environ.get("IDENTITY_HEADER", ""),
                connection.client_id,
            )
        self.tables: dict[str, TableClient] = {}
        self.queues: dict[str, QueueClient] = {}

    def table(self, name: str) -> "TableClient":
        client = self.tables.get(name)
        if client is None:
            from .storagehttp import BearerToken
            from .tables import TableClient, table_endpoint

            if self.connection.connection_string:
                endpoint, auth = table_endpoint(self.connection.connection_string)
                client = TableClient(endpoint, name, auth, self.session)
            else:
                assert self.connection.table_uri is not None
                client = TableClient(self.connection.table_uri, name, BearerToken(self.credential), self.session)
            self.tables[name] = client
        return client

    def queue(self, name: str) -> "QueueClient":
        client = self.queues.get(name)
        if client is None:
            from .queues import QueueClient
            from .storagehttp import BearerToken

            if self.connection.connection_string:
                client = QueueClient.from_connection_string(self.connection.connection_string, name, self.session)
            else:
                assert self.connection.queue_uri is not None
                client = QueueClient(self.connection.queue_uri, name, BearerToken(self.credential), self.session)
            self.queues[name] = client
        return client


async def _close(clients: _Clients) -> None:
    await clients.session.close()


_by_loop: PerLoop[_Clients] = PerLoop(close=_close)


def _clients() -> _Clients:
    return _by_loop.get(lambda: _Clients(connection_from_env()))


def get_table_client(name: str) -> "TableClient":
    """The process-wide TableClient for `name` (botcore.tables)."""
    return _clients().table(name)


def get_queue_client(name: str) -> "QueueClient":
    """The process-wide QueueClient for `name` (botcore.queues)."""
    return _clients().queue(name)


class TableStore:
    """A store over one table; it uses the process-wide client unless given one."""

    table_name: str

    def __init__(self, table: Any = None) -> None:
        self._table = table

    @property
    def table(self) -> "TableClient":
        if self._table is None:
            self._table = get_table_client(self.table_name)
        return self._table


async def close_storage_clients() -> None:
    clients = _by_loop.pop()
    if clients is not None:
        await _close(clients)


async def ensure_resources() -> None:
    """Create every table and queue the app uses (and the poison queues) if missing."""
    for table in TABLES:
        await get_table_client(table).create()
    for queue in QUEUES:
        for name in (queue, f"{queue}-poison"):
            await get_queue_client(name).create()
