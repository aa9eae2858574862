"""Benchmark 6: each storage operation the app uses, through the Azure SDK beside a bare request.

The SDK path is the app's own: `botcore.storage.get_table(...)` / `get_queue(...)` with `BotStorage`
set to Azurite's connection string. Beside it, in the same run and the same process, the same
operation as one signed aiohttp request (bench/baretable.py). Figures: CPU of the benchmark process
per call (Azurite runs in its own process) and wall time per call, sequentially (concurrency 1),
after a warm-up. The point is to keep the price of the library visible and tracked; there is no target.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from . import stats
from .baretable import BareQueue, BareTable
from .infra import PLACEHOLDER, azurite, conversation_entity, ledger_rows, log
from .report import Section

Call = Callable[[], Awaitable[Any]]


@dataclass(frozen=True)
class Op:
    name: str
    sdk: str  # the botcore.storage call measured
    bare: str  # the request the floor makes


READ, WRITE, UPSERT, BATCH, PUT = OPS = (
    Op("point read", "`Table.get`", "GET entity"),
    Op("conditional write (after a read)", "`Table.replace(entity, etag)`", "PUT entity, If-Match"),
    Op("upsert", "`Table.upsert`", "PUT entity, no If-Match"),
    Op("batch of 100 creates, one partition", "`Table.transact`", "POST $batch, 100 inserts"),
    Op("queue put", "`Queue.send`", "POST messages"),
)


class Side:
    """One client of the comparison, SDK or bare: its own conversation row, and the same five calls."""

    def __init__(
        self,
        table: Any,
        etag_of_read: Callable[[Any], str],
        batch: Callable[[list[dict[str, Any]]], Call],
        queue: Any,
        entity: dict[str, Any],
        message: str,
    ) -> None:
        self.table, self.etag_of_read, self.batch, self.queue = table, etag_of_read, batch, queue
        self.entity, self.message, self.etag = entity, message, ""

    async def read_etag(self) -> None:
        self.etag = self.etag_of_read(await self.table.get(self.entity["PartitionKey"], self.entity["RowKey"]))

    async def _write(self) -> None:
        self.etag = await self.table.replace(self.entity, self.etag)

    def calls(self, op: Op, count: int) -> list[Call]:
        """`count` calls of `op`; a batch's rows are built here, outside the timing."""
        if op is BATCH:
            return [self.batch(ledger_rows(uuid.uuid4().hex, 100)) for _ in range(count)]
        pk, rk = self.entity["PartitionKey"], self.entity["RowKey"]
        call: Call = {
            READ: lambda: self.table.get(pk, rk),
            WRITE: self._write,
            UPSERT: lambda: self.table.upsert(self.entity),
            PUT: lambda: self.queue.send(self.message),
        }[op]
        return [call] * count


async def _timed(calls: list[Call]) -> tuple[float, float]:
    """(CPU seconds, wall seconds) per call, one call at a time."""
    cpu0, wall0 = time.process_time(), time.perf_counter()
    for call in calls:
        await call()
    return (time.process_time() - cpu0) / len(calls), (time.perf_counter() - wall0) / len(calls)


def _sdk_side(entity: dict[str, Any], message: str) -> Side:
    """The app's clients, built as the app builds them."""
    from botcore.settings import CONVERSATIONS_TABLE, DELIVERIES_TABLE, SENDS_QUEUE
    from botcore.storage import etag_of, get_queue, get_table

    ledger = get_table(DELIVERIES_TABLE)
    return Side(
        get_table(CONVERSATIONS_TABLE),
        etag_of,
        lambda rows: lambda: ledger.transact([("create", row) for row in rows]),
        get_queue(SENDS_QUEUE),
        entity,
        message,
    )


def _bare_side(session: aiohttp.ClientSession, connection_string: str, entity: dict[str, Any], message: str) -> Side:
    from botcore.settings import CONVERSATIONS_TABLE, DELIVERIES_TABLE, SENDS_QUEUE

    ledger = BareTable(session, connection_string, DELIVERIES_TABLE)
    return Side(
        BareTable(session, connection_string, CONVERSATIONS_TABLE),
        lambda read: read[1],
        lambda rows: lambda: ledger.insert_batch(rows),
        BareQueue(session, connection_string, SENDS_QUEUE),
        entity,
        message,
    )


def _send_batch_message(service_url: str, app_id: str) -> str:
    """A sends-queue message as the fan-out writes it: 100 stored references, packed."""
    from botcore.delivery.batches import pack

    ref = conversation_entity(service_url, app_id, "tenant-1", PLACEHOLDER)["ref"]
    items = [(f"msteams|19:ops-{i}", ref.replace(PLACEHOLDER, f"19:ops-{i}@thread.tacv2")) for i in range(100)]
    return pack(f"job-{uuid.uuid4().hex[:8]}", items, id_prefix="0.")[0][0]


async def _measure(
    connection_string: str, entities: dict[str, dict[str, Any]], message: str, calls: int, batches: int, repeats: int
) -> dict[tuple[str, Op], list[tuple[float, float]]]:
    """{(side, op): [(CPU, wall) per call, one pair per repeat]}; the sides alternate which goes first."""
    from botcore.storage import close_storage_clients, ensure_resources

    await ensure_resources()
    out: dict[tuple[str, Op], list[tuple[float, float]]] = {}
    async with aiohttp.ClientSession() as session:
        sides = {
            "sdk": _sdk_side(entities["sdk"], message),
            "bare": _bare_side(session, connection_string, entities["bare"], message),
        }
        for side in sides.values():
            await side.table.insert(side.entity)
        for side in sides.values():  # warm-up: connections, code paths, caches
            await side.read_etag()
            for op in OPS:
                await _timed(side.calls(op, 3 if op is BATCH else 50))
        for r in range(repeats):
            for op in OPS:
                for name in ("sdk", "bare") if r % 2 == 0 else ("bare", "sdk"):
                    side = sides[name]
                    if op is WRITE:
                        await side.read_etag()  # the first ETag comes from a read, as in a turn
                    timed = await _timed(side.calls(op, batches if op is BATCH else calls))
                    out.setdefault((name, op), []).append(timed)
    await close_storage_clients()
    return out


def run(tmp: Path, quick: bool, context: dict[str, Any]) -> Section:
    from tests.botstack import environment

    calls, batches, repeats = (200, 10, 2) if quick else (1000, 50, 5)
    log(f"storage ops: {repeats} repeats of {calls} calls per operation ({batches} batches), SDK and bare")
    entities = {
        name: conversation_entity(
            "https://smba.trafficmanager.net/teams/", "bench-app", "tenant-1", f"19:ops-{name}@thread.tacv2"
        )
        for name in ("sdk", "bare")
    }
    message = _send_batch_message("https://smba.trafficmanager.net/teams/", "bench-app")
    with azurite(tmp / "azurite") as storage, environment({"BotStorage": storage.connection_string}):
        m = asyncio.run(_measure(storage.connection_string, entities, message, calls, batches, repeats))

    section = Section(
        "6. Storage operations",
        "Each storage operation the app uses, through the app's own clients (`botcore.storage.get_table` / "
        "`get_queue`: the Azure SDK's async clients, `BotStorage` set to Azurite's connection string) beside the "
        "same operation as one signed aiohttp request (bench/baretable.py), against one Azurite, in one process, "
        f"one call at a time. {repeats} repeats of {calls} calls per operation and client ({batches} for the "
        "batch), interleaved, after a warm-up. The entity is the one `ConversationStore.commit` writes; batch rows "
        f"are shaped as the delivery ledger's claims; the queue message is a send batch of 100 references "
        f"({len(message):,} characters) as the fan-out writes it.",
    )
    t = section.table(
        [
            "operation",
            "SDK call / bare request",
            "SDK CPU/call (ms)",
            "spread",
            "bare CPU/call (ms)",
            "spread",
            "ratio SDK/bare",
            "SDK wall/call (ms)",
            "bare wall/call (ms)",
        ]
    )
    for op in OPS:
        sdk_cpu, bare_cpu = (stats.Summary.of(c * 1000 for c, _ in m[(name, op)]) for name in ("sdk", "bare"))
        sdk_wall, bare_wall = (stats.Summary.of(w * 1000 for _, w in m[(name, op)]) for name in ("sdk", "bare"))
        t.add(
            op.name,
            f"{op.sdk} / {op.bare}",
            stats.number(sdk_cpu.median),
            stats.spread(sdk_cpu),
            stats.number(bare_cpu.median),
            stats.spread(bare_cpu),
            stats.times(stats.ratio(sdk_cpu.median, bare_cpu.median)),
            f"{stats.number(sdk_wall.median)} ({stats.spread(sdk_wall)})",
            f"{stats.number(bare_wall.median)} ({stats.spread(bare_wall)})",
        )
    section.notes.append(
        "CPU is `time.process_time()` of the benchmark process around the calls, divided by their number; Azurite's "
        "own CPU is not in it. The bare request signs (Shared Key Lite), sends and reads the answer, and parses a "
        "read's JSON (asked for without OData metadata) without decoding types; the SDK also runs its pipeline "
        "(headers, retry and logging policies) and builds its entity and message objects: the difference is what "
        "that costs per call. Wall time includes "
        "Azurite's own work, which both share."
    )
    section.notes.append(
        "The conditional write chains ETags: each run starts from a read (not timed), then each "
        "write carries the ETag the previous one returned. Batch rows are built before the timing, "
        "each batch in a partition of its own."
    )
    return section
