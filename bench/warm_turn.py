"""Benchmark 2: warm turns through the real HTTP function.

Authenticated messages go to function_app's /api/messages in the local host (a subprocess,
BotStack) with state in Azurite. Two kinds of turn:

- state-changing: "profile" then "cancel", alternately; each pushes or clears the dialog stack,
  so each turn is one entity read, one conditional write and one reply;
- no-change: "help" after the greeting; the state stays as it was and the address is fresh, so
  the turn is one entity read and one reply, no write.

Figures: wall latency p50/p99 seen by the client, and CPU of the host process per turn
(utime+stime from /proc/<pid>/stat around N turns, divided by N). Floor: the same HTTP calls made
by a bare aiohttp client (point read, entity write or none, POST of the same reply body).
"""

from __future__ import annotations

import asyncio
import functools
import json
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp

from . import procfs, stats
from .baretable import BareTable
from .infra import azurite, bot_stack, log
from .report import Section

KINDS = {"change": "state-changing turn (profile / cancel)", "nochange": "no-change turn (help)"}


class TurnClient:
    """Posts activities to the bot's /api/messages over one keep-alive connection."""

    def __init__(self, stack: Any, session: aiohttp.ClientSession) -> None:
        self.stack, self.session = stack, session
        self.headers = {"Content-Type": "application/json", "Authorization": f"Bearer {stack.token()}"}

    def body(self, cid: str, text: str) -> bytes:
        return json.dumps(self.stack.activity(cid, text)).encode()

    async def post(self, body: bytes) -> None:
        async with self.session.post(self.stack.messages_url, data=body, headers=self.headers) as response:
            await response.read()
            if response.status != 200:
                raise RuntimeError(f"/api/messages answered {response.status}:\n{self.stack.host.log()[-2000:]}")


async def _timed(calls: list[Callable[[], Awaitable[None]]]) -> list[float]:
    latencies = []
    for call in calls:
        start = time.perf_counter()
        await call()
        latencies.append(time.perf_counter() - start)
    return latencies


async def _measure(stack: Any, turns: int, repeats: int, idle_seconds: float) -> dict[str, Any]:
    pid = stack.host.process.pid
    cids = {
        "change": f"warm-{uuid.uuid4().hex[:8]}",
        "nochange": f"warm-{uuid.uuid4().hex[:8]}",
        "floor": f"warm-{uuid.uuid4().hex[:8]}",
    }
    texts = {"change": ["profile", "cancel"], "nochange": ["help"]}
    out: dict[str, Any] = {
        "latency": {k: [] for k in KINDS},
        "cpu": {k: [] for k in KINDS},
        "wall": {k: [] for k in KINDS},
        "floor": {k: [] for k in KINDS},
    }
    async with aiohttp.ClientSession() as session:
        client = TurnClient(stack, session)
        for cid in cids.values():
            await client.post(client.body(cid, "hi"))  # the greeting: creates the conversation
        for kind in KINDS:  # warm-up
            bodies = [client.body(cids[kind], texts[kind][i % len(texts[kind])]) for i in range(20)]
            await _timed([functools.partial(client.post, body) for body in bodies])
        cpu0, t0 = procfs.cpu_seconds(pid), time.monotonic()
        await asyncio.sleep(idle_seconds)
        out["idle_cpu_per_s"] = (procfs.cpu_seconds(pid) - cpu0) / (time.monotonic() - t0)

        sent_before = len(stack.channel.activities())
        hits_before = dict(stack.idp.hits)
        for _ in range(repeats):
            for kind in KINDS:
                bodies = [client.body(cids[kind], texts[kind][i % len(texts[kind])]) for i in range(turns)]
                cpu0, t0 = procfs.cpu_seconds(pid), time.monotonic()
                latencies = await _timed([lambda b=b: client.post(b) for b in bodies])
                out["cpu"][kind].append((procfs.cpu_seconds(pid) - cpu0) / turns)
                out["wall"][kind].append((time.monotonic() - t0) / turns)
                out["latency"][kind].append(latencies)
        out["turns"] = repeats * turns * len(KINDS)
        replies = len(stack.channel.activities()) - sent_before
        if replies != out["turns"]:
            raise RuntimeError(f"expected {out['turns']} replies at the Connector, got {replies}")
        out["hits"] = {k: stack.idp.hits.get(k, 0) - hits_before.get(k, 0) for k in stack.idp.hits}
        out["hits_lifetime"] = dict(stack.idp.hits)
        out["turns_lifetime"] = len(stack.channel.activities())
        out["state_changes"] = _check_state(stack, cids)

        # The floor: the same round trips from a bare aiohttp client in this process.
        floor_turn = FloorTurn(stack, session, cids["floor"])
        for _ in range(repeats):
            for kind in KINDS:
                out["floor"][kind].append(await _timed([lambda kind=kind: floor_turn(kind == "change")] * turns))
    return out


class FloorTurn:
    """A turn's round trips from a bare aiohttp client: the conversation's point read, its write (or none),
    and a POST of the bot's last reply in that conversation to the fake Connector again."""

    def __init__(self, stack: Any, session: aiohttp.ClientSession, conversation_id: str) -> None:
        reply = stack.channel.activities(conversation_id)[-1]
        self.session = session
        self.table = BareTable(session, stack.storage_connection, "botconversations")
        self.key = stack.key(conversation_id)
        self.url = (
            f"{stack.channel.base_url}/v3/conversations/{quote(conversation_id, safe='')}"
            f"/activities/{quote(reply.body['replyToId'], safe='')}"
        )
        self.body = json.dumps(reply.body).encode()
        self.headers = {"Content-Type": "application/json", "Authorization": reply.authorization}

    async def __call__(self, write: bool) -> None:
        entity, etag = await self.table.get(self.key, "c")
        if write:
            entity["floorCounter"] = entity.get("floorCounter", 0) + 1
            await self.table.replace(entity, etag)
        async with self.session.post(self.url, data=self.body, headers=self.headers) as response:
            await response.read()
            if response.status != 200:
                raise RuntimeError(f"fake Connector answered {response.status}")


def _check_state(stack: Any, cids: dict[str, str]) -> str:
    """The state-changing conversation ends with an empty or profile stack; help left its state alone."""
    change, nochange = stack.state(cids["change"]), stack.state(cids["nochange"])
    return f"after the run: change conversation stack={change['stack']!r}, no-change stack={nochange['stack']!r}"


def run(tmp: Path, quick: bool, context: dict[str, Any]) -> Section:
    turns, repeats = (100, 2) if quick else (1000, 5)
    log(f"warm turn: {repeats} repeats of {turns} turns of each kind, then the floor")
    with azurite(tmp / "azurite") as storage, bot_stack(storage.connection_string, tmp / "stack") as stack:
        m = asyncio.run(_measure(stack, turns, repeats, 1.0 if quick else 5.0))
    context["turn_economy"] = {
        "turns": m["turns"],
        "hits": m["hits"],
        "hits_lifetime": m["hits_lifetime"],
        "turns_lifetime": m["turns_lifetime"],
    }

    section = Section(
        "2. Warm turn",
        "Authenticated messages through the real HTTP function (`function_app.messages` in the local host, a "
        "subprocess) with state in Azurite; the client is aiohttp on one keep-alive connection. Floor: the same "
        "round trips from a bare aiohttp client (entity point read, entity write or none, POST of the same reply "
        f"to the fake Connector). {repeats} repeats of {turns} turns per kind; latency percentiles are per repeat, "
        "then the median (and min–max) over repeats.",
    )
    lat = section.table(
        [
            "turn",
            "p50 (ms)",
            "p50 spread",
            "p99 (ms)",
            "p99 spread",
            "floor p50 (ms)",
            "floor p99 (ms)",
            "p50 ratio to floor",
            "p99 ratio to floor",
        ],
        title="Wall latency",
    )
    cpu = section.table(
        ["turn", "host CPU per turn (ms)", "spread", "net of the idle host (ms)"],
        title="CPU of the host process",
    )
    for kind, label in KINDS.items():
        p50 = stats.Summary.of(stats.percentile(r, 50) * 1000 for r in m["latency"][kind])
        p99 = stats.Summary.of(stats.percentile(r, 99) * 1000 for r in m["latency"][kind])
        f50 = stats.Summary.of(stats.percentile(r, 50) * 1000 for r in m["floor"][kind])
        f99 = stats.Summary.of(stats.percentile(r, 99) * 1000 for r in m["floor"][kind])
        lat.add(
            label,
            stats.number(p50.median),
            stats.spread(p50),
            stats.number(p99.median),
            stats.spread(p99),
            f"{stats.number(f50.median)} ({stats.spread(f50)})",
            f"{stats.number(f99.median)} ({stats.spread(f99)})",
            stats.times(stats.ratio(p50.median, f50.median)),
            stats.times(stats.ratio(p99.median, f99.median)),
        )
        c = stats.Summary.of(v * 1000 for v in m["cpu"][kind])
        net = stats.Summary.of(
            (v - m["idle_cpu_per_s"] * w) * 1000 for v, w in zip(m["cpu"][kind], m["wall"][kind], strict=True)
        )
        cpu.add(label, stats.number(c.median), stats.spread(c), f"{stats.number(net.median)} ({stats.spread(net)})")
    section.notes.append(
        f"The idle host (queue polling, timer) used {m['idle_cpu_per_s'] * 1000:.1f} ms of CPU per second, "
        'measured before the turns. The gross figure includes it; the "net" column subtracts it '
        "(idle CPU/s × the repeat's wall time), since on Azure the Functions host, not the "
        "Python worker, polls the queues. The figures are reported, with no target: in Azure a turn waits on "
        "storage and the Connector far longer than it computes. "
        f"CPU is read in clock ticks of {1000 / procfs.CLOCK_TICKS:.0f} ms over {turns} turns."
    )
    section.notes.append(m["state_changes"] + ".")
    section.notes.append(
        "Field notes reference (CPU of the bot process per warm turn): botbuilder-python ~36 ms, Agents SDK ~2.9 ms."
    )
    return section
