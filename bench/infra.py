"""The pieces every benchmark starts and must stop: Azurite, the bot stack, fakes, seeding.

Everything here is a context manager so that an error or Ctrl-C still stops
every process the benchmark started.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from devhost.azurite import Azurite

REPO = Path(__file__).resolve().parent.parent
PYTHON = sys.executable


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


@contextlib.contextmanager
def azurite(location: Path, keep: bool = False, **options: Any) -> Iterator[Azurite]:
    """A fresh Azurite on free ports; its data folder is deleted afterwards unless keep. `options` are
    devhost.azurite.Azurite's (in_memory, heap_mib)."""
    server = Azurite(location, **options).start()
    try:
        yield server
    finally:
        server.stop()
        if not keep:
            shutil.rmtree(location, ignore_errors=True)


@contextlib.contextmanager
def bot_stack(
    connection_string: str, tmp: Path, extra_env: dict[str, str] | None = None, teams: Any = None
) -> Iterator[Any]:
    """tests.botstack.BotStack: IdP + fake Connector in this process, the host as a subprocess.
    With `teams` (a devhost.channel.TeamsLimits) the fake keeps Teams' limits and the bot its default pace."""
    from tests.botstack import BotStack

    tmp.mkdir(parents=True, exist_ok=True)
    stack = BotStack(connection_string, tmp, extra_env, teams=teams)
    try:
        yield stack
    finally:
        stack.stop()


@contextlib.contextmanager
def identity_and_channel() -> Iterator[tuple[Any, Any]]:
    """The local IdP and a fake Connector (threads of this process) that checks bot tokens."""
    from devhost.channel import FakeConnector
    from devhost.identity import IdentityProvider

    idp = IdentityProvider().start()
    try:
        channel = FakeConnector().start()
        try:
            channel.require_token(idp.is_valid_access_token)
            yield idp, channel
        finally:
            channel.stop()
    finally:
        idp.stop()


def init_storage(env: dict[str, str]) -> None:
    """Create the app's tables and queues (as `python -m devhost init-storage` does)."""
    from tests.botstack import BotStack

    BotStack._init_storage(env)


class RemoteChannel:
    """The local IdP and fake Connector in a subprocess of their own (bench/channel_server.py),
    so that they do not share the GIL with the client being measured.

    Control is a line protocol on stdin/stdout: `stats`, `clear`, `roster`, `quit`. With
    teams=True the fake behaves as Teams (rate limits, latency; devhost.channel.TeamsLimits).
    """

    def __init__(self, process: subprocess.Popen, info: dict[str, Any]) -> None:
        self.process = process
        self.base_url: str = info["connector"]
        self.env: dict[str, str] = info["env"]
        self.app_id: str = info["app_id"]

    @classmethod
    @contextlib.contextmanager
    def start(cls, *, teams: bool = False, latency_median: float | None = None) -> Iterator[RemoteChannel]:
        options = (["--teams"] if teams else []) + (
            ["--latency-median", str(latency_median)] if latency_median is not None else []
        )
        process = subprocess.Popen(
            [PYTHON, "-m", "bench.channel_server", *options],
            cwd=str(REPO),
            text=True,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env={**os.environ, "PYTHONPATH": str(REPO)},
        )
        try:
            assert process.stdout is not None
            line = process.stdout.readline()
            if not line:
                raise RuntimeError("bench.channel_server did not start")
            yield cls(process, json.loads(line))
        finally:
            if process.poll() is None:
                try:
                    assert process.stdin is not None
                    process.stdin.write("quit\n")
                    process.stdin.flush()
                    process.wait(10)
                except (BrokenPipeError, subprocess.TimeoutExpired):
                    process.kill()
                    process.wait()

    def _ask(self, command: str) -> dict[str, Any]:
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write(command + "\n")
        self.process.stdin.flush()
        return json.loads(self.process.stdout.readline())

    def stats(self) -> dict[str, Any]:
        return self._ask("stats")

    def clear(self) -> None:
        self._ask("clear")

    def roster(self, team_id: str, count: int, tenant_id: str) -> list[dict[str, Any]]:
        """Give conversation team_id `count` members in tenant_id (ids without spaces); returns them."""
        return self._ask(f"roster {team_id} {count} {tenant_id}")["members"]


@contextlib.contextmanager
def second_host(env: dict[str, str], log_path: Path) -> Iterator[Any]:
    """Another local host (tests.hostproc.HostProcess) with the same settings, so on the same storage and queues:
    a second instance of the app, as Azure Functions would scale out to."""
    from tests.hostproc import HostProcess

    host = HostProcess(REPO, env, log_path)
    try:
        yield host
    finally:
        host.stop()


# ---- seeding ----------------------------------------------------------------------------------

PLACEHOLDER = "SEEDPLACEHOLDER0"
TENANT_PLACEHOLDER = "SEEDTENANTPLACEHOLDER0"


def conversation_entity(service_url: str, app_id: str, tenant_id: str, conversation_id: str) -> dict[str, Any]:
    """The entity ConversationStore.commit writes for a new conversation, built by the store itself
    (into a capturing table) so that benchmarks store exactly what the bot would have stored."""
    from botcore.protocol.activity import TRUST_TOKEN, ConversationReference
    from botcore.state.conversations import ConversationStore

    class Capture:
        entity: dict[str, Any] = {}

        async def insert(self, entity: dict[str, Any]) -> str:
            Capture.entity = entity
            return "seed"

        async def upsert(self, entity: dict[str, Any]) -> str:  # the members index: not seeded
            return "seed"

    reference = ConversationReference.from_dict(
        {
            "channelId": "msteams",
            "serviceUrl": service_url,
            "conversation": {"id": conversation_id, "tenantId": tenant_id},
            "user": {"id": f"29:{conversation_id}", "name": "User"},
            "bot": {"id": f"28:{app_id}", "name": "bot"},
            "serviceUrlTrust": TRUST_TOKEN,
        }
    )
    asyncio.run(ConversationStore(Capture(), Capture()).commit(None, reference=reference))
    return Capture.entity


def _entity_template(service_url: str, app_id: str, tenant_id: str) -> bytes:
    """The wire form of conversation_entity, encoded as the Table service expects; only the id is substituted."""
    from botcore.keys import conversation_key

    from .baretable import encode_entity

    entity = encode_entity(conversation_entity(service_url, app_id, tenant_id, PLACEHOLDER))
    assert entity["PartitionKey"] == conversation_key("msteams", PLACEHOLDER)
    return json.dumps(entity, separators=(",", ":"), ensure_ascii=False).encode()


def ledger_rows(partition: str, count: int) -> list[dict[str, Any]]:
    """Rows shaped as the delivery ledger's claims (botcore.delivery.ledger), new keys in one partition."""
    now = datetime.datetime.now(datetime.UTC)
    return [
        {
            "PartitionKey": partition,
            "RowKey": f"row-{uuid.uuid4().hex[:12]}",
            "status": "sending",
            "attempts": 0,
            "claimedAt": now,
        }
        for _ in range(count)
    ]


def seed(
    connection_string: str,
    count: int,
    service_url: str,
    app_id: str,
    *,
    tenant_id: str = "tenant-1",
    tenants: list[str] | None = None,
    grouped: bool = False,
    concurrency: int = 48,
) -> tuple[list[str], float]:
    """Store `count` conversation references with concurrent single inserts (one partition each,
    so batch transactions cannot be used) over a bare aiohttp client. Returns (ids, seconds).
    With `tenants`, conversation i is in tenants[i % len(tenants)] (else all are in tenant_id); `grouped`
    gives each tenant a run of consecutive keys instead, as a fan-out pages them (a page of one tenant)."""
    import aiohttp

    from botcore.settings import CONVERSATIONS_TABLE

    from .baretable import BareTable

    template = _entity_template(service_url, app_id, TENANT_PLACEHOLDER)
    ids = [f"seed-{uuid.uuid4().hex[:12]}" for _ in range(count)]
    if grouped:
        ids.sort()  # key order: conversation_key keeps the order of ids made of these characters
    tenant_of = {
        cid: (tenants[i * len(tenants) // count if grouped else i % len(tenants)] if tenants else tenant_id)
        for i, cid in enumerate(ids)
    }

    async def run() -> None:
        connector = aiohttp.TCPConnector(limit=concurrency)
        async with aiohttp.ClientSession(connector=connector) as session:
            table = BareTable(session, connection_string, CONVERSATIONS_TABLE)
            work = iter(ids)

            async def worker() -> None:
                for cid in work:
                    await table.insert(
                        template.replace(PLACEHOLDER.encode(), cid.encode()).replace(
                            TENANT_PLACEHOLDER.encode(), tenant_of[cid].encode()
                        )
                    )

            await asyncio.gather(*(worker() for _ in range(concurrency)))

    async def verify_service_url() -> None:  # as the channel-authenticated activities that gave these addresses did
        from azure.data.tables.aio import TableClient

        from botcore.settings import SERVICE_URLS_TABLE
        from botcore.state.service_urls import ServiceUrlRegistry
        from botcore.storage import Table

        async with TableClient.from_connection_string(connection_string, SERVICE_URLS_TABLE) as client:
            await ServiceUrlRegistry(Table(client)).record(service_url)

    start = time.perf_counter()
    asyncio.run(run())
    elapsed = time.perf_counter() - start
    asyncio.run(verify_service_url())
    return ids, elapsed
