"""Benchmark 3: the send path.

N proactive messages from stored references through `ConnectorClient.send(reference, retry=False,
text=...)` to the fake Connector, at concurrency 1 and 32, with the bot's token cached (the local IdP
and token_provider_for(Settings.from_env(bot_env))). Floor: a bare aiohttp ClientSession posting the
same JSON bodies to the same URLs at the same concurrency.

The IdP and the fake Connector run in a subprocess of their own (bench/channel_server.py), so the
server does not share a GIL with the client being measured.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any, Awaitable, Callable, Iterator
from urllib.parse import quote

import aiohttp

from . import stats
from .infra import RemoteChannel, log
from .report import Section

CONCURRENCY = (1, 32)
TARGET_RATIO_AT_32 = 0.3
POOL_LIMIT = 64  # botcore.http.MAX_CONNECTIONS: both clients get the same pool size


def references(base_url: str, app_id: str, count: int, tag: str) -> list[Any]:
    from botcore.activity import TRUST_TOKEN, ConversationReference

    return [ConversationReference.from_dict({
        "channelId": "msteams", "serviceUrl": base_url + "/",
        "conversation": {"id": f"19:{tag}-{i}@thread.tacv2", "tenantId": "tenant-1"},
        "user": {"id": f"29:user-{i}", "name": "User"}, "bot": {"id": f"28:{app_id}", "name": "bot"},
        "serviceUrlTrust": TRUST_TOKEN,
    }) for i in range(count)]


async def _pump(items: list[Any], concurrency: int, send: Callable[[Any], Awaitable[None]]) -> float:
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
        return [(f"{r.service_url.rstrip('/')}/v3/conversations/{quote(r.conversation.id, safe='')}/activities",
                 json.dumps(r.outgoing(text=text), separators=(",", ":")).encode()) for r in refs]

    async def send(self, item: tuple[str, bytes]) -> None:
        url, body = item
        async with self.session.post(url, data=body, headers=self.headers) as response:
            await response.read()
            if response.status != 200:
                raise RuntimeError(f"fake Connector answered {response.status}")


async def measure(channel: RemoteChannel, count: int, repeats: int,
                  concurrencies: tuple[int, ...] = CONCURRENCY) -> dict[str, Any]:
    """{(client, concurrency): [messages/s per run]}, client CPU per message, and IdP counts."""
    from botcore.connector import ConnectorClient
    from botcore.http import close_http_client
    from botcore.settings import Settings
    from botcore.tokens import token_provider_for

    settings = Settings.from_env(channel.env)
    tokens = token_provider_for(settings)
    connector = ConnectorClient(tokens=tokens)
    refs = references(channel.base_url, channel.app_id, count, "send")
    rates: dict[tuple[str, int], list[float]] = {}
    cpu: dict[tuple[str, int], list[float]] = {}
    hits_before = channel.stats()["hits"]
    token = await tokens.get_token()  # the floor uses the same token; the bot's cache is now warm
    floor_items = FloorClient.prepare(refs, "proactive")
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=POOL_LIMIT)) as session:
        floor = FloorClient(session, token)

        async def bot_send(reference: Any) -> None:
            await connector.send(reference, retry=False, text="proactive")

        clients: dict[str, tuple[Callable[[Any], Awaitable[None]], list[Any]]] = {
            "floor": (floor.send, floor_items), "bot": (bot_send, refs)}
        for name, (send, items) in clients.items():  # warm-up: connections, code paths
            for c in concurrencies:
                await _pump(items[:200], c, send)
        bot_sends = 200 * len(concurrencies)
        for _ in range(repeats):
            for c in concurrencies:
                for name, (send, items) in clients.items():
                    cpu0 = time.process_time()
                    elapsed = await _pump(items, c, send)
                    cpu.setdefault((name, c), []).append((time.process_time() - cpu0) / count)
                    rates.setdefault((name, c), []).append(count / elapsed)
                    bot_sends += count if name == "bot" else 0
                    channel.clear()  # the Connector records requests: keep its memory flat
    await close_http_client()
    hits_after = channel.stats()["hits"]
    return {"rates": rates, "cpu": cpu, "bot_sends": bot_sends,
            "hits": {k: hits_after.get(k, 0) - hits_before.get(k, 0) for k in hits_after},
            "token_requests": tokens.requests}


def remember_floor(context: dict[str, Any], m: dict[str, Any]) -> None:
    """What benchmark 4 compares with: the bare client's rate, and its CPU per message, at concurrency 32."""
    context["send_floor_32"] = stats.Summary.of(m["rates"][("floor", 32)])
    context["send_floor_cpu_32"] = stats.Summary.of(m["cpu"][("floor", 32)]).median


def run(tmp: Path, quick: bool, context: dict[str, Any]) -> Section:
    count, repeats = (500, 2) if quick else (5000, 5)
    log(f"send path: {repeats} repeats of {count} messages at concurrency {CONCURRENCY}, bot and floor")
    with RemoteChannel.start() as channel:
        m = asyncio.run(measure(channel, count, repeats))
    remember_floor(context, m)
    context["send_economy"] = {"sends": m["bot_sends"], "hits": m["hits"]}

    section = Section(
        "3. Send path",
        f"{count:,} proactive messages per run from stored references through `ConnectorClient.send(reference, "
        "retry=False, text=...)` (botcore.http: aiohttp, token cached) to the fake Connector; floor: a "
        "bare `aiohttp.ClientSession` posting the same pre-encoded JSON bodies to the same URLs, same pool size "
        f"({POOL_LIMIT}) and concurrency. {repeats} runs each, interleaved. The IdP and fake Connector run in a "
        "separate process (`bench/channel_server.py`) so that the server does not share the client's GIL.",
    )
    t = section.table(["concurrency", "bot msg/s", "spread", "floor msg/s", "spread", "ratio to floor",
                       "bot client CPU/msg (ms)", "floor client CPU/msg (ms)"])
    for c in CONCURRENCY:
        bot, floor = stats.Summary.of(m["rates"][("bot", c)]), stats.Summary.of(m["rates"][("floor", c)])
        bot_cpu = stats.Summary.of(m["cpu"][("bot", c)]).median * 1000
        floor_cpu = stats.Summary.of(m["cpu"][("floor", c)]).median * 1000
        r = stats.ratio(bot.median, floor.median)
        t.add(c, stats.number(bot.median), stats.spread(bot), stats.number(floor.median), stats.spread(floor),
              stats.times(r), stats.number(bot_cpu), stats.number(floor_cpu))
        if c == 32:
            section.target("send rate at concurrency 32, as a share of the bare aiohttp floor",
                           f"{r:.2f} (≥ {TARGET_RATIO_AT_32})", r >= TARGET_RATIO_AT_32)
    section.notes.append("Client CPU per message is the benchmark process's CPU time (the fake Connector is in "
                         "another process) divided by the messages sent.")
    section.notes.append("Field notes reference at concurrency 32 / 1 (msg/s): Agents SDK ~500 / ~470, plain httpx "
                         "~330 / ~1,200, plain aiohttp ~6,600 / ~2,900.")
    return section
