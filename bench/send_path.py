"""Benchmark 3: the send path, and the choice of botcore.protocol.http's transport.

N proactive messages from stored references through `ConnectorClient.send(reference, retry=False,
text=...)` to the fake Connector, at concurrency 1, 16 and 32, with the bot's token cached (the local
IdP and token_provider_for(Settings.from_env(bot_env))), once over each transport the bot's httpx
client can have (httpx's own pool, httpcore; httpx-aiohttp's, aiohttp). Floor: a bare aiohttp
ClientSession posting the same JSON bodies to the same URLs at the same concurrency.

The IdP and the fake Connector run in a subprocess of their own (bench/channel_server.py), so the
server does not share a GIL with the client being measured.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, get_args
from urllib.parse import quote

import aiohttp

from botcore.protocol.http import TRANSPORT, Transport

from . import stats
from .infra import RemoteChannel, azurite, log
from .report import Section

CONCURRENCY = (1, 16, 32)
TARGET_CONCURRENCY = (16, 32)
TARGET_RATIO = 0.3
POOL_LIMIT = 64  # every client gets the same pool size, more than the concurrency measured
TRANSPORTS: tuple[str, ...] = get_args(Transport)
CLIENTS = ("floor", *TRANSPORTS)


def references(base_url: str, app_id: str, count: int, tag: str) -> list[Any]:
    from botcore.protocol.activity import TRUST_TOKEN, ConversationReference

    return [
        ConversationReference.from_dict(
            {
                "channelId": "msteams",
                "serviceUrl": base_url + "/",
                "conversation": {"id": f"19:{tag}-{i}@thread.tacv2", "tenantId": "tenant-1"},
                "user": {"id": f"29:user-{i}", "name": "User"},
                "bot": {"id": f"28:{app_id}", "name": "bot"},
                "serviceUrlTrust": TRUST_TOKEN,
            }
        )
        for i in range(count)
    ]


async def pump(items: list[Any], concurrency: int, send: Callable[[Any], Awaitable[None]]) -> float:
    """Send every item with `concurrency` workers; returns elapsed seconds."""
    work: Iterator[Any] = iter(items)

    async def worker() -> None:
        for item in work:
            await send(item)

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return time.perf_counter() - start


class FloorClient:
    """The floor: pre-encoded bodies POSTed by a bare aiohttp session."""

    def __init__(self, session: aiohttp.ClientSession, token: str) -> None:
        self.session = session
        self.headers = {"Content-Type": "application/json", "Authorization": f"Bearer {token}"}

    @staticmethod
    def prepare(refs: list[Any], text: str) -> list[tuple[str, bytes]]:
        return [
            (
                f"{r.service_url.rstrip('/')}/v3/conversations/{quote(r.conversation.id, safe='')}/activities",
                json.dumps(r.outgoing(text=text), separators=(",", ":")).encode(),
            )
            for r in refs
        ]

    async def send(self, item: tuple[str, bytes]) -> None:
        url, body = item
        async with self.session.post(url, data=body, headers=self.headers) as response:
            await response.read()
            if response.status != 200:
                raise RuntimeError(f"fake Connector answered {response.status}")


def _bot_sender(connector: Any) -> Callable[[Any], Awaitable[None]]:
    async def send(reference: Any) -> None:
        await connector.send(reference, retry=False, text="proactive")

    return send


async def measure(
    channel: RemoteChannel,
    count: int,
    repeats: int,
    concurrencies: tuple[int, ...] = CONCURRENCY,
    clients: tuple[str, ...] = CLIENTS,
    storage: str = "",
) -> dict[str, Any]:
    """{(client, concurrency): [messages/s per run]}, client CPU per message, and IdP counts.
    A client is "floor" or one of TRANSPORTS: the bot's ConnectorClient on that transport, whose trust
    record (in `storage`, a connection string) knows the fake Connector's URL, as after an inbound turn."""
    from azure.data.tables.aio import TableClient

    from botcore.protocol.connector import ConnectorClient
    from botcore.protocol.http import new_http_client
    from botcore.protocol.tokens import token_provider_for
    from botcore.protocol.trust import ServiceTrust
    from botcore.settings import SERVICE_URLS_TABLE, Settings
    from botcore.state.service_urls import ServiceUrlRegistry
    from botcore.storage import Table

    settings = Settings.from_env(channel.env)
    tokens = token_provider_for(settings)
    refs = references(channel.base_url, channel.app_id, count, "send")
    rates: dict[tuple[str, int], list[float]] = {}
    cpu: dict[tuple[str, int], list[float]] = {}
    hits_before = channel.stats()["hits"]
    token = await tokens.get_token()  # the floor uses the same token; the bot's cache is now warm
    floor_items = FloorClient.prepare(refs, "proactive")
    https = {name: new_http_client(settings.http_timeout, POOL_LIMIT, name) for name in clients if name != "floor"}
    async with (
        aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=POOL_LIMIT)) as session,
        contextlib.AsyncExitStack() as resources,
    ):
        if https:
            trust_table = await resources.enter_async_context(
                TableClient.from_connection_string(storage, SERVICE_URLS_TABLE)
            )
            registry = ServiceUrlRegistry(Table(trust_table))
            await registry.record(channel.base_url)
            trust = ServiceTrust(registry)
        senders: dict[str, tuple[Callable[[Any], Awaitable[None]], list[Any]]] = {
            name: (FloorClient(session, token).send, floor_items)
            if name == "floor"
            else (_bot_sender(ConnectorClient(trust, https[name], tokens)), refs)
            for name in clients
        }
        try:
            for send, items in senders.values():  # warm-up: connections, code paths
                for c in concurrencies:
                    await pump(items[:200], c, send)
            bot_sends = 200 * len(concurrencies) * len(https)
            for _ in range(repeats):
                for c in concurrencies:
                    for name, (send, items) in senders.items():
                        cpu0 = time.process_time()
                        elapsed = await pump(items, c, send)
                        cpu.setdefault((name, c), []).append((time.process_time() - cpu0) / count)
                        rates.setdefault((name, c), []).append(count / elapsed)
                        bot_sends += count if name in https else 0
                        channel.clear()  # the Connector records requests: keep its memory flat
        finally:
            for http in https.values():
                await http.aclose()
    hits_after = channel.stats()["hits"]
    return {
        "rates": rates,
        "cpu": cpu,
        "bot_sends": bot_sends,
        "hits": {k: hits_after.get(k, 0) - hits_before.get(k, 0) for k in hits_after},
        "token_requests": tokens.requests,
    }


def remember_floor(context: dict[str, Any], m: dict[str, Any]) -> None:
    """What benchmark 4 compares with: the bare client's rate, and its CPU per message, at concurrency 32."""
    context["send_floor_32"] = stats.Summary.of(m["rates"][("floor", 32)])
    context["send_floor_cpu_32"] = stats.Summary.of(m["cpu"][("floor", 32)]).median


async def _create_trust_table(connection_string: str) -> None:
    from azure.data.tables.aio import TableClient

    from botcore.settings import SERVICE_URLS_TABLE

    async with TableClient.from_connection_string(connection_string, SERVICE_URLS_TABLE) as client:
        await client.create_table()


def run(tmp: Path, quick: bool, context: dict[str, Any]) -> Section:
    count, repeats = (500, 2) if quick else (3000, 5)
    log(f"send path: {repeats} repeats of {count} messages at concurrency {CONCURRENCY}, clients {CLIENTS}")
    with RemoteChannel.start() as channel, azurite(tmp / "azurite") as storage:
        asyncio.run(_create_trust_table(storage.connection_string))
        m = asyncio.run(measure(channel, count, repeats, storage=storage.connection_string))
    remember_floor(context, m)
    context["send_economy"] = {"sends": m["bot_sends"], "hits": m["hits"]}

    section = Section(
        "3. Send path",
        f"{count:,} proactive messages per run from stored references through `ConnectorClient.send(reference, "
        "retry=False, text=...)` (token cached) to the fake Connector, on each transport of the bot's "
        "`httpx.AsyncClient` (`botcore.protocol.http.new_http_client`): `aiohttp` is httpx-aiohttp's (aiohttp's pool), "
        f"`httpcore` is httpx's own; the bot uses `{TRANSPORT}`. Floor: a bare `aiohttp.ClientSession` posting "
        f"the same pre-encoded JSON bodies to the same URLs, same pool size ({POOL_LIMIT}) and concurrency. "
        f"{repeats} runs each, interleaved. The IdP and fake Connector run in a separate process "
        "(`bench/channel_server.py`) so that the server does not share the client's GIL.",
    )
    t = section.table(["client", "concurrency", "msg/s", "spread", "ratio to floor", "client CPU/msg (ms)"])
    for c in CONCURRENCY:
        floor = stats.Summary.of(m["rates"][("floor", c)])
        for name in CLIENTS:
            rate = stats.Summary.of(m["rates"][(name, c)])
            cpu = stats.Summary.of(m["cpu"][(name, c)]).median * 1000
            r = stats.ratio(rate.median, floor.median)
            label = (
                "floor (bare aiohttp)"
                if name == "floor"
                else f"bot, httpx on {name}" + (" (botcore's)" if name == TRANSPORT else "")
            )
            t.add(label, c, stats.number(rate.median), stats.spread(rate), stats.times(r), stats.number(cpu))
            if name == TRANSPORT and c in TARGET_CONCURRENCY:
                section.target(
                    f"send rate at concurrency {c} (httpx on {name}), as a share of the bare aiohttp floor",
                    f"{r:.2f} (≥ {TARGET_RATIO})",
                    r >= TARGET_RATIO,
                )
    section.notes.append(
        "Client CPU per message is the benchmark process's CPU time (the fake Connector is in "
        "another process) divided by the messages sent."
    )
    section.notes.append(
        "Field notes reference at concurrency 32 / 1 (msg/s): Agents SDK ~500 / ~470, plain httpx "
        "~330 / ~1,200, plain aiohttp ~6,600 / ~2,900."
    )
    return section
