"""Benchmark 4: a broadcast end to end.

N stored references in a fresh Azurite, one notify job to everyone (POST /api/notify with the
function key) through the jobs queue, the fan-out, the sends queue, the delivery ledger and the
fake Connector. Figures: messages/s from the POST to the last message received, CPU and peak RSS
(VmHWM) of the host process. Then, in full mode, 100,000 references for memory only.

Floors: the send-path floor (bare aiohttp at concurrency 32, benchmark 3) and Azurite's own batch
write rate (transactions of 100 ledger-shaped entities in one partition, through the benchmarks' bare
client, bench/baretable.py, so that the client is not what limits it), both measured in this run.

A throughput figure with no target: the fake Connector limits nothing and the bot's pace is set far above
any channel's, so the rate is what the host, Azurite and the fakes manage while sharing this machine's
cores, not what users feel. What users feel, delivery within a channel's limits, is benchmark 7
(bench/teams.py). (A target of 0.7 of the lower floor was retired: it measured the fakes sharing two cores.)
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

from botcore.delivery.batches import BATCH_KEYS
from botcore.keys import encode_key
from botcore.settings import DELIVERIES_TABLE

from . import procfs, stats
from .infra import RemoteChannel, azurite, bot_stack, ledger_rows, log, seed
from .report import Section

STACK_ENV = {"BotTenantRatePerSecond": "100000", "BotSendConcurrency": "32"}
FLOOR_BATCH_CONCURRENCY = 8
MEMORY_RUN = 100_000
MEMORY_CAP = 240.0  # seconds after the POST
# The 100k run limits sends so that the fan-out (the part whose memory could grow with N) has the
# machine to itself and finishes in the budget.
MEMORY_ENV = {**STACK_ENV, "BotTenantRatePerSecond": "100"}


def _wait_delivered(stack: Any, count: int, timeout: float, job_done: Any = None) -> tuple[int, float]:
    """Poll the fake Connector's request list (cheap: no lock, no list copies) until `count` arrived.

    Also returns the host's CPU share (cores) from the first message on: the steady phase, which
    an average from the POST would blur with the idle wait for the first queue poll.
    """
    pid = stack.host.process.pid
    deadline = time.monotonic() + timeout
    first: tuple[float, float] | None = None  # (monotonic time, host CPU seconds) at the first message
    while time.monotonic() < deadline:
        if stack.host.process.poll() is not None:
            raise RuntimeError(
                f"the host exited (code {stack.host.process.returncode}) during the broadcast, "
                f"after {len(stack.channel.requests):,} messages:\n{stack.host.log()[-1500:]}"
            )
        received = len(stack.channel.requests)
        if received and first is None:
            first = time.monotonic(), procfs.cpu_seconds(pid)
        if received >= count or (job_done is not None and job_done(received)):
            break
        time.sleep(0.05)
    received = len(stack.channel.requests)
    if first is None or time.monotonic() - first[0] < 0.2:
        return received, 0.0
    return received, (procfs.cpu_seconds(pid) - first[1]) / (time.monotonic() - first[0])


def _arrivals(stack: Any) -> tuple[float, float]:
    """Monotonic times of the first and the last message at the fake Connector."""
    times = [r.at for r in list(stack.channel.requests)]
    return min(times), max(times)


def _fanned_out(connection_string: str, job_id: str) -> bool:
    """Read the job's ledger header from Azurite directly (the status API would count every row)."""
    from azure.core.exceptions import ResourceNotFoundError
    from azure.data.tables import TableClient

    from botcore.delivery.ledger import HEADER

    with TableClient.from_connection_string(connection_string, DELIVERIES_TABLE) as table:
        try:
            return bool(table.get_entity(encode_key(job_id), HEADER).get("fannedOut"))
        except ResourceNotFoundError:  # the jobs function has not opened the job yet
            return False


def _broadcast(stack: Any, storage: Any, count: int, timeout: float, *, stop_after: Any = None) -> dict[str, Any]:
    pid, storage_pid = stack.host.process.pid, storage.process.pid
    rss_before = procfs.rss_mib(pid)
    cpu0, storage_cpu0, own_cpu0 = procfs.cpu_seconds(pid), procfs.cpu_seconds(storage_pid), time.process_time()
    machine0 = procfs.machine_busy_seconds()
    start = time.monotonic()
    response = stack.api("POST", "notify", {"text": "x", "target": {"everyone": True}})
    if response.status_code != 202:
        raise RuntimeError(f"notify answered {response.status_code}: {response.text}")
    job_id = response.json()["id"]
    received, steady_busy = _wait_delivered(
        stack, count, timeout, stop_after and (lambda n: stop_after(n, job_id, start))
    )
    cpu = procfs.cpu_seconds(pid) - cpu0
    storage_cpu, own_cpu = procfs.cpu_seconds(storage_pid) - storage_cpu0, time.process_time() - own_cpu0
    machine_busy = (procfs.machine_busy_seconds() - machine0) / (time.monotonic() - start)
    if received == 0:
        raise RuntimeError(f"nothing delivered in {timeout:.0f} s:\n{stack.host.log()[-3000:]}")
    first, last = _arrivals(stack)
    return {
        "job": job_id,
        "received": received,
        "elapsed": last - start,
        "rate": received / (last - start),
        "first_after": first - start,
        "steady_rate": (received - 1) / (last - first) if last > first else 0.0,
        "cpu_per_msg": cpu / received,
        "storage_cpu_per_msg": storage_cpu / received,
        "bench_cpu_per_msg": own_cpu / received,
        "machine_busy": machine_busy,
        "host_steady_busy": steady_busy,
        "rss_before": rss_before,
        "peak_rss": procfs.peak_rss_mib(pid),
        "hits": dict(stack.idp.hits),
    }


def _check_exactly_once(stack: Any, ids: list[str]) -> str:
    time.sleep(0.5)  # duplicates, if any, would arrive right after the last first copy
    counts = Counter(r.conversation_id for r in list(stack.channel.requests))
    missing = sum(1 for cid in ids if counts.get(cid, 0) == 0)
    duplicated = sum(1 for n in counts.values() if n > 1)
    strangers = len(set(counts) - set(ids))
    if missing or duplicated or strangers:
        raise RuntimeError(f"broadcast: {missing} missing, {duplicated} duplicated, {strangers} unexpected")
    return "every conversation received exactly one message"


def _batch_write_rate(connection_string: str, entities: int) -> float:
    """Azurite's batch write rate (entities/s): ledger-shaped rows, 100 per transaction, one partition,
    through the bare client so that the client is not what limits it."""
    import aiohttp

    from .baretable import BareTable

    async def run() -> float:
        async with aiohttp.ClientSession() as session:
            table = BareTable(session, connection_string, "benchfloor" + uuid.uuid4().hex[:8])
            await table.create()
            pk = uuid.uuid4().hex
            chunks = iter([ledger_rows(pk, 100) for _ in range(entities // 100)])

            async def worker() -> None:
                for chunk in chunks:
                    await table.insert_batch(chunk)

            start = time.perf_counter()
            await asyncio.gather(*(worker() for _ in range(FLOOR_BATCH_CONCURRENCY)))
            return (entities // 100 * 100) / (time.perf_counter() - start)

    return asyncio.run(run())


def _send_floor(context: dict[str, Any], quick: bool) -> stats.Summary:
    if "send_floor_32" not in context:  # run alone: measure the send-path floor here
        from .send_path import measure, remember_floor

        log("broadcast: measuring the send-path floor (benchmark 3 did not run)")
        with RemoteChannel.start() as channel:
            floor = measure(channel, 500 if quick else 3000, 1 if quick else 3, (32,), ("floor",))
            remember_floor(context, asyncio.run(floor))
    return context["send_floor_32"]


def run(tmp: Path, quick: bool, context: dict[str, Any]) -> Section:
    from tests.botstack import APP_ID

    # 3 full runs: each is ~40 s end to end, and the full mode must stay under 10 minutes.
    count, repeats = (1000, 1) if quick else (10_000, 3)
    runs: list[dict[str, Any]] = []
    for i in range(repeats):
        with (
            azurite(tmp / f"azurite-{i}") as storage,
            bot_stack(storage.connection_string, tmp / f"stack-{i}", STACK_ENV) as stack,
        ):
            ids, seconds = seed(storage.connection_string, count, stack.service_url, APP_ID)
            log(f"broadcast {i + 1}/{repeats}: seeded {count:,} references in {seconds:.1f} s; notify everyone")
            result = _broadcast(stack, storage, count, timeout=60 + count / 20)
            if result["received"] < count:
                raise RuntimeError(f"only {result['received']} of {count} delivered:\n{stack.host.log()[-3000:]}")
            result["check"] = _check_exactly_once(stack, ids)
            result["batch_floor"] = _batch_write_rate(storage.connection_string, 1000 if quick else 3000)
            result["seed_seconds"] = seconds
            runs.append(result)
            log(
                f"broadcast {i + 1}/{repeats}: {result['rate']:.0f} msg/s, peak RSS {result['peak_rss']:.0f} MiB, "
                f"Azurite batch writes {result['batch_floor']:.0f} entities/s"
            )
    memory = None if quick else _memory_run(tmp, APP_ID, at_least=count)

    send_floor = _send_floor(context, quick)
    context["broadcast_economy"] = {"sends": count, "hits": [r["hits"] for r in runs]}
    return _section(count, runs, memory, send_floor, context["send_floor_cpu_32"])


def _memory_run(tmp: Path, app_id: str, at_least: int) -> dict[str, Any]:
    """100k references, for memory only: the fan-out pages through all of them and sends start.

    Stops once the fan-out is complete and `at_least` messages were delivered (or MEMORY_CAP seconds
    after the POST): delivering all 100k at the limited rate takes far longer than the budget.
    """
    with (
        azurite(tmp / "azurite-100k") as storage,
        bot_stack(storage.connection_string, tmp / "stack-100k", MEMORY_ENV) as stack,
    ):
        log(f"broadcast: seeding {MEMORY_RUN:,} references (concurrent single inserts)")
        _, seconds = seed(storage.connection_string, MEMORY_RUN, stack.service_url, app_id)
        log(f"broadcast: seeded {MEMORY_RUN:,} in {seconds:.0f} s; notify everyone")
        progress: dict[str, float] = {}

        def enough(received: int, job_id: str, start: float) -> bool:
            now = time.monotonic()
            if "fanned_out" not in progress and now >= progress.get("next_check", 0.0):
                progress["next_check"] = now + 1.0
                if _fanned_out(storage.connection_string, job_id):
                    progress["fanned_out"] = now - start
            return "fanned_out" in progress and received >= at_least

        result = _broadcast(stack, storage, MEMORY_RUN, timeout=MEMORY_CAP, stop_after=enough)
        result["seed_seconds"] = seconds
        result["fanned_out_after"] = progress.get("fanned_out")
        log(
            f"broadcast 100k: {result['received']:,} delivered at {result['rate']:.0f} msg/s, "
            f"peak RSS {result['peak_rss']:.0f} MiB"
        )
        return result


def _host_cost(runs: list[dict[str, Any]], bare_send_cpu: float) -> str:
    """The host's CPU per message next to what a bare client spends on the POST alone."""
    host = stats.median([r["cpu_per_msg"] for r in runs])
    return (
        f"The host uses {host * 1000:.3f} ms of CPU per message (fan-out, queues, ledger and the send); a bare "
        f"aiohttp client alone spends {bare_send_cpu * 1000:.3f} ms per POST (benchmark 3)."
    )


def _section(
    count: int,
    runs: list[dict[str, Any]],
    memory: dict[str, Any] | None,
    send_floor: stats.Summary,
    bare_send_cpu: float,
) -> Section:
    def summary(key: str, scale: float = 1.0) -> stats.Summary:
        return stats.Summary.of(r[key] * scale for r in runs)

    rate, steady, batch = summary("rate"), summary("steady_rate"), summary("batch_floor")
    bound_name, bound = min(
        (("send-path floor (bare aiohttp, c=32)", send_floor.median), ("Azurite batch writes", batch.median)),
        key=lambda kv: kv[1],
    )
    section = Section(
        "4. Broadcast end to end",
        f"{count:,} references seeded into a fresh Azurite per run, then `POST /api/notify` "
        '`{"text": "x", "target": {"everyone": true}}` through the jobs queue, the fan-out, the sends queue, '
        "the local host, the delivery ledger and the fake Connector (a thread of the benchmark process). "
        f"Host settings: {', '.join(f'{k}={v}' for k, v in STACK_ENV.items())}. {len(runs)} run(s). "
        "A throughput figure with no target: nothing limits the rate but the CPU that the host, Azurite and the "
        "fakes share on this machine, so it says what the machine allows, not what users feel (delivery within "
        "a channel's limits is benchmark 7).",
    )
    t = section.table(["measure", "median", "spread", "ratio"])
    t.add(
        "**messages/s** (POST → last message at the Connector)",
        stats.number(rate.median),
        stats.spread(rate),
        f"{stats.times(stats.ratio(rate.median, bound))} of the lower floor ({bound_name})",
    )
    t.add(
        "… messages/s from the first to the last message",
        stats.number(steady.median),
        stats.spread(steady),
        stats.times(stats.ratio(steady.median, bound)),
    )
    first = summary("first_after", 1000)
    t.add("… first message at the Connector, ms after the POST", stats.number(first.median), stats.spread(first), "")
    t.add(
        "floor: send path, bare aiohttp at concurrency 32 (msg/s, benchmark 3)",
        stats.number(send_floor.median),
        stats.spread(send_floor),
        stats.times(stats.ratio(rate.median, send_floor.median)),
    )
    t.add(
        f"floor: Azurite batch writes, new partition (entities/s; 100 per transaction, "
        f"{FLOOR_BATCH_CONCURRENCY} in flight)",
        stats.number(batch.median),
        stats.spread(batch),
        stats.times(stats.ratio(rate.median, batch.median)),
    )
    for key, label in (
        ("cpu_per_msg", "host process"),
        ("storage_cpu_per_msg", "Azurite process"),
        ("bench_cpu_per_msg", "benchmark process (fake Connector, IdP)"),
    ):
        c = summary(key, 1000)
        t.add(f"CPU per message, {label} (ms)", stats.number(c.median), stats.spread(c), "")
    steady_cores = summary("host_steady_busy")
    t.add(
        "host CPU from the first message to the last (cores; one Python process)",
        *(
            (f"{steady_cores.median:.2f}", f"{steady_cores.low:.2f}–{steady_cores.high:.2f}")
            if steady_cores.low
            else ("too short to measure", "")
        ),
        "",
    )
    before, peak, seed_s = summary("rss_before"), summary("peak_rss"), summary("seed_seconds")
    t.add("host RSS before the POST (MiB)", stats.number(before.median), stats.spread(before), "")
    t.add(f"host peak RSS, VmHWM (MiB), {count:,} references", stats.number(peak.median), stats.spread(peak), "")
    t.add(f"seeding {count:,} references (s)", stats.number(seed_s.median), stats.spread(seed_s), "")
    azurite_busy = stats.median([r["storage_cpu_per_msg"] * r["rate"] for r in runs])
    host_busy = stats.median([r["cpu_per_msg"] * r["rate"] for r in runs])
    per_message = stats.median([r["cpu_per_msg"] + r["storage_cpu_per_msg"] + r["bench_cpu_per_msg"] for r in runs])
    ceiling = (os.cpu_count() or 1) / per_message
    section.notes.append(
        f"The lower floor is the {bound_name}. The ledger writes one row per send batch of up to {BATCH_KEYS} "
        "conversations (its claim and every conversation's outcome, rewritten as sends complete), "
        "so a message costs Azurite a small share of "
        "a few writes, not a write of its own. What a message costs the machine instead: "
        f"{per_message * 1000:.3f} ms of CPU across the host, Azurite and the fake Connector; with "
        f"{os.cpu_count()} cores and nothing else, that allows at most {stats.number(ceiling)} msg/s "
        f"({stats.times(stats.ratio(ceiling, bound))} of the floor), before any latency."
    )
    section.notes.append(_host_cost(runs, bare_send_cpu))
    machine = stats.median([r["machine_busy"] for r in runs])
    steady_host = stats.median([r["host_steady_busy"] for r in runs])
    cores = os.cpu_count() or 1
    busiest = max((azurite_busy, "Azurite"), (host_busy, "the host"))
    first_ms = summary("first_after", 1000).median
    if steady_host >= 0.8:
        verdict = (
            f"from the first message to the last the host used {steady_host:.2f} of a core: it runs the "
            "sends in one Python process (one core at a time), so its CPU per message is what bounds "
            f"the rate once sending starts; before that, {first_ms:.0f} ms go to the queue polling and "
            "the fan-out's first page"
        )
    elif busiest[0] >= 0.8:
        verdict = f"{busiest[1]} is close to a full core, so it is what bounds the rate"
    elif machine >= 0.85 * cores:
        verdict = (
            f"neither alone is saturated, but the machine is ({machine:.2f} of {cores} cores busy, all "
            "processes): the rate is bound by the machine's CPU, shared by Azurite, the host and the fakes"
        )
    else:
        verdict = (
            f"neither is saturated and the machine has spare CPU ({machine:.2f} of {cores} cores busy): the "
            "rate is bound by latency: the queue polling before the first message (see the row above), then "
            f"{STACK_ENV['BotSendConcurrency']} sends in flight (BotSendConcurrency) against a Connector that "
            "shares the machine"
        )
    section.notes.append(
        f"During the broadcast Azurite used {azurite_busy:.0%} of a core and the host {host_busy:.0%} of a core "
        f"(CPU per message × messages/s, averaged from the POST): {verdict}."
    )
    section.notes.append(f"Delivery check: {runs[0]['check']} (every run).")
    if memory is not None:
        m = section.table(
            [
                "references",
                "delivered when stopped",
                "fan-out complete after (s)",
                "seeding (s)",
                "messages/s",
                "host CPU/msg (ms)",
                "Azurite CPU/msg (ms)",
                "host peak RSS (MiB)",
                "vs 10k",
            ],
            title="Memory with 100,000 references",
        )
        m.add(
            f"{count:,} (median of the runs above)",
            f"{count:,} (all)",
            "",
            stats.number(seed_s.median),
            stats.number(rate.median),
            stats.number(summary("cpu_per_msg", 1000).median),
            stats.number(summary("storage_cpu_per_msg", 1000).median),
            stats.number(peak.median),
            "",
        )
        growth = memory["peak_rss"] - peak.median
        fanned = memory["fanned_out_after"]
        m.add(
            f"{MEMORY_RUN:,}",
            f"{memory['received']:,}",
            "not within the cap" if fanned is None else stats.number(fanned),
            stats.number(memory["seed_seconds"]),
            f"{stats.number(memory['rate'])} (sends limited to {MEMORY_ENV['BotTenantRatePerSecond']}/s)",
            stats.number(memory["cpu_per_msg"] * 1000),
            stats.number(memory["storage_cpu_per_msg"] * 1000),
            stats.number(memory["peak_rss"]),
            f"{growth:+.1f} MiB ({memory['peak_rss'] / peak.median:.2f}×)",
        )
        flat = memory["peak_rss"] <= peak.median * 1.10 + 5 and fanned is not None
        measured = f"{stats.number(peak.median)} → {stats.number(memory['peak_rss'])} MiB"
        if fanned is None:
            measured += " (not verified: the fan-out did not finish within the cap)"
        section.target("host peak RSS flat from 10k to 100k references", measured, flat)
        section.notes.append(
            f"100k run: seeded with 48 concurrent single inserts over a bare aiohttp client (one partition per "
            f"conversation, so batch transactions cannot be used) in {memory['seed_seconds']:.0f} s "
            f"({MEMORY_RUN / memory['seed_seconds']:,.0f} rows/s; Azurite-bound). Memory only, with sends limited to "
            f"{MEMORY_ENV['BotTenantRatePerSecond']}/s (the 10k runs cover full-speed sending) "
            "so that the fan-out, the "
            "part whose memory could grow with the number of references, finishes in the budget. The run stops once "
            f"the fan-out has paged through all {MEMORY_RUN:,} references and at least {count:,} messages (as many as "
            f"the whole 10k run) have been delivered, or {MEMORY_CAP:.0f} s after the POST (delivering all of them "
            f'at {MEMORY_ENV["BotTenantRatePerSecond"]}/s would take over a quarter of an hour). "Flat" means within '
            "10% + 5 MiB of the 10k peak."
        )
    return section
