"""Table and Queue Storage through the Azure SDK's async clients, with the SDK's errors mapped once.

The connection is named `BotStorage` (falling back to `AzureWebJobsStorage`) and
takes the forms the Functions host understands: a connection string, or the
identity-based family `<name>__tableServiceUri`, `<name>__queueServiceUri`,
`<name>__credential=managedidentity`, `<name>__clientId`, whose token comes from
azure-identity's managed-identity credential (botcore.storage_identity).

Cost is decided by how the clients are built, so they are built once: per event
loop, one `azure.data.tables.aio.TableClient` per table and one
`azure.storage.queue.aio.QueueClient` per queue, all on one aiohttp transport that
ignores proxy variables (the SDK's default transport re-reads them on every call,
which doubled the CPU of a point read), with retries bounded in seconds rather than
the SDK's minutes, since a turn is waiting.

`Table` and `Queue` are the seam: the rest of botcore speaks of entities, ETags and
conflicts, and catches botcore's errors, never azure-core's.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, NoReturn

from . import telemetry
from .errors import BadInputError, BotError, ConfigurationError, ConflictError, NotFoundError, UnavailableError
from .loops import PerLoop
from .settings import QUEUE_MAX_DELAY, QUEUES, TABLES, Settings, StorageConnection, get_settings

if TYPE_CHECKING:
    from azure.core.credentials_async import AsyncTokenCredential
    from azure.core.exceptions import AzureError
    from azure.data.tables import TableEntity
    from azure.data.tables.aio import TableClient
    from azure.storage.queue.aio import QueueClient

log = logging.getLogger(__name__)

CONNECT_TIMEOUT = 10  # seconds; a turn must not hang on a dead socket
READ_TIMEOUT = 30
RETRIES = 2  # after the first attempt, for network errors, 408, 429 and 5xx
# Seconds an idle pooled connection is kept: under the 5 s after which Node servers (Azurite) close one.
# aiohttp keeps them 15 s, so a write after a pause could take a connection the server had just closed
# ("Server disconnected"), and its retries other such connections: the write failed, its batch stopped.
KEEPALIVE = 4.0
MAX_PAGE = 1000  # entities Table Storage answers a query with at most
MESSAGE_TTL = 7 * 86400  # seconds a queue message lives by default, counted from when it is put


# ---- errors ------------------------------------------------------------------------------------


class StorageError(BotError):
    """A storage call failed; `status` 0 means no HTTP answer, `service_code` is the error code the storage
    service answered with (None without one). Each subclass is one kind (botcore.errors)."""

    def __init__(self, status: int, service_code: str | None, message: str) -> None:
        super().__init__(f"HTTP {status} {service_code or ''}: {message}".strip() if status else message)
        self.status, self.service_code = status, service_code


class EntityNotFoundError(StorageError, NotFoundError):
    pass


class EntityExistsError(StorageError, ConflictError):
    pass


class EntityChangedError(StorageError, ConflictError):
    """The ETag no longer matches: another writer got there first."""


class EntityTooLargeError(StorageError, BadInputError):
    pass


class TransactionFailedError(StorageError, ConflictError):
    """One operation of a batch failed, so none was applied; `index` says which."""

    def __init__(self, status: int, service_code: str | None, message: str, index: int | None) -> None:
        super().__init__(status, service_code, message)
        self.index = index


class StorageUnavailableError(StorageError, UnavailableError):
    """The service did not answer, answered 5xx on every attempt, or failed in a way the bot cannot fix
    (a missing table, a refused identity): retry later, and read `service_code`."""


STORAGE_TIMEOUT = 10.0  # a storage call of a running batch that takes longer stops it: storage is hanging


class StorageStalledError(UnavailableError):
    """Storage did not answer a running batch within STORAGE_TIMEOUT: the batch stops, and its claim lapses so that
    another worker takes it over once storage answers."""


_TOO_LARGE = frozenset({"EntityTooLarge", "PropertyValueTooLarge", "RequestBodyTooLarge"})
_CONTAINER_MISSING = frozenset({"TableNotFound", "QueueNotFound"})


def _code_and_message(exc: Any) -> tuple[str | None, str]:
    """The service's error code and first message line; some SDK operations leave them undecoded."""
    code = getattr(exc, "error_code", None)
    code = str(getattr(code, "value", code)) if code else None  # an enum, or text
    message = (exc.message or "").split("\n", 1)[0]
    response = exc.response
    if response is None or (code and not message.startswith("Operation returned")):
        return code, message
    code = code or response.headers.get("x-ms-error-code")
    try:
        body = response.text()
        error = json.loads(body).get("odata.error") or {}
        return code or error.get("code"), str((error.get("message") or {}).get("value", "")).split("\n", 1)[0]
    except (ValueError, AttributeError, TypeError):
        return code, message


class _mapped:
    """`with _mapped("table t: read"):` an SDK error raised inside becomes botcore's (_raise_mapped), its message
    prefixed with the words given; anything else (a bug, a cancellation) passes unchanged. The call is a span
    named by those words (botcore.telemetry), failed when storage did: not for a conflict or a missing entity."""

    __slots__ = ("what", "call")

    def __init__(self, what: str) -> None:
        self.what = what

    def __enter__(self) -> None:
        self.call = telemetry.storage_call(self.what)

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, traceback: object) -> None:
        if isinstance(exc, Exception):
            from azure.core.exceptions import AzureError  # the SDK loads on the first storage call, not at import

            if isinstance(exc, AzureError):
                try:
                    _raise_mapped(exc, self.what)
                except StorageError as mapped:
                    self.call.end(mapped, failed=isinstance(mapped, StorageUnavailableError))
                    raise
        self.call.end(None if isinstance(exc, StopAsyncIteration) else exc)  # that one: a query with no page


def _raise_mapped(exc: AzureError, what: str) -> NoReturn:
    """The one translation of the SDK's exceptions into botcore's."""
    # Loaded by the call that failed already; imported here so that importing storage costs a cold start nothing.
    from azure.core.exceptions import HttpResponseError, ResourceModifiedError
    from azure.data.tables import TableTransactionError

    if not isinstance(exc, HttpResponseError):  # ServiceRequestError, ServiceResponseError: no answer
        raise StorageUnavailableError(0, None, f"{what}: {type(exc).__name__}: {exc}"[:300]) from exc
    status = exc.status_code or 0
    code, message = _code_and_message(exc)
    message = f"{what}: {message}"[:300]
    if isinstance(exc, TableTransactionError):
        raise TransactionFailedError(status, code, message, exc.index) from exc
    if status == 404 and code not in _CONTAINER_MISSING:
        raise EntityNotFoundError(status, code, message) from exc
    if code in ("EntityAlreadyExists", "TableAlreadyExists", "QueueAlreadyExists"):  # a queue says so with 204
        raise EntityExistsError(status, code, message) from exc
    if status == 412 or isinstance(exc, ResourceModifiedError):
        raise EntityChangedError(status, code, message) from exc
    if status == 413 or code in _TOO_LARGE:
        raise EntityTooLargeError(status, code, message) from exc
    raise StorageUnavailableError(status, code, message) from exc


# ---- the seam ----------------------------------------------------------------------------------


def etag_of(entity: TableEntity) -> str:
    """The ETag a read entity carries (the SDK keeps it in the entity's metadata)."""
    return str(entity.metadata["etag"])


async def _create(create: Callable[[], Awaitable[Any]], what: str) -> bool:
    """Run an SDK create call; False if the table or queue existed."""
    try:
        with _mapped(what):
            await create()
    except EntityExistsError:
        return False
    return True


class Table:
    """One table: entities, ETag-conditional writes, paged queries, batch transactions.

    Writes return the new ETag. Transactions take the SDK's operations:
    ("create" | "upsert" | "update" | "delete", entity[, {"mode": ..., "etag": ...}]).
    Besides the errors each method names, every method raises StorageUnavailableError: no answer, 5xx after the
    retries, a missing table (`service_code` TableNotFound), a refused identity, or any other refusal.
    """

    def __init__(self, client: TableClient) -> None:
        self.client = client
        self.name: str = client.table_name

    async def get(self, pk: str, rk: str) -> TableEntity:
        """The entity; EntityNotFoundError if there is none."""
        with _mapped(f"table {self.name}: read"):
            return await self.client.get_entity(pk, rk)

    async def insert(self, entity: Mapping[str, Any]) -> str:
        """Insert a new entity. EntityExistsError if it exists; EntityTooLargeError if it does not fit."""
        with _mapped(f"table {self.name}: insert"):
            written: Mapping[str, Any] = await self.client.create_entity(entity)
            return str(written["etag"])

    async def replace(self, entity: Mapping[str, Any], etag: str | None = None) -> str:
        """Replace an existing entity; with `etag`, only if unchanged since it was read. EntityNotFoundError if
        there is none, EntityChangedError if it changed, EntityTooLargeError if it does not fit."""
        return await self._update(entity, "replace", etag)

    async def merge(self, entity: Mapping[str, Any], etag: str | None = None) -> str:
        """Update the given properties of an existing entity; `etag` and errors as for replace."""
        return await self._update(entity, "merge", etag)

    async def _update(self, entity: Mapping[str, Any], mode: str, etag: str | None) -> str:
        from azure.core import MatchConditions  # loaded with the client that makes this call

        condition = MatchConditions.IfNotModified if etag else MatchConditions.Unconditionally
        with _mapped(f"table {self.name}: {mode}"):
            written: Mapping[str, Any] = await self.client.update_entity(
                entity, mode, etag=etag, match_condition=condition
            )
            return str(written["etag"])

    async def upsert(self, entity: Mapping[str, Any], *, merge: bool = False) -> str:
        """Insert, or replace (merge) whatever is there. EntityTooLargeError if it does not fit."""
        with _mapped(f"table {self.name}: upsert"):
            written: Mapping[str, Any] = await self.client.upsert_entity(entity, "merge" if merge else "replace")
            return str(written["etag"])

    async def delete(self, pk: str, rk: str, etag: str | None = None) -> None:
        """Delete an entity (gone already is fine); with `etag`, only if unchanged: EntityChangedError if not."""
        from azure.core import MatchConditions  # loaded with the client that makes this call

        condition = MatchConditions.IfNotModified if etag else MatchConditions.Unconditionally
        with _mapped(f"table {self.name}: delete"):
            await self.client.delete_entity(pk, rk, etag=etag, match_condition=condition)

    async def page(
        self,
        query_filter: str | None = None,
        *,
        select: list[str] | None = None,
        page_size: int = MAX_PAGE,
        cursor: str | None = None,
    ) -> tuple[list[TableEntity], str | None]:
        """One page of a query; the cursor (opaque, storable text) resumes it, None at the end. Raises only
        StorageUnavailableError, also for a filter the service refuses."""
        try:
            with _mapped(f"table {self.name}: query"):
                pages = self._pages(query_filter, select, page_size, cursor)
                entities = [entity async for entity in await pages.__anext__()]
                token = pages.continuation_token
        except StopAsyncIteration:
            return [], None
        return entities, json.dumps(token, separators=(",", ":")) if token else None

    async def query(
        self, query_filter: str | None = None, *, select: list[str] | None = None, page_size: int = MAX_PAGE
    ) -> AsyncIterator[TableEntity]:
        """Every matching entity, page by page (never all in memory). Raises as page does."""
        with _mapped(f"table {self.name}: query"):
            async for page in self._pages(query_filter, select, page_size, None):
                async for entity in page:
                    yield entity

    def _pages(self, query_filter: str | None, select: list[str] | None, page_size: int, cursor: str | None) -> Any:
        if query_filter:
            pager = self.client.query_entities(query_filter, results_per_page=page_size, select=select)
        else:
            pager = self.client.list_entities(results_per_page=page_size, select=select)
        return pager.by_page(continuation_token=json.loads(cursor) if cursor else None)

    async def transact(self, operations: Iterable[tuple[Any, ...]]) -> None:
        """Apply up to 100 operations on one partition atomically. TransactionFailedError if one fails (its
        `index` says which; none was applied)."""
        with _mapped(f"table {self.name}: transaction"):
            await self.client.submit_transaction(list(operations))

    async def create(self) -> bool:
        """Create the table; False if it existed. Raises only StorageUnavailableError."""
        return await _create(self.client.create_table, f"table {self.name}: create")


class CountedTable(Table):
    """A table whose calls are counted by kind into `counts`, which the tables of one piece of work share: point
    reads, writes (inserts, updates, upserts), deletes, batches (transactions) and queries (each page of one).
    Each call counts when it is made, as the service bills it whether or not it succeeds."""

    def __init__(self, table: Table, counts: Counter[str]) -> None:
        super().__init__(table.client)
        self.counts = counts

    async def get(self, pk: str, rk: str) -> TableEntity:
        self.counts["reads"] += 1
        return await super().get(pk, rk)

    async def insert(self, entity: Mapping[str, Any]) -> str:
        self.counts["writes"] += 1
        return await super().insert(entity)

    async def _update(self, entity: Mapping[str, Any], mode: str, etag: str | None) -> str:
        self.counts["writes"] += 1
        return await super()._update(entity, mode, etag)

    async def upsert(self, entity: Mapping[str, Any], *, merge: bool = False) -> str:
        self.counts["writes"] += 1
        return await super().upsert(entity, merge=merge)

    async def delete(self, pk: str, rk: str, etag: str | None = None) -> None:
        self.counts["deletes"] += 1
        await super().delete(pk, rk, etag)

    async def transact(self, operations: Iterable[tuple[Any, ...]]) -> None:
        self.counts["batches"] += 1
        await super().transact(operations)

    def _pages(self, query_filter: str | None, select: list[str] | None, page_size: int, cursor: str | None) -> Any:
        return _CountedPages(super()._pages(query_filter, select, page_size, cursor), self.counts)


class _CountedPages:
    """A query's pages, each counted as it is fetched."""

    def __init__(self, pages: Any, counts: Counter[str]) -> None:
        self.pages, self.counts = pages, counts

    def __aiter__(self) -> _CountedPages:
        return self

    async def __anext__(self) -> Any:
        page = await self.pages.__anext__()
        self.counts["queries"] += 1
        return page

    @property
    def continuation_token(self) -> Any:
        return self.pages.continuation_token


class Queue:
    """One queue: messages are text, sent as is (host.json `messageEncoding` is `none`). Besides the errors each
    method names, every method raises StorageUnavailableError: no answer, 5xx after the retries, a missing queue
    (`service_code` QueueNotFound), a refused identity, or any other refusal."""

    def __init__(self, client: QueueClient) -> None:
        self.client = client
        self.name: str = client.queue_name

    async def send(self, content: str, *, delay: float = 0) -> str:
        """Put a message, hidden for `delay` seconds (whole seconds, rounded down: never later than asked);
        returns its id. Queue Storage hides a message for at most QUEUE_MAX_DELAY, so a longer delay is cut to
        that: only a send batch's slot can be that far off, and a batch that arrives before its slot goes back on
        the queue (delivery.send.deliver). EntityTooLargeError if the message is larger than a queue message
        may be (64 KiB)."""
        if delay > QUEUE_MAX_DELAY:
            log.warning(
                "queue %s: a delay of %.0fs is more than Queue Storage allows; the message is hidden for "
                "%ds and looked at again then",
                self.name,
                delay,
                QUEUE_MAX_DELAY,
            )
            delay = QUEUE_MAX_DELAY
        seconds = int(delay) if delay > 0 else 0  # NaN too
        # One hidden for as long as it lives would expire the moment it appeared: its life starts when it appears.
        ttl = seconds + MESSAGE_TTL if seconds else None
        with _mapped(f"queue {self.name}: put"):
            message = await self.client.send_message(content, visibility_timeout=seconds or None, time_to_live=ttl)
        return message.id

    async def create(self) -> bool:
        """Create the queue; False if it existed. Raises only StorageUnavailableError."""
        return await _create(self.client.create_queue, f"queue {self.name}: create")


# ---- clients, one set per event loop -------------------------------------------------------------


class _Clients:
    """The storage clients of one event loop, on one shared transport."""

    def __init__(self, connection: StorageConnection, settings: Settings) -> None:
        import aiohttp  # azure-core's async transport: on the first storage call
        from azure.core.pipeline.transport import AioHttpTransport  # likewise

        # Every request would otherwise log its URL and headers at INFO, the Functions host's level.
        logging.getLogger("azure.core.pipeline.policies.http_logging_policy").setLevel(logging.WARNING)
        self.connection = connection
        # The session azure-core would make, with idle connections dropped before a server drops them.
        session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(keepalive_timeout=KEEPALIVE),
            trust_env=False,
            cookie_jar=aiohttp.DummyCookieJar(),
            auto_decompress=False,  # azure-core decodes bodies itself
        )
        self.transport = AioHttpTransport(
            session=session,
            session_owner=True,
            use_env_settings=False,
            connection_timeout=CONNECT_TIMEOUT,
            read_timeout=READ_TIMEOUT,
        )
        self.credential: AsyncTokenCredential | None = None
        if connection.connection_string is None:
            if not settings.identity_endpoint:
                raise ConfigurationError("identity-based storage needs a managed identity (IDENTITY_ENDPOINT)")
            from .storage_identity import StorageIdentity  # only identity-based storage imports azure-identity

            # Its token requests are retried as the storage clients' are, over a transport of its own.
            self.credential = StorageIdentity(
                client_id=connection.client_id or None,
                retry_total=RETRIES,
                retry_backoff_factor=0.2,
                retry_backoff_max=2,
                transport=AioHttpTransport(
                    use_env_settings=False, connection_timeout=CONNECT_TIMEOUT, read_timeout=READ_TIMEOUT
                ),
            )
        self.tables: dict[str, Table] = {}
        self.queues: dict[str, Queue] = {}

    def table(self, name: str) -> Table:
        table = self.tables.get(name)
        if table is None:
            from azure.data.tables.aio import TableClient  # on the first use of a table

            options = {
                "transport": self.transport,
                "retry_total": RETRIES,
                "retry_backoff_factor": 0.2,
                "retry_backoff_max": 2,
            }
            if self.connection.connection_string:
                client = TableClient.from_connection_string(self.connection.connection_string, name, **options)
            else:
                assert self.connection.table_uri is not None
                client = TableClient(self.connection.table_uri, name, credential=self.credential, **options)
            table = self.tables[name] = Table(client)
        return table

    def queue(self, name: str) -> Queue:
        queue = self.queues.get(name)
        if queue is None:
            from azure.storage.queue.aio import QueueClient  # on the first use of a queue

            # The SDK's own retry policy, waiting about 0.5 s then 2.5 s instead of 15 s then 18 s.
            options = {
                "transport": self.transport,
                "retry_total": RETRIES,
                "initial_backoff": 0.5,
                "increment_base": 2,
                "random_jitter_range": 0.5,
            }
            if self.connection.connection_string:
                client = QueueClient.from_connection_string(self.connection.connection_string, name, **options)
            else:
                assert self.connection.queue_uri is not None
                client = QueueClient(self.connection.queue_uri, name, credential=self.credential, **options)
            queue = self.queues[name] = Queue(client)
        return queue

    async def close(self) -> None:
        await self.transport.close()  # the clients' pipelines share it; closing it releases every socket
        if self.credential is not None:
            await self.credential.close()


async def _close(clients: _Clients) -> None:
    await clients.close()


_by_loop: PerLoop[_Clients] = PerLoop(close=_close)


def _clients() -> _Clients:
    def make() -> _Clients:
        settings = get_settings()
        return _Clients(settings.storage, settings)

    return _by_loop.get(make)


def get_table(name: str) -> Table:
    """This loop's client for table `name`."""
    return _clients().table(name)


def get_queue(name: str) -> Queue:
    """This loop's client for queue `name`."""
    return _clients().queue(name)


class TableStore:
    """A store over one table; it uses this loop's client unless given one."""

    table_name: str

    def __init__(self, table: Table | None = None) -> None:
        self._table = table

    @property
    def table(self) -> Table:
        if self._table is None:
            self._table = get_table(self.table_name)
        return self._table


async def close_storage_clients() -> None:
    clients = _by_loop.pop()
    if clients is not None:
        await _close(clients)


async def ensure_resources() -> None:
    """Create every table and queue the app uses (and the poison queues) if missing."""
    for table in TABLES:
        await get_table(table).create()
    for queue in QUEUES:
        for name in (queue, f"{queue}-poison"):
            await get_queue(name).create()
