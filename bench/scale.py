"""Benchmark 10: a broadcast to a million stored conversations: how fast the fan-out plans it, the hosts'
memory from 10k to 1M references, the storage transactions it takes, and deliveries counted exactly once.

Per size a fresh Azurite that keeps its data in memory (a database file would be rewritten whole every 5 s
while writes come in), N conversation references over 10 tenants seeded by the benchmarks' bare client
(bench/baretable.py: one partition per conversation, so concurrent single inserts), two local hosts on it,
the fake Connector in Teams mode with its per-tenant limit raised to RATE requests/s (the bot's
BotTenantRatePerSecond the same), then one `POST /api/notify` to everyone.

Every storage request of the hosts, and of the floor, passes through bench/transactions.py's counting proxy,
which classifies each as Azure would bill it.

Floor: the rate at which the storage SDK alone (azure-data-tables, the bot's library) pages through the same
references with the fan-out's filter, select and page size, doing nothing else, through the same proxy,
measured on the same Azurite just before the job: the median of FLOOR_RUNS pagings, as one varies from the next by
about 15 % here. Planning throughput: references the fan-out planned
(grouped, packed, given calendar slots, put on the sends queue, its cursor saved) per second of its
invocations, per host; the hosts take the job's invocations (6 pages of 2,000 each, the job's first page 1,000) in
turn, one at a time.

Azurite answers each page of a filtered query by evaluating the filter on every row of the table and sorting
the rows after the cursor (LokiTableMetadataStore.queryTableEntities), so a page costs it time in proportion to
the table: here 0.4 s a page at 100k rows and 7 s at a million, so a full pass over a million rows would take it
hours, where Table Storage reads a page by its index. At that size the job is therefore measured over its first
invocation (`Size.first_invocation`; the floor over the same queries); the smaller sizes are planned whole and
delivered whole.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import procfs, stats
from .infra import azurite, bot_stack, log, second_host, seed
from .report import Section
from .teams import HANDED_ON, Watch, check_once, job_done, post_notify
from .transactions import CountingProxy, Record

TENANTS = 10
RATE = 20  # requests/s per tenant, at the fake and in the bot's pace: what two hosts here sustain over 10 tenants
SEED_CONCURRENCY = 64  # measured here: 16 → 829 rows/s, 32 → 1,287, 64 → 1,436, 128 → 1,182
AZURITE_HEAP_MIB = 12_288  # Node's default heap limit (about 4 GiB) is too small for a million rows
TARGET_PLANNING = 0.5
FLOOR_RUNS = 3  # the floor is the median of this many pagings: one varies by ±15 % from the next on this machine
TARGET_RSS = 0.10
# The Functions host's queue lease (it hides a message it runs for 10 minutes, renewed) and the bot's default claim
# time: the test stack shortens both so that tests that kill a host see its work come back soon, and no host is
# killed here. A million rows make each Azurite query a scan of seconds that other requests wait behind, and with
# the test stack's 10 s lease the jobs message came back while its invocation ran: four invocations of one fan-out
# at once, and batches whose 6 s claims lapsed while their outcome writes waited.
STACK_ENV = {
    "BotTenantRatePerSecond": str(RATE),
    "LocalQueueLeaseSeconds": "600",
    "BotDeliveryClaimSeconds": "120",
}

FANNED_OUT = r"job {job}: fanned out to (\d+) targets"
CONTINUES = r"job {job}: (\d+) conversations so far; fan-out continues"
JOB_STARTED = "Executing 'Functions.jobs'"
TAKEOVER = "taking over a claim"


@dataclass(frozen=True)
class Size:
    references: int
    first_invocation: bool = False  # plan only the job's first invocation, send none

    @property
    def planned(self) -> int:
        if not self.first_invocation:
            return self.references
        from botcore.delivery.fanout import FIRST_PAGE, PAGE_SIZE, PAGES_PER_INVOCATION

        return FIRST_PAGE + (PAGES_PER_INVOCATION - 1) * PAGE_SIZE


FULL = (Size(10_000), Size(100_000), Size(1_000_000, first_invocation=True))
QUICK = (Size(1_000), Size(5_000))


async def _sdk_paging(connection_string: str, pages: int | None) -> tuple[int, float]:
    """(references read, seconds): the SDK alone paging through the conversations as the fan-out does."""
    from azure.data.tables.aio import TableClient

    from botcore.settings import CONVERSATIONS_TABLE
    from botcore.state.conversations import ADDRESS_COLUMNS, ConversationStore
    from botcore.storage import MAX_PAGE

    query = ConversationStore.selection_filter()  # everyone: the active conversations
    count = read = 0
    async with TableClient.from_connection_string(connection_string, CONVERSATIONS_TABLE) as client:
        start = time.perf_counter()
        async for page in client.query_entities(query, results_per_page=MAX_PAGE, select=ADDRESS_COLUMNS).by_page():
            async for _ in page:
                count += 1
            read += 1
            if pages is not None and read >= pages:
                break
        return count, time.perf_counter() - start


def _planning(logs: list[list[tuple[float, str, str, str]]], job: str) -> dict[str, Any]:
    """Each host's fan-out invocations of the job, from their start to the line that says how far they planned
    (Watch.logs' lines). Returns per host [references, seconds], the references planned and the last such line's
    time (seconds after the POST)."""
    done = re.compile(FANNED_OUT.format(job=re.escape(job)) + "|" + CONTINUES.format(job=re.escape(job)))
    lines = sorted((at, host, text) for host, host_lines in enumerate(logs) for at, _, text, _ in host_lines)
    started: dict[int, float] = {}
    per_host = [[0, 0.0] for _ in logs]
    planned, last = 0, None
    for at, host, text in lines:
        if JOB_STARTED in text:
            started.setdefault(host, at)
        elif (m := done.search(text)) and host in started:
            targets = int(m[1] or m[2])
            per_host[host][0] += targets - planned
            per_host[host][1] += at - started.pop(host)
            planned, last = targets, at
    return {"per_host": per_host, "planned": planned, "last": last}


def _by_kind(records: list[Record]) -> Counter[str]:
    """Storage transactions by table or queue and kind."""
    return Counter(f"{r.resource}: {r.counted_as}" for r in records)


def _run_size(tmp: Path, size: Size) -> dict[str, Any]:
    from botcore.storage import MAX_PAGE
    from devhost.channel import TeamsLimits, Window
    from tests.botstack import APP_ID

    n = size.references
    tag = uuid.uuid4().hex[:6]
    tenants = [f"tenant-{i}-{tag}" for i in range(TENANTS)]
    limits = TeamsLimits(tenant=Window(RATE, 1.0))
    with (
        azurite(tmp / f"azurite-{n}", in_memory=True, heap_mib=AZURITE_HEAP_MIB) as storage,
        CountingProxy.serving(storage) as proxy,
        bot_stack(proxy.connection_string, tmp / f"stack-{n}", STACK_ENV, teams=limits) as stack,
        second_host(stack.env, tmp / f"stack-{n}" / "second-host.log") as second,
    ):
        assert storage.process is not None
        azurite_pid = storage.process.pid
        ids, seed_seconds = seed(
            storage.connection_string, n, stack.service_url, APP_ID, tenants=tenants, concurrency=SEED_CONCURRENCY
        )
        azurite_seeded = procfs.rss_mib(azurite_pid)
        log(f"scale {n:,}: seeded in {seed_seconds:.0f} s ({n / seed_seconds:,.0f} rows/s); the floor")
        pages = size.planned // MAX_PAGE if size.first_invocation else None
        floor_rates = []
        for _ in range(FLOOR_RUNS):
            floor_count, floor_seconds = asyncio.run(_sdk_paging(proxy.connection_string, pages))
            if floor_count != size.planned:
                raise RuntimeError(f"the floor read {floor_count:,} references, not {size.planned:,}")
            floor_rates.append(floor_count / floor_seconds)
        floor_rate = stats.median(floor_rates)
        log(
            f"scale {n:,}: floor {floor_rate:,.0f} references/s (median of {FLOOR_RUNS}: "
            f"{', '.join(f'{r:,.0f}' for r in floor_rates)}); notify everyone"
        )

        hosts = [stack.host, second]
        pids = [h.process.pid for h in hosts]
        text = f"scale {tag}"
        mark = proxy.mark()
        cpu0 = [procfs.cpu_seconds(p) for p in [*pids, azurite_pid]]
        watch = Watch(stack, hosts, tenants)
        job = post_notify(stack, text, {"everyone": True})
        deadline = time.monotonic() + 120 + size.planned / 50
        planning: dict[str, Any] = {"planned": 0}
        while True:  # until the last batch (of the first invocation, or of all) is planned
            if time.monotonic() > deadline:
                raise RuntimeError(f"scale {n:,}: the fan-out planned only {planning['planned']:,} in time")
            for host in hosts:
                if host.process.poll() is not None:
                    raise RuntimeError(f"a host exited (code {host.process.returncode}):\n{host.log()[-2000:]}")
            planning = _planning(watch.logs(), job)
            if planning["planned"] >= size.planned:
                break
            time.sleep(0.4)
        cpu_planning = [procfs.cpu_seconds(p) - c for p, c in zip([*pids, azurite_pid], cpu0, strict=True)]
        planning_records = proxy.since(mark)
        log(f"scale {n:,}: {planning['planned']:,} planned {planning['last']:.1f} s after the POST")
        result: dict[str, Any] = {
            "size": size,
            "seed_seconds": seed_seconds,
            "floor_rate": floor_rate,
            "floor_spread": (min(floor_rates), max(floor_rates)),
            "floor_page_ms": MAX_PAGE / floor_rate * 1000,
            "planning": planning,
            "cpu_planning": cpu_planning,
            "planning_counts": _by_kind(planning_records),
            "azurite_seeded": azurite_seeded,
        }
        if not size.first_invocation:
            sends = watch.wait_sends(text, n, timeout=120 + 3 * n / (RATE * TENANTS))
            try:  # a miss is reported, and the larger sizes still measured
                check_once(sends, set(ids), lambda r: r.conversation_id, f"scale {n:,}")
                job_done(stack, job, n, timeout=60)
                result["exactly_once"] = None
            except RuntimeError as exc:
                log(str(exc))
                result["exactly_once"] = str(exc)
            records = proxy.since(mark)
            end = watch.finish()
            lines = [text for host_lines in end["logs"] for _, _, text, _ in host_lines]
            result.update(
                delivered=len(sends),
                elapsed=max(r.at for r in sends) - watch.t0,
                refused=end["refused"],
                handed_on=sum(int(m[1]) for line in lines if (m := HANDED_ON.search(line))),
                takeovers=sum(1 for line in lines if TAKEOVER in line),
                counts=_by_kind(records),
                batch_operations=sum(r.operations for r in records),
                cpu_per_message=sum(end["cpu"]) / len(sends),
            )
        result["peak_rss"] = [procfs.peak_rss_mib(p) for p in pids]
        result["rss_reset"] = watch.rss_reset
        result["azurite_end"] = procfs.rss_mib(azurite_pid)
        return result


def run(tmp: Path, quick: bool, context: dict[str, Any]) -> Section:
    tmp.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(tmp).free / 2**30
    return _section([_run_size(tmp, size) for size in (QUICK if quick else FULL)], free)


# ---- the report ---------------------------------------------------------------------------------------


def _section(runs: list[dict[str, Any]], free_gib: float) -> Section:
    from botcore.delivery.fanout import FIRST_PAGE, PAGE_SIZE, PAGES_PER_INVOCATION
    from botcore.storage import MAX_PAGE

    section = Section(
        "10. Scale",
        f"Per size a fresh Azurite (data in memory), the references seeded over {TENANTS} tenants by the bare "
        f"client ({SEED_CONCURRENCY} inserts in flight), two local hosts, the fake Connector in Teams mode with "
        f"{RATE} requests/s per tenant (the bot's BotTenantRatePerSecond the same; Teams allows 50), the Functions "
        "host's queue lease of 10 minutes and the bot's claims of 120 s (the test stack's are 10 s and 6 s), one "
        '`POST /api/notify` with `{"everyone": true}`. Floor: the storage SDK alone paging through the same '
        f"references (the fan-out's filter, select and queries of {MAX_PAGE:,}) through the same counting proxy "
        f"(bench/transactions.py), just before the job, the median of {FLOOR_RUNS} pagings. Planning: references "
        "the fan-out planned per second of its invocations (each host's invocations of the job: "
        f"{PAGES_PER_INVOCATION} pages of {PAGE_SIZE:,} each, the job's first page {FIRST_PAGE:,}, taken in turn). "
        "One job per size. "
        "Azurite evaluates a query's filter on every row of the table and sorts the rest for each query, so a "
        "query of a million rows costs it seconds (Table Storage reads a page by its index): at that size only the "
        "job's first invocation is measured, planned and not sent.",
    )
    t = section.table(
        [
            "references",
            "seeding (rows/s)",
            f"floor: SDK paging, median of {FLOOR_RUNS} (refs/s; lowest–highest; ms a query)",
            "**planning, refs/s** (host 1 / host 2)",
            "ratio",
            "POST → last batch planned (s)",
            "CPU while planning: Azurite / hosts (cores)",
            "peak RSS host 1 / host 2 (MiB)",
            "Azurite RSS seeded / at the end (MiB)",
        ]
    )
    ratios = []
    for r in runs:
        size: Size = r["size"]
        per_host = r["planning"]["per_host"]
        busy = sum(seconds for _, seconds in per_host)
        rate = sum(refs for refs, _ in per_host) / busy if busy else float("nan")
        ratio = stats.ratio(rate, r["floor_rate"])
        ratios.append(ratio)
        span = r["planning"]["last"]
        cpu = r["cpu_planning"]
        t.add(
            f"{size.references:,}" + (f" (first {size.planned:,} planned)" if size.first_invocation else ""),
            stats.number(size.references / r["seed_seconds"]),
            f"{stats.number(r['floor_rate'])} ({' – '.join(stats.number(x) for x in r['floor_spread'])}; "
            f"{stats.number(r['floor_page_ms'])})",
            f"{stats.number(rate)} ({' / '.join(stats.number(refs / s) if s else '—' for refs, s in per_host)})",
            stats.times(ratio),
            stats.number(span),
            f"{cpu[2] / span:.2f} / {(cpu[0] + cpu[1]) / span:.2f}",
            " / ".join(stats.number(p) for p in r["peak_rss"]),
            f"{stats.number(r['azurite_seeded'])} / {stats.number(r['azurite_end'])}",
        )
    delivered = [r for r in runs if not r["size"].first_invocation]
    d = section.table(
        [
            "references",
            "delivered",
            "POST → last delivery (s)",
            "messages/s (bound: 95 % of the limit)",
            "host CPU per message (ms, both hosts)",
            "429s",
            "handed on",
            "claims taken over",
            "duplicates / missing",
        ],
        title="Delivered end to end (every conversation checked for exactly one message)",
    )
    for r in delivered:
        n = r["size"].references
        missed = r["exactly_once"]
        d.add(
            f"{n:,}",
            f"{r['delivered']:,}",
            stats.number(r["elapsed"]),
            f"{stats.number(r['delivered'] / r['elapsed'])} ({stats.number(RATE * TENANTS * 0.95)})",
            stats.number(r["cpu_per_message"] * 1000),
            r["refused"],
            r["handed_on"],
            r["takeovers"],
            "0 / 0" if missed is None else missed,
        )
    exact = [r for r in delivered if r["exactly_once"] is None]
    biggest = max(exact or delivered, key=lambda r: r["size"].references)
    n = biggest["size"].references
    c = section.table(
        ["table or queue: kind", "per 1,000 conversations, whole job", "… of which while planning"],
        title=f"Storage transactions, {n:,} conversations (the hosts' requests through the counting proxy, from "
        + (
            "the POST until the job's status said done)"
            if biggest["exactly_once"] is None
            else "the POST until the benchmark stopped waiting: the job did not finish)"
        ),
    )
    planning = biggest["planning_counts"]
    for kind, count in sorted(biggest["counts"].items(), key=lambda kv: -kv[1]):
        c.add(kind, stats.number(count * 1000 / n), stats.number(planning.get(kind, 0) * 1000 / n))
    total = sum(biggest["counts"].values())
    c.add("**all**", f"**{stats.number(total * 1000 / n)}**", stats.number(sum(planning.values()) * 1000 / n))
    section.notes.append(
        f"The batch transactions of that job carried {biggest['batch_operations'] * 1000 / n:,.0f} operations "
        "per 1,000 conversations (a batch is billed as one transaction)."
    )
    section.target(
        f"fan-out planning ≥ {TARGET_PLANNING}× the SDK's own paging (every size)",
        " / ".join(stats.times(x) for x in ratios),
        min(ratios) >= TARGET_PLANNING,
    )
    base = max(runs[0]["peak_rss"])
    for r in runs[1:]:
        peak = max(r["peak_rss"])
        growth = peak / base - 1
        what = "first invocation planned" if r["size"].first_invocation else "planned and delivered"
        section.target(
            f"host peak RSS within {TARGET_RSS:.0%} from {runs[0]['size'].references:,} to "
            f"{r['size'].references:,} ({what})",
            f"{stats.number(base)} → {stats.number(peak)} MiB ({growth:+.1%})",
            growth <= TARGET_RSS,
        )
    section.target(
        "exactly once",
        "; ".join(
            f"{r['size'].references:,}: " + (r["exactly_once"] or "each delivered once, the job's status done")
            for r in delivered
        ),
        len(exact) == len(delivered),
    )
    if not all(r["rss_reset"] for r in runs):
        section.notes.append("The kernel did not allow resetting VmHWM: peak RSS counts from each host's start.")
    section.notes.append(f"Free disk before the runs: {free_gib:.0f} GiB; Azurite held the data in memory.")
    return section
