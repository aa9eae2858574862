"""Benchmark 9: what delivery, turns and idling cost, in storage transactions and function executions.

Counted where they happen: the bot's storage goes through bench/transactions.py's proxy in front of Azurite
(every Table and Queue request, classified as the storage service bills it), and the local host's log says
which functions ran and for how long. docs/cost.md turns the counts into dollars.

- Per delivered message: a notify-everyone broadcast against the fake Connector, at infra/main.bicep's default
  pace (BotTenantRatePerSecond 50, BotSendConcurrency 16), 6 tenants of 500 conversations (quick: 2 of 100),
  each tenant's conversations consecutive in key order, so that a fan-out page holds one tenant and its send
  batches are full, as for a company's own tenant. Counted from the POST until every message arrived, both
  queues are empty (the queued copies of the batches the fan-out sent itself included: BotDeliveryClaimSeconds
  is 10 s here, so that they come back within the count) and nothing runs.
- Per turn: authenticated messages through /api/messages: a new conversation's first message, state-changing
  turns (profile / cancel) and no-change turns (help).
- Per idle hour: the local host's queue polls over an idle window, beside what the Functions host does in Azure
  at host.json's maxPollingInterval (Microsoft's documented algorithm: after each empty poll the wait grows,
  up to maxPollingInterval; one poll per queue per interval on each instance listening); and every timer
  function of function_app.py, run once in this process through the proxy, times its runs per hour by its
  schedule.
- The same for bare code, so that the price of the guarantees shows: the benchmark's own minimal sender (reads
  the references with the SDK, pages of 1,000, one column, and posts each message, 16 at a time: no ledger, no
  pacing, no queues), and a bare turn (the point read, the write or none, the reply).

The local host polls as the Functions host does once its back-off reached maxPollingInterval, but it hides a
received message for LocalQueueLeaseSeconds and renews that lease; here the lease is 10 minutes, the hiding
Microsoft documents for the Functions host, so that no renewal falls in these short runs.
"""

from __future__ import annotations

import asyncio
import json
import math
import re
import sys
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp

from . import stats
from . import transactions as tx
from .infra import azurite, bot_stack, conversation_entity, log, seed
from .report import Section

STACK_ENV = {
    "BotTenantRatePerSecond": "50",  # infra/main.bicep's defaults
    "BotSendConcurrency": "16",
    "BotDeliveryClaimSeconds": "10",
    "LocalQueueLeaseSeconds": "600",
}
IDLE_SECONDS = {True: 6.0, False: 30.0}  # by quick
QUIET = 1.0  # seconds without a request other than a poll before a count ends
QUEUES = ("bot-jobs", "bot-sends")

_EXECUTED = re.compile(
    r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) \w+ Function\.\w+: "
    r"Executed 'Functions\.(\w+)' \((\w+), Id=[^,]+, Duration=(\d+)ms\)",
    re.MULTILINE,
)


@dataclass(frozen=True)
class Execution:
    function: str
    end: float  # seconds since the epoch
    seconds: float
    succeeded: bool

    @property
    def start(self) -> float:
        return self.end - self.seconds


def executions(host_log: str) -> list[Execution]:
    """The invocations the local host's log reports as ended, in order."""
    return [
        Execution(
            name,
            datetime.strptime(when, "%Y-%m-%d %H:%M:%S,%f").timestamp(),
            int(ms) / 1000,
            outcome == "Succeeded",
        )
        for when, name, outcome, ms in _EXECUTED.findall(host_log)
    ]


def busy_periods(runs: list[Execution]) -> list[tuple[float, float]]:
    """The periods during which at least one function ran (one instance: the local host)."""
    periods: list[tuple[float, float]] = []
    for run in sorted(runs, key=lambda r: r.start):
        if periods and run.start <= periods[-1][1]:
            periods[-1] = (periods[-1][0], max(periods[-1][1], run.end))
        else:
            periods.append((run.start, run.end))
    return periods


def billable_seconds(periods: list[tuple[float, float]]) -> float:
    """Flex Consumption's rule applied to each busy period: at least 1,000 ms, past that rounded up to 100 ms."""
    return sum(max(1.0, math.ceil(round((end - start) * 10, 6)) / 10) for start, end in periods)


def _running(host_log: str) -> int:
    return host_log.count("Executing 'Functions.") - host_log.count("Executed 'Functions.")


def _log_mark(stack: Any) -> int:
    """Where the host's log stands once every invocation it began has ended there (it writes in bursts)."""
    deadline = time.monotonic() + 10
    while _running(text := stack.host.log()) and time.monotonic() < deadline:
        time.sleep(0.02)
    return len(text)


def _queue_lengths(connection_string: str) -> list[int]:
    from azure.storage.queue import QueueClient

    return [
        QueueClient.from_connection_string(connection_string, name).get_queue_properties().approximate_message_count
        for name in QUEUES
    ]


def _settle(stack: Any, proxy: tx.CountingProxy, storage: Any, log_mark: int, done: Any, timeout: float) -> None:
    """Wait until `done()`, both queues are empty (hidden messages too), nothing runs, and for QUIET seconds no
    request but a poll went to storage."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if stack.host.process.poll() is not None:
            raise RuntimeError(f"the host exited:\n{stack.host.log()[-2000:]}")
        lengths, running = _queue_lengths(storage.connection_string), _running(stack.host.log()[log_mark:])
        busy = [r for r in proxy.records[-200:] if r.counted_as != tx.MESSAGE_GET_EMPTY]
        if done() and running == 0 and lengths == [0, 0]:
            if not busy or time.monotonic() - busy[-1].at >= QUIET:
                return
        time.sleep(0.2)
    raise RuntimeError(
        f"not settled in {timeout:.0f} s: done {done()}, queues {lengths}, running {running}, last requests "
        f"{busy[-3:]}:\n{stack.host.log()[-3000:]}"
    )


def _window(stack: Any, proxy: tx.CountingProxy, log_mark: int, mark: int) -> dict[str, Any]:
    runs = executions(stack.host.log()[log_mark:])
    periods = busy_periods(runs)
    return {
        "tally": tx.tally(proxy.since(mark)),
        "records": proxy.since(mark),
        "executions": Counter(r.function for r in runs),
        "failed": sum(not r.succeeded for r in runs),
        "busy": sum(end - start for start, end in periods),
        "billable": billable_seconds(periods),
    }


# ---- per delivered message --------------------------------------------------------------------------------


def _broadcast(stack: Any, proxy: tx.CountingProxy, storage: Any, ids: list[str]) -> dict[str, Any]:
    from .broadcast import _check_exactly_once

    count = len(ids)
    log_mark, mark = _log_mark(stack), proxy.mark()
    before = len(stack.channel.requests)
    response = stack.api("POST", "notify", {"text": "cost", "target": {"everyone": True}})
    if response.status_code != 202:
        raise RuntimeError(f"notify answered {response.status_code}: {response.text}")
    job_id = response.json()["id"]
    _settle(stack, proxy, storage, log_mark, lambda: len(stack.channel.requests) - before >= count, 60 + count / 20)
    window = _window(stack, proxy, log_mark, mark)
    window["check"] = _check_exactly_once(stack, ids)
    window.update(_ledger(storage.connection_string, job_id))
    return window


def _ledger(connection_string: str, job_id: str) -> dict[str, Any]:
    """The job's ledger partition: its send batches, and its size as the entities' JSON."""
    from azure.data.tables import TableClient

    from botcore.delivery.ledger import BATCH_PREFIX
    from botcore.keys import encode_key
    from botcore.settings import DELIVERIES_TABLE

    with TableClient.from_connection_string(connection_string, DELIVERIES_TABLE) as table:
        rows = list(table.query_entities(f"PartitionKey eq '{encode_key(job_id)}'"))
    return {
        "batches": sum(1 for r in rows if r["RowKey"].startswith(BATCH_PREFIX)),
        "ledger_bytes": sum(len(json.dumps(dict(r), default=str)) for r in rows),
    }


def _retention(env: dict[str, str], proxy: tx.CountingProxy) -> dict[str, Any]:
    """What deleting the broadcast's records costs later: a retention pass run in this process through the proxy as
    if BotLedgerRetentionDays and a day had gone by (the job expires: its rows go, a tombstone stays), then one as if
    twice that had (the tombstone goes)."""
    from botcore.app import bot_for, close
    from botcore.delivery.retention import run_retention
    from tests.botstack import environment

    async def run() -> dict[str, Any]:
        try:
            delivery = bot_for().delivery
            keep = timedelta(days=delivery.settings.ledger_retention_days)
            mark, reports = proxy.mark(), []
            for periods in (1, 2):
                reports.append(
                    await run_retention(delivery, now=datetime.now(UTC) + periods * keep + timedelta(days=1))
                )
        finally:
            await close()
        records = [r for r in proxy.since(mark) if r.counted_as != tx.MESSAGE_GET_EMPTY]  # the host's polls meanwhile
        return {
            "tally": tx.tally(records),
            "records": records,
            "expired": sum(r.expired for r in reports),
            "rows": sum(r.rows for r in reports),
        }

    with environment(env):
        return asyncio.run(run())


async def _bare_loop(stack: Any, proxy: tx.CountingProxy, count: int) -> dict[str, Any]:
    """The benchmark's own minimal sender: page through the references, post each message; nothing else."""
    from azure.data.tables.aio import TableClient

    from botcore.protocol.activity import ConversationReference
    from botcore.protocol.tokens import token_provider_for
    from botcore.settings import CONVERSATIONS_TABLE, Settings

    from .send_path import FloorClient, pump

    tokens = token_provider_for(Settings.from_env(stack.env))
    assert tokens is not None
    token = await tokens.get_token()
    before, mark = len(stack.channel.requests), proxy.mark()
    started = time.perf_counter()
    async with (
        TableClient.from_connection_string(proxy.connection_string, CONVERSATIONS_TABLE) as table,
        aiohttp.ClientSession() as session,
    ):
        client = FloorClient(session, token)
        async for page in table.list_entities(results_per_page=1000, select=["ref"]).by_page():
            references = [ConversationReference.from_dict(json.loads(e["ref"])) async for e in page]
            await pump(FloorClient.prepare(references, "bare"), 16, client.send)
    seconds = time.perf_counter() - started
    sent = len(stack.channel.requests) - before
    if sent != count:
        raise RuntimeError(f"the bare loop sent {sent} messages to {count} conversations")
    return {"tally": tx.tally(proxy.since(mark)), "busy": seconds, "billable": billable_seconds([(0.0, seconds)])}


# ---- per turn -----------------------------------------------------------------------------------------------

TURNS = {
    "new": "a new conversation's first message (hi)",
    "change": "state-changing turn (profile / cancel)",
    "nochange": "no-change turn (help)",
}


async def _turns(stack: Any, proxy: tx.CountingProxy, storage: Any, count: int) -> dict[str, dict[str, Any]]:
    from .warm_turn import FloorTurn, TurnClient

    texts = {"change": ["profile", "cancel"], "nochange": ["help"]}
    cids = {kind: f"cost-{kind}-{uuid.uuid4().hex[:8]}" for kind in ("change", "nochange", "floor")}
    out: dict[str, dict[str, Any]] = {}
    async with aiohttp.ClientSession() as session:
        client = TurnClient(stack, session)
        for cid in cids.values():
            await client.post(client.body(cid, "hi"))
        await client.post(client.body(cids["change"], "cancel"))  # warm: the first turn of a kind loads its code

        async def counted(bodies: list[bytes]) -> dict[str, Any]:
            log_mark, mark = _log_mark(stack), proxy.mark()
            for body in bodies:
                await client.post(body)
            await asyncio.to_thread(_settle, stack, proxy, storage, log_mark, lambda: True, 30)
            return _window(stack, proxy, log_mark, mark)

        out["new"] = await counted([client.body(f"cost-new-{uuid.uuid4().hex[:10]}", "hi") for _ in range(count)])
        for kind, words in texts.items():
            out[kind] = await counted([client.body(cids[kind], words[i % len(words)]) for i in range(count)])

        floor = FloorTurn(stack, session, cids["floor"])
        for write, kind in ((True, "bare change"), (False, "bare nochange")):
            mark = proxy.mark()
            for _ in range(count):
                await floor(write)
            out[kind] = {"tally": tx.tally(proxy.since(mark))}
    return out


# ---- per idle hour -----------------------------------------------------------------------------------------


def _idle(proxy: tx.CountingProxy, seconds: float) -> dict[str, Any]:
    mark = proxy.mark()
    time.sleep(seconds)
    records = proxy.since(mark)
    polls = Counter(r.resource for r in records if r.counted_as == tx.MESSAGE_GET_EMPTY)
    return {"polls_per_hour": {q: polls[q] * 3600 / seconds for q in QUEUES}}


def _timers(env: dict[str, str], proxy: tx.CountingProxy) -> dict[str, Any]:
    """Each timer function of function_app.py, run once in this process (as the local host's own loader runs
    it), its storage calls through the proxy; its runs per hour from its schedule. Also the queues the app's
    queue triggers listen to."""
    from botcore.app import close
    from devhost.app_loader import OwnLoader, functions_of, resolve
    from devhost.cron import parse_schedule
    from devhost.triggers import timer_info
    from tests.botstack import environment

    async def run() -> dict[str, Any]:
        # a fresh import: the azure-functions library refuses to list an app's functions a second time
        sys.modules.pop("function_app", None)
        loader = OwnLoader()
        timers, queues = {}, []
        try:
            for function in functions_of(await loader.start()):
                if function.trigger_type == "queueTrigger":
                    queues.append(resolve(function.trigger["queueName"]))
                if function.trigger_type != "timerTrigger":
                    continue
                schedule_text = resolve(function.trigger["schedule"])
                schedule = parse_schedule(schedule_text)
                now = datetime.now(UTC)
                tallies = []
                for _ in range(2):  # the first run of a day may do a daily part (retention's calendar sweep)
                    mark = proxy.mark()
                    await loader.invoke(function, timer_info(False, None, schedule.next_after(now)), "cost")
                    # the local host's polls meanwhile are not the timer's: they are counted per idle hour
                    tallies.append(tx.tally(r for r in proxy.since(mark) if r.counted_as != tx.MESSAGE_GET_EMPTY))
                hour, runs, due = now + timedelta(hours=1), 0, schedule.next_after(now)
                while due < hour:
                    runs, due = runs + 1, schedule.next_after(due)
                timers[function.name] = {
                    "schedule": schedule_text,
                    "per_hour": runs,
                    "first": tallies[0],
                    "tally": tallies[1],
                }
        finally:
            await loader.close()
            await close()
        return {"timers": timers, "queues": queues}

    with environment(env):
        return asyncio.run(run())


def _functions_host_polls() -> float:
    """Polls per hour of one queue by the Functions host on one instance, at host.json's maxPollingInterval."""
    from devhost.queue_trigger import QueueOptions

    host_json = json.loads((Path(__file__).resolve().parent.parent / "host.json").read_text())
    return 3600 / QueueOptions.from_host_json(host_json["extensions"]["queues"]).max_polling_interval


# ---- the run ----------------------------------------------------------------------------------------------


def run(tmp: Path, quick: bool, context: dict[str, Any]) -> Section:
    from tests.botstack import APP_ID

    tenants, per_tenant = (2, 100) if quick else (6, 500)
    count, turns, repeats = tenants * per_tenant, (10 if quick else 100), (1 if quick else 2)
    runs: list[dict[str, Any]] = []
    for i in range(repeats):
        with (
            azurite(tmp / f"azurite-{i}") as storage,
            tx.CountingProxy.serving(storage) as proxy,
            bot_stack(proxy.connection_string, tmp / f"stack-{i}", STACK_ENV) as stack,
        ):
            names = [f"tenant-{uuid.uuid4().hex[:8]}" for _ in range(tenants)]
            ids, _ = seed(storage.connection_string, count, stack.service_url, APP_ID, tenants=names, grouped=True)
            log(f"cost {i + 1}/{repeats}: {count:,} references over {tenants} tenants; notify everyone")
            result: dict[str, Any] = {"broadcast": _broadcast(stack, proxy, storage, ids)}
            log(f"cost {i + 1}/{repeats}: the broadcast's records deleted by retention passes")
            result["retention"] = _retention(stack.env, proxy)
            log(f"cost {i + 1}/{repeats}: the bare loop")
            result["bare"] = asyncio.run(_bare_loop(stack, proxy, count))
            log(f"cost {i + 1}/{repeats}: {turns} turns of each kind")
            result["turns"] = asyncio.run(_turns(stack, proxy, storage, turns))
            log(f"cost {i + 1}/{repeats}: idle for {IDLE_SECONDS[quick]:.0f} s, then the timers")
            result["idle"] = _idle(proxy, IDLE_SECONDS[quick])
            result["timers"] = _timers(stack.env, proxy)
            runs.append(result)
    return _section(count, tenants, turns, runs)


# ---- the report -------------------------------------------------------------------------------------------

TABLE_KINDS = [
    (tx.ENTITY_READ, "entity reads"),
    (tx.ENTITY_INSERT, "entity writes: inserts"),
    (tx.ENTITY_UPDATE, "entity writes: updates (replace or merge, If-Match)"),
    (tx.ENTITY_UPSERT, "entity writes: upserts"),
    (tx.ENTITY_DELETE, "entity writes: deletes"),
    (tx.BATCH, "batch transactions"),
    (tx.QUERY, "queries (first pages)"),
    (tx.QUERY_NEXT, "query pages after the first"),
]
QUEUE_KINDS = [
    (tx.MESSAGE_PUT, "queue puts"),
    (tx.MESSAGE_GET, "queue gets that returned messages"),
    (tx.MESSAGE_UPDATE, "queue message updates"),
    (tx.MESSAGE_DELETE, "queue deletes"),
]
TABLE_SET = {k for k, _ in TABLE_KINDS} | {tx.TABLE_CREATE}
QUEUE_SET = {k for k, _ in QUEUE_KINDS} | {tx.MESSAGE_PEEK, tx.QUEUE_PROPERTIES, tx.QUEUE_CREATE, tx.QUEUE_CLEAR}


def _totals(tally: Counter[str]) -> tuple[int, int]:
    """Table and queue transactions, a receive that found nothing (a poll: time, not work) left out."""
    return sum(n for k, n in tally.items() if k in TABLE_SET), sum(n for k, n in tally.items() if k in QUEUE_SET)


def _per(runs: list[dict[str, Any]], value: Any, scale: float = 1.0) -> stats.Summary:
    return stats.Summary.of(value(r) * scale for r in runs)


def _cell(summary: stats.Summary, digits: int | None = None) -> str:
    return stats.number(summary.median, digits)


def _section(count: int, tenants: int, turns: int, runs: list[dict[str, Any]]) -> Section:
    section = Section(
        "9. Cost: storage transactions and executions",
        f"Counted where they happen: every Table and Queue request of the bot through a counting proxy in front of "
        f"Azurite (bench/transactions.py), every function execution from the local host's log. A notify-everyone "
        f"broadcast to {count:,} conversations ({tenants} tenants, each a run of consecutive keys, so full send "
        f"batches) at infra/main.bicep's default pace, {turns} turns of each kind, an idle window and each timer "
        f"run twice, two retention passes over the broadcast's records; beside them the same work done by "
        f"bare code. {len(runs)} run(s). docs/cost.md prices them.",
    )
    b = [r["broadcast"] for r in runs]
    m = section.table(
        ["per delivered message", "bot: delivery", "spread", "bot: its deletion later (retention)", "bare loop"],
        title=f"Per delivered message ({count:,} messages)",
    )
    for kind, label in [*TABLE_KINDS, *QUEUE_KINDS]:
        bot = _per(b, lambda w, k=kind: w["tally"][k] / count)
        later = _per(runs, lambda r, k=kind: r["retention"]["tally"][k] / count)
        bare = _per(runs, lambda r, k=kind: r["bare"]["tally"][k] / count)
        m.add(label, _cell(bot, 4), stats.spread(bot, 4), _cell(later, 4), _cell(bare, 4))

    def operations(records: list[Any]) -> float:
        return float(sum(r.operations for r in records if r.kind == tx.BATCH)) / count

    inside = _per(b, lambda w: operations(w["records"]))
    m.add(
        "… operations inside those batch transactions",
        _cell(inside, 4),
        stats.spread(inside, 4),
        _cell(_per(runs, lambda r: operations(r["retention"]["records"])), 4),
        "0",
    )
    for index, label in ((0, "**table transactions**"), (1, "**queue transactions**")):
        bot = _per(b, lambda w, i=index: _totals(w["tally"])[i] / count)
        later = _per(runs, lambda r, i=index: _totals(r["retention"]["tally"])[i] / count)
        bare = _per(runs, lambda r, i=index: _totals(r["bare"]["tally"])[i] / count)
        m.add(label, f"**{_cell(bot, 4)}**", stats.spread(bot, 4), f"**{_cell(later, 4)}**", _cell(bare, 4))
    polls = _per(b, lambda w: w["tally"][tx.MESSAGE_GET_EMPTY] / count)
    m.add(
        "queue gets that found nothing (polls: time, not work; see idle)",
        _cell(polls, 4),
        stats.spread(polls, 4),
        "",
        "0",
    )
    for function in sorted({f for w in b for f in w["executions"]}):
        e = _per(b, lambda w, f=function: w["executions"][f] / count)
        m.add(f"executions: {function}", _cell(e, 4), stats.spread(e, 4), "", "")
    e = _per(b, lambda w: sum(w["executions"].values()) / count)
    m.add(
        "**executions**",
        f"**{_cell(e, 4)}**",
        stats.spread(e, 4),
        "in the hourly timer's (idle)",
        f"1 per broadcast ({1 / count:.4f})",
    )
    busy = _per(b, lambda w: w["busy"] / count, 1000)
    bare_busy = _per(runs, lambda r: r["bare"]["busy"] / count, 1000)
    m.add(
        "instance busy time (ms; at least one function running)", _cell(busy), stats.spread(busy), "", _cell(bare_busy)
    )
    billable = _per(b, lambda w: w["billable"] / count, 1000)
    m.add("… billable by Flex Consumption's rounding (ms)", _cell(billable), stats.spread(billable), "", "")
    size = _per(b, lambda w: count / w["batches"])
    m.add("conversations per send batch", _cell(size), stats.spread(size), "", "")
    ledger = _per(b, lambda w: w["ledger_bytes"] / count)
    m.add("ledger kept per message until deleted (bytes of entity JSON)", _cell(ledger), stats.spread(ledger), "", "0")
    reference = len(
        json.dumps(conversation_entity("https://x.example/", "app", "tenant", "a:" + "x" * 40), default=str)
    )
    expired = runs[0]["retention"]
    section.notes.append(
        "Its deletion later: two retention passes run in the benchmark's process through the proxy, one as if "
        "BotLedgerRetentionDays and a day had gone by (the job expired, its ledger rows deleted, its tombstone "
        "written), one as if twice that had (the tombstone deleted); with them the passes' own reads and the "
        f"calendar sweep, which deletes the tenants' idle pace rows. First run: {expired['expired']} job(s) expired, "
        f"{expired['rows']} rows deleted."
    )
    section.notes.append(
        f"Delivery check: {b[0]['check']} (every run). Busy time is measured against a fake Connector that answers at "
        f"once, {tenants} tenants sending at once on one host; in Azure each tenant's sends wait on its pace (47.5 a "
        "second of the 50 allowed), so an instance sending to one tenant alone is busy about 21 ms per message, bare "
        f"loop or not (docs/cost.md). A stored conversation reference is about {reference} bytes of entity JSON."
    )

    t = section.table(
        ["per turn", *(TURNS[k] for k in TURNS), "bare: read, write, reply", "bare: read, reply"],
        title=f"Per turn ({turns} turns of each kind)",
    )
    kinds = [*TURNS, "bare change", "bare nochange"]
    tr = [r["turns"] for r in runs]
    for kind, label in TABLE_KINDS + QUEUE_KINDS:
        if any(x[k]["tally"][kind] for x in tr for k in kinds):
            t.add(label, *(_cell(_per(tr, lambda x, k=k, n=kind: x[k]["tally"][n] / turns), 2) for k in kinds))
    t.add(
        "**storage transactions**",
        *(f"**{_cell(_per(tr, lambda x, k=k: sum(_totals(x[k]['tally'])) / turns), 2)}**" for k in kinds),
    )
    t.add(
        "executions",
        *(_cell(_per(tr, lambda x, k=k: sum(x[k]["executions"].values()) / turns), 2) for k in TURNS),
        "1",
        "1",
    )
    t.add(
        "instance busy time (ms)", *(_cell(_per(tr, lambda x, k=k: x[k]["busy"] / turns, 1000)) for k in TURNS), "", ""
    )

    polls_model, queues = _functions_host_polls(), runs[0]["timers"]["queues"]
    i = section.table(["idle, per hour per instance", "local host (measured)", "Functions host (its algorithm)"])
    for queue in queues:
        local = _per(runs, lambda r, q=queue: r["idle"]["polls_per_hour"][q])
        i.add(f"polls of {queue} (queue gets that find nothing)", _cell(local), stats.number(polls_model))
    timers = runs[0]["timers"]["timers"]
    for name, timer in timers.items():
        tally = timer["tally"]
        table_tx, queue_tx = _totals(tally)
        kinds_text = ", ".join(f"{n} {k}" for k, n in sorted(tally.items()))
        i.add(f"timer {name} ({timer['schedule']}): executions", stats.number(timer["per_hour"]), "the same")
        i.add(
            f"… its storage transactions ({kinds_text or 'none'} per run)",
            stats.number((table_tx + queue_tx) * timer["per_hour"]),
            "the same",
        )
        first = timer["first"]
        if first != tally:
            extra = sum(_totals(first)) - table_tx - queue_tx
            first_text = ", ".join(f"{n} {k}" for k, n in sorted(first.items()))
            i.add(
                f"… its first run of a UTC day ({first_text}): once a day, extra transactions",
                stats.number(extra),
                "the same",
            )
    section.notes.append(
        "Idle: the local host's polls were counted over an idle window; the Functions host's figure is 3600 / "
        "host.json's maxPollingInterval per queue, on each instance whose functions listen to that queue, once its "
        "back-off has reached that interval (Microsoft documents the back-off; an instance that scales in stops "
        "polling). Every timer function of function_app.py is in this table, each run twice through the proxy with "
        "nothing due: the second run's transactions are the hourly figure, and where the first differs (a part done "
        "once a UTC day, such as retention's calendar sweep) its extra is shown once a day. Timers run on one "
        f"instance of the app, not on each. Here: {', '.join(timers) or 'none'}. The blob transactions of the "
        "Functions host itself (its host lock, the timers' schedule locks and status) are not counted: the local "
        "host keeps neither."
    )
    return section
