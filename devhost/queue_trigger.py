"""Queue triggers: poll, decode, invoke, delete on success, retry, then `<queue>-poison`.

Follows host.json `extensions.queues` (batchSize, newBatchThreshold, maxDequeueCount,
visibilityTimeout, maxPollingInterval, messageEncoding) as the Functions host does.
Queues are read with azure-storage-queue's async client, as the app writes them, on one
transport that ignores proxy variables; a poll is one request for up to batchSize messages.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from .app_loader import FunctionInfo, HostConfigError, parse_timespan, resolve
from .triggers import queue_message

log = logging.getLogger("devhost.queue")

# A received message is hidden for a lease, renewed while its function runs, so the message of a host that was
# killed reappears within the lease: PROCESSING_LEASE seconds, or the LocalQueueLeaseSeconds setting (tests
# that kill hosts wait less for their messages).
PROCESSING_LEASE = 30
MIN_LEASE = 3
MIN_POLL = 0.1
DEVELOPMENT_STORAGE = "usedevelopmentstorage=true"


@dataclass(frozen=True)
class QueueOptions:
    batch_size: int = 16
    new_batch_threshold: int = 8
    max_dequeue_count: int = 5
    visibility_timeout: float = 0.0
    max_polling_interval: float = 60.0
    message_encoding: str = "base64"

    @classmethod
    def from_host_json(cls, queues: dict[str, Any]) -> QueueOptions:
        batch = int(queues.get("batchSize", 16))
        encoding = str(queues.get("messageEncoding", "base64")).lower()
        if encoding not in ("base64", "none"):
            raise HostConfigError("host.json extensions.queues.messageEncoding must be base64 or none")
        if not 1 <= batch <= 32:
            raise HostConfigError("host.json extensions.queues.batchSize must be 1-32")
        return cls(
            batch_size=batch,
            new_batch_threshold=int(queues.get("newBatchThreshold", batch // 2)),
            max_dequeue_count=int(queues.get("maxDequeueCount", 5)),
            visibility_timeout=parse_timespan(queues.get("visibilityTimeout"), 0.0),
            max_polling_interval=max(MIN_POLL, parse_timespan(queues.get("maxPollingInterval"), 60.0)),
            message_encoding=encoding,
        )


def connection_string(connection: str) -> str:
    value = os.environ.get(connection or "AzureWebJobsStorage", "").strip()
    if not value:
        raise HostConfigError(
            f"queue connection {connection!r}: set the setting {connection} to a connection string "
            "(identity-based connections are not supported by the local host)"
        )
    if value.replace(" ", "").lower() == DEVELOPMENT_STORAGE:
        from .azurite import connection_string as azurite

        return azurite("http://127.0.0.1:10001", "http://127.0.0.1:10002", "http://127.0.0.1:10000")
    return value


def processing_lease() -> int:
    raw = os.environ.get("LocalQueueLeaseSeconds", "").strip()
    if not raw:
        return PROCESSING_LEASE
    if not raw.isdigit() or int(raw) < MIN_LEASE:
        raise HostConfigError(
            f"LocalQueueLeaseSeconds must be a whole number of seconds, at least {MIN_LEASE}, not {raw[:40]!r}"
        )
    return int(raw)


Invoke = Callable[[FunctionInfo, Any, str], Awaitable[Any]]


class QueueListener:
    def __init__(self, function: FunctionInfo, options: QueueOptions, invoke: Invoke) -> None:
        self.function, self.options, self.invoke = function, options, invoke
        self.queue_name = resolve(function.trigger["queueName"])
        self.connection = connection_string(function.trigger.get("connection", ""))
        self.lease = processing_lease()
        self._stopping = asyncio.Event()
        self._running: set[asyncio.Task] = set()
        self.ready = asyncio.Event()  # the queue and its poison queue exist

    def stop(self) -> None:
        self._stopping.set()

    async def open(self) -> None:
        """Create the queue and its poison queue if missing; HostConfigError (one line) if storage fails."""
        from azure.core.exceptions import AzureError, ResourceExistsError, ServiceRequestError
        from azure.core.pipeline.transport import AioHttpTransport
        from azure.storage.queue.aio import QueueClient

        self._transport = AioHttpTransport(use_env_settings=False, connection_timeout=10, read_timeout=30)
        await self._transport.open()
        self._queue, self._poison = (
            QueueClient.from_connection_string(
                self.connection, name, transport=self._transport, retry_total=2, initial_backoff=0.5, increment_base=2
            )
            for name in (self.queue_name, f"{self.queue_name}-poison")
        )
        try:
            for client in (self._queue, self._poison):
                try:
                    await client.create_queue(retry_connect=0)  # nothing listening: say so now, not in 7 s
                except ResourceExistsError:
                    pass
        except AzureError as exc:
            await self.close()
            endpoint = "{0.scheme}://{0.netloc}".format(urlsplit(self._queue.url))
            setting = self.function.trigger.get("connection") or "AzureWebJobsStorage"
            if isinstance(exc, ServiceRequestError):
                raise HostConfigError(
                    f"cannot reach storage at {endpoint} (setting {setting}) for queue "
                    f"{self.queue_name}: is Azurite running? scripts/run starts it"
                ) from exc
            raise HostConfigError(
                f"storage at {endpoint} (setting {setting}) refused queue {self.queue_name}: "
                f"{str(exc.message or exc).splitlines()[0]}"
            ) from exc
        self.ready.set()

    async def run(self) -> None:
        """Poll until stopped (after `open`), then wait for the running invocations."""
        try:
            await self._poll(self._queue, self._poison)
            if self._running:
                log.info("%s: waiting for %d running invocation(s)", self.function.name, len(self._running))
                await asyncio.gather(*self._running, return_exceptions=True)
        finally:
            await self.close()

    async def close(self) -> None:
        await self._transport.close()

    async def _poll(self, queue: Any, poison: Any) -> None:
        loop = asyncio.get_running_loop()
        interval = MIN_POLL
        one_by_one_until = 0.0  # after a failed read: one message per request, so a bad one fails alone
        while not self._stopping.is_set():
            free = self.options.batch_size - len(self._running)
            if len(self._running) > self.options.new_batch_threshold or free <= 0:
                await self._wait(MIN_POLL)
                continue
            try:
                messages = await _receive(queue, 1 if loop.time() < one_by_one_until else free, self.lease)
            except Exception as exc:
                # A message the service cannot send back (Azurite and some characters) fails the whole
                # read, and the read has hidden every message it took: once they reappear, take them one
                # at a time, so that its neighbours get through and only it keeps failing.
                log.warning(
                    "%s: cannot read queue %s (%r); reading one message at a time for %ds",
                    self.function.name,
                    self.queue_name,
                    exc,
                    2 * self.lease,
                )
                one_by_one_until = loop.time() + 2 * self.lease
                messages = []
            if not messages:
                await self._wait(interval)
                interval = min(interval * 2, self.options.max_polling_interval)
                continue
            interval = MIN_POLL
            for message in messages:
                if self._stopping.is_set():
                    # Received but not started: make it visible again at once.
                    await queue.update_message(message, visibility_timeout=0)
                    continue
                task = asyncio.create_task(self._process(queue, poison, message))
                self._running.add(task)
                task.add_done_callback(self._running.discard)

    async def _wait(self, seconds: float) -> None:
        try:
            await asyncio.wait_for(self._stopping.wait(), seconds)
        except TimeoutError:
            pass

    async def _process(self, queue: Any, poison: Any, message: Any) -> None:
        content: str = message.content or ""
        if message.dequeue_count > self.options.max_dequeue_count:
            await self._to_poison(queue, poison, message, "dequeue count exceeded before processing")
            return
        if self.options.message_encoding == "base64":
            try:
                body = base64.b64decode(content, validate=True)
            except (binascii.Error, ValueError):
                await self._to_poison(queue, poison, message, "message is not valid base64 (messageEncoding=base64)")
                return
        else:
            body = content.encode("utf-8")
        trigger = queue_message(
            message.id,
            body,
            message.dequeue_count,
            message.pop_receipt,
            message.inserted_on,
            message.expires_on,
            message.next_visible_on,
        )
        done = asyncio.Event()
        renewal = asyncio.create_task(self._keep_hidden(queue, message, done))
        try:
            try:
                await self.invoke(self.function, trigger, f"New queue message detected on '{self.queue_name}'")
            finally:
                done.set()
                await renewal
        except Exception:
            try:
                if message.dequeue_count >= self.options.max_dequeue_count:
                    await self._to_poison(queue, poison, message, f"failed {message.dequeue_count} times")
                else:
                    await queue.update_message(message, visibility_timeout=int(self.options.visibility_timeout))
            except Exception as exc:  # it reappears when its lease ends all the same
                self._lost_lease(message, "make visible again", exc)
            return
        try:
            await queue.delete_message(message)
        except Exception as exc:
            self._lost_lease(message, "delete", exc)

    async def _keep_hidden(self, queue: Any, message: Any, done: asyncio.Event) -> None:
        """Renew the message's lease until `done` (the pop receipt changes each time). Never stopped in the middle of
        a renewal: one the service made and the host never saw would leave it a pop receipt that no longer works,
        so the message's delete would fail and the message come back once its lease ran out."""
        while True:
            try:
                await asyncio.wait_for(done.wait(), self.lease / 3)
                return
            except TimeoutError:
                pass
            try:
                renewed = await queue.update_message(message, visibility_timeout=self.lease)
                message.pop_receipt = renewed.pop_receipt
            except Exception as exc:
                log.warning("%s: cannot renew the lease of message %s: %r", self.function.name, message.id, exc)

    def _lost_lease(self, message: Any, what: str, exc: Exception) -> None:
        """The message's lease lapsed (a renewal failed, or came late) and another reader may hold it now: it
        runs again there, as the Functions host would run it again."""
        log.warning(
            "%s: cannot %s message %s (%s); its lease lapsed, so it may run again",
            self.function.name,
            what,
            message.id,
            getattr(exc, "error_code", None) or type(exc).__name__,
        )

    async def _to_poison(self, queue: Any, poison: Any, message: Any, why: str) -> None:
        log.error("%s: message %s moved to %s-poison: %s", self.function.name, message.id, self.queue_name, why)
        await poison.send_message(message.content)
        await queue.delete_message(message)


async def _receive(queue: Any, count: int, lease: int) -> list[Any]:
    """Up to `count` messages in one request (the SDK's pager would ask again for the rest), hidden for `lease`.

    Not retried: a read that failed has hidden what it took, so its retry finds an empty queue and the
    failure would go unseen (the next poll is the retry)."""
    pages = queue.receive_messages(messages_per_page=count, visibility_timeout=lease, retry_total=0).by_page()
    try:
        return [message async for message in await pages.__anext__()]
    except StopAsyncIteration:
        return []
