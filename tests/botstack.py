"""The whole bot, as deployed, on one machine: Azurite, the local identity provider, the fake
Bot Connector (the channel), and function_app.py running in the local host as a subprocess."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

from devhost.channel import FakeConnector, TeamsLimits
from devhost.identity import IdentityProvider
from tests.hostproc import REPO, HostProcess

APP_ID = "3f1c3a6e-0000-4000-8000-00000000b07a"
PASSWORD = "local-test-secret"


@contextlib.contextmanager
def environment(env: dict[str, str]) -> Iterator[None]:
    """Set environment variables for the duration (botcore reads its settings from there)."""
    from botcore.settings import get_settings

    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    get_settings.cache_clear()
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        get_settings.cache_clear()


_collections_held = 0


def _hold_collections() -> None:
    """No collection of garbage cycles in this process while a Teams-mode channel runs in it. The fake counts
    Teams' windows by the time each request reaches its handler, in this process: a collection stopped it for up
    to 0.1 s (95 ms measured in the scale benchmark), the requests that waited meanwhile were counted as arriving
    together, and every tenant met a 429 about a second later. Teams counts requests as the network delivers
    them; the bot's pace is not at fault there. Objects are freed by their counts meanwhile; cycles wait."""
    global _collections_held
    if _collections_held == 0:
        gc.collect()
        gc.freeze()
        gc.disable()
    _collections_held += 1


def _release_collections() -> None:
    global _collections_held
    _collections_held -= 1
    if _collections_held == 0:
        gc.unfreeze()
        gc.enable()
        gc.collect()


class BotStack:
    def __init__(
        self,
        storage_connection: str,
        tmp: Path,
        extra_env: dict[str, str] | None = None,
        teams: TeamsLimits | None = None,
        hosted: bool = True,
    ) -> None:
        """With `teams`, the channel keeps Teams' limits and the bot its default pace; without, the channel
        answers at once and the bot's pace is high enough never to slow a test. Not `hosted`: no local host,
        for a test that runs the app itself (with `env` set)."""
        self.storage_connection = storage_connection
        self.idp = IdentityProvider().start()
        self.channel = FakeConnector(teams=teams).start()
        self.channel.require_token(self.idp.is_valid_access_token)
        self.service_url = self.channel.base_url + "/"
        env = {
            "BotStorage": storage_connection,
            "AzureWebJobsStorage": storage_connection,
            "AZURE_FUNCTIONS_ENVIRONMENT": "Production",
            "LocalFunctionKey": "stack-key",
            # Teams mode: the bot's defaults; else a pace that never slows a test, and few sends unrecorded
            **({} if teams else {"BotTenantRatePerSecond": "2000", "BotSendConcurrency": "32"}),
            "BotHttpTimeoutSeconds": "2",  # the fault tests hang the Connector past it
            "BotDeliveryClaimSeconds": "6",  # a killed host's claims are taken over quickly
            "LocalQueueLeaseSeconds": "10",  # and the queue messages it had received reappear soon
            "FUNCTIONS_REQUEST_BODY_SIZE_LIMIT": "1048576",  # as local.settings.json.example and infra/ set it
            **self.idp.bot_env(APP_ID, password=PASSWORD),
            **(extra_env or {}),
        }
        self.env = env
        self._init_storage(env)
        if hosted:
            self.host = HostProcess(REPO, env, tmp / "bot-host.log")
            self.messages_url = f"{self.host.base_url}/api/messages"
        self._holding = teams is not None  # once all is up: a failed start leaves the collector as it was
        if self._holding:
            _hold_collections()

    @staticmethod
    def _init_storage(env: dict[str, str]) -> None:
        from botcore.storage import close_storage_clients, ensure_resources

        async def run() -> None:
            await ensure_resources()
            await close_storage_clients()

        with environment(env):
            asyncio.run(run())

    def stop(self) -> None:
        if hasattr(self, "host"):
            self.host.stop()
        self.channel.stop()
        self.idp.stop()
        if self._holding:
            self._holding = False  # a second stop releases nothing
            _release_collections()

    # ---- playing the channel ---------------------------------------------------------------
    def activity(
        self, conversation_id: str, text: str | None = None, type: str = "message", user: str = "29:user", **extra: Any
    ) -> dict[str, Any]:
        body = {
            "type": type,
            "id": uuid.uuid4().hex[:10],
            "channelId": "msteams",
            "serviceUrl": self.service_url,
            "timestamp": "2026-11-24T10:00:00.000Z",
            "from": {"id": user, "name": "Ann"},
            "recipient": {"id": f"28:{APP_ID}", "name": "bot"},
            "conversation": {"id": conversation_id, "tenantId": "tenant-1"},
            "locale": "en-US",
        }
        if text is not None:
            body["text"] = text
        body.update(extra)
        return body

    def install_in_team(self, team_id: str, tenant_id: str) -> None:
        """The bot added to a team: Teams' conversationUpdate in the team's General channel."""
        activity = self.activity(
            team_id,
            type="conversationUpdate",
            membersAdded=[{"id": f"28:{APP_ID}"}],
            conversation={"id": team_id, "tenantId": tenant_id, "conversationType": "channel", "isGroup": True},
            channelData={"team": {"id": team_id}, "tenant": {"id": tenant_id}},
        )
        assert self.post(activity).status_code == 200

    def token(self, **kwargs: Any) -> str:
        return self.idp.mint_channel_token(APP_ID, self.service_url, **kwargs)

    def post(
        self,
        body: Any,
        *,
        token: str | None = None,
        headers: dict[str, str] | None = None,
        raw: bytes | None = None,
        client: httpx.Client | None = None,
    ) -> httpx.Response:
        all_headers = {
            "Content-Type": "application/json",
            "Authorization": f"Bearer {token or self.token()}",
            **(headers or {}),
        }
        all_headers = {k: v for k, v in all_headers.items() if v is not None}
        content = raw if raw is not None else json.dumps(body).encode()
        return (client or httpx).post(self.messages_url, content=content, headers=all_headers, timeout=30)

    def say(self, conversation_id: str, text: str, **kwargs: Any) -> httpx.Response:
        return self.post(self.activity(conversation_id, text), **kwargs)

    def wait_texts(self, conversation_id: str, count: int, timeout: float = 15.0) -> list[str]:
        texts = self.channel.wait_for_texts(count, conversation_id, timeout)
        assert len(texts) >= count, (
            f"expected {count} messages in {conversation_id}, got {texts}\n{self.host.log()[-3000:]}"
        )
        return texts

    def api(self, method: str, path: str, body: Any = None, *, key: str | None = "stack-key") -> httpx.Response:
        """Call one of the function app's function-key routes, e.g. api("POST", "notify", {...})."""
        headers = {"x-functions-key": key} if key else {}
        return httpx.request(method, f"{self.host.base_url}/api/{path}", json=body, headers=headers, timeout=30)

    def api_raw(self, method: str, path: str, raw: str) -> httpx.Response:
        """A function-key route with a body sent exactly as given (JSON that json.dumps would not write)."""
        return httpx.request(
            method,
            f"{self.host.base_url}/api/{path}",
            content=raw.encode(),
            timeout=30,
            headers={"x-functions-key": "stack-key", "Content-Type": "application/json"},
        )

    def seed(
        self,
        count: int,
        *,
        channel_id: str = "msteams",
        tenant_id: str = "tenant-1",
        user_id: str | None = None,
        prefix: str = "seed",
    ) -> list[str]:
        """Store `count` conversation references, as if each had talked to the bot through the channel (which
        also verified its service URL); returns their ids."""
        from azure.data.tables.aio import TableClient

        from botcore.protocol.activity import TRUST_TOKEN, ConversationReference
        from botcore.settings import CONVERSATIONS_TABLE, MEMBERS_TABLE, SERVICE_URLS_TABLE
        from botcore.state.conversations import ConversationStore
        from botcore.state.service_urls import ServiceUrlRegistry
        from botcore.storage import Table

        ids = [f"{prefix}-{uuid.uuid4().hex[:12]}" for _ in range(count)]

        def table(name: str) -> TableClient:
            return TableClient.from_connection_string(self.storage_connection, name)

        async def run() -> None:
            async with table(SERVICE_URLS_TABLE) as client:
                await ServiceUrlRegistry(Table(client)).record(self.service_url)
            async with table(CONVERSATIONS_TABLE) as client, table(MEMBERS_TABLE) as members:
                store, gate = ConversationStore(Table(client), Table(members)), asyncio.Semaphore(32)

                async def one(cid: str) -> None:
                    reference = ConversationReference.from_dict(
                        {
                            "channelId": channel_id,
                            "serviceUrl": self.service_url,
                            "conversation": {"id": cid, "tenantId": tenant_id},
                            "user": {"id": user_id or f"29:{cid}", "name": "User"},
                            "bot": {"id": f"28:{APP_ID}", "name": "bot"},
                            "serviceUrlTrust": TRUST_TOKEN,
                        }
                    )
                    async with gate:
                        await store.commit(None, reference=reference)

                await asyncio.gather(*(one(cid) for cid in ids))

        asyncio.run(run())
        return ids

    def key(self, conversation_id: str) -> str:
        from botcore.keys import conversation_key

        return conversation_key("msteams", conversation_id)

    def enqueue(self, message: str, queue: str = "bot-jobs", delay: int = 0) -> str:
        """Put a message on a queue as another service would; returns its message id."""
        from azure.storage.queue import QueueClient

        return (
            QueueClient.from_connection_string(self.storage_connection, queue)
            .send_message(message, visibility_timeout=delay or None)
            .id
        )

    def texts_of(self, conversation_id: str) -> list[str]:
        return self.channel.texts(conversation_id)

    def peek(self, queue: str, fragment: str) -> bool:
        """Whether a visible message on `queue` contains `fragment`."""
        from azure.storage.queue import QueueClient

        client = QueueClient.from_connection_string(self.storage_connection, queue)
        return any(fragment in m.content for m in client.peek_messages(max_messages=32))

    def queue_length(self, queue: str) -> int:
        from azure.storage.queue import QueueClient

        client = QueueClient.from_connection_string(self.storage_connection, queue)
        return client.get_queue_properties().approximate_message_count

    def state(self, conversation_id: str) -> dict[str, Any] | None:
        from botcore.state.conversations import ConversationRecord

        entity = self.conversation_entity(conversation_id, raw=True)  # read by a client of its own
        return None if entity is None else ConversationRecord.from_entity(entity).state

    def conversation_entity(self, conversation_id: str, raw: bool = False) -> Any:
        from azure.core.exceptions import ResourceNotFoundError
        from azure.data.tables import TableClient

        from botcore.keys import conversation_key
        from botcore.settings import CONVERSATIONS_TABLE

        table = TableClient.from_connection_string(self.storage_connection, CONVERSATIONS_TABLE)
        try:
            entity = table.get_entity(conversation_key("msteams", conversation_id), "c")
        except ResourceNotFoundError:
            return None
        return entity if raw else dict(entity)


@contextlib.contextmanager
def stack_of_its_own(
    tmp: Path, extra_env: dict[str, str] | None = None, teams: TeamsLimits | None = None, *, hosted: bool = True
) -> Iterator[BotStack]:
    """A BotStack on an Azurite of its own. The hosts of one storage account share its queues: a stack whose
    settings differ from the session's (a pace, a mode) must not have its jobs taken by the session's host.
    Without a host (`hosted=False`), botcore runs in this process with the stack's settings in the environment, and
    the test plays the Functions host."""
    from devhost.azurite import Azurite

    with Azurite(tmp / "azurite") as azurite:
        stack = BotStack(azurite.connection_string, tmp, extra_env, teams=teams, hosted=hosted)
        stack.azurite = azurite  # type: ignore[attr-defined]
        try:
            with contextlib.nullcontext() if hosted else environment(stack.env):
                yield stack
        finally:
            stack.stop()


def new_tenant() -> str:
    return f"tenant-{uuid.uuid4().hex[:10]}"


def status_of(bot: BotStack, job_id: str, *, timeout: float = 20, **expected: int | str) -> dict:
    """Wait until the job's status shows `expected`, and return it."""
    seen: dict = {}

    def check() -> bool:
        nonlocal seen
        response = bot.api("GET", f"notify/{job_id}")
        seen = response.json() if response.status_code == 200 else {"http": response.status_code}
        return all(seen.get(k) == v for k, v in expected.items())

    assert wait_until(check, timeout=timeout), f"status {seen}, expected {expected}"
    return seen


def poisoned_at_once(bot: BotStack, message_id: str, reason: str, queue: str = "bot-jobs") -> None:
    """The message went to poison on its first delivery, with `reason` in the log."""
    kind = "job message" if queue == "bot-jobs" else "send batch"
    assert wait_until(lambda: f"{kind} {message_id} (dequeue count 1): poisoned" in bot.host.log(), timeout=15), (
        bot.host.log()[-3000:]
    )
    log = bot.host.log()
    assert reason in log.split(f"message {message_id}", 1)[1], log[-3000:]
    assert f"{kind} {message_id} (dequeue count 2)" not in log


def wait_until(predicate, timeout: float = 10.0, interval: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()
