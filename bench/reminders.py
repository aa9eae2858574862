"""Benchmark 8: many reminders due in the same second, each to arrive within a second of it.

One run (the minute timer makes a full run last about two and a half minutes): a fresh Azurite, a BotStack in Teams mode
(the fake Connector, threads of this process, with Teams' limits and a lognormal service time of median 80 ms;
the bot keeps its default pace, BotTenantRatePerSecond 50) and one local host. N conversations are seeded, each
in a tenant of its own, so that no tenant's pace (47.5 requests/s) or calendar row is shared by two reminders:
what is measured is the reminder path, not Teams pacing.

Full run: N = 1,000 reminders are created through `POST /api/reminders` (16 at a time), all due at the same
whole second T, chosen more than 75 s (LOOKAHEAD) after the last creation, so that each is stored in the
`botreminders` table, and 30 to 74 s after a minute boundary M, so that the host's own minute timer (second 0
of each minute, devhost/cron.py) is the one that enqueues them: `fire_due` at M puts each on the jobs queue with
a visibility delay (whole seconds, rounded down), and the job waits the rest of its second (`wait_until_due`).

Quick run: N = 100, stored in-process through `ReminderStore.add` (the call `POST /api/reminders` makes) and
enqueued by `ReminderStore.fire_due` called in-process, T about 10 s later, instead of waiting up to two minutes
for the host's timer; delivery is the host's, as in the full run.

Measured for each reminder: its arrival at the fake Connector (the wall-clock time its request reached the fake,
before the fake's service time) minus T; the target is every arrival in [T, T + 1 s]. Also: how long the timer's
`fire_due` took (the host log), the host's CPU spent per reminder (the timer's share and the delivery's), and
where the time went (the host's job pickups and durations from its log, jobs in flight, its CPU share second
by second), one more reminder due 5 s before T and alone (the path's latency without load), and afterwards a
few reminder jobs run one at a time in this process with their storage calls counted and timed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import re
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from . import procfs, stats
from .infra import azurite, bot_stack, log, second_host, seed
from .report import Section

WINDOW = 1.0  # the target: every reminder arrives in [T, T + WINDOW]
CREATE_CONCURRENCY = 16  # POST /api/reminders in flight at once
# Sends in flight on the host: 1,000 in a second at the fake's 80 ms service time keep about 80 in flight.
SEND_CONCURRENCY = 128
SAMPLE = 0.25  # seconds between CPU samples while the reminders fall due
SETTLE = 1.0  # seconds to keep watching after the last arrival: a duplicate would arrive by then
HOSTS = 1  # local hosts on the one storage account (2: what a second instance changes)
LONE_BEFORE = 5.0  # one more reminder, due this long before T and alone: the path's latency without load


@dataclass(frozen=True)
class Sizes:
    reminders: int
    create_budget: float  # seconds the creations may take (T is chosen before they start)
    deliver_timeout: float  # seconds after T to wait for the last arrival
    profiled: int  # reminder jobs run one at a time in-process afterwards, their storage calls counted


FULL = Sizes(reminders=1000, create_budget=25.0, deliver_timeout=60.0, profiled=10)
QUICK = Sizes(reminders=100, create_budget=0.0, deliver_timeout=30.0, profiled=3)

LINE = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),(\d{3}) (\w+) ([\w.]+): (.*)$")
EXECUTING = re.compile(r"Executing 'Functions\.(\w+)' \(Reason='(.*)', Id=([\w-]+)\)")
EXECUTED = re.compile(r"Executed 'Functions\.(\w+)' \((\w+), Id=([\w-]+), Duration=(\d+)ms\)")
QUEUED = re.compile(r"reminder \S+ queued \(due ")
FIRED = re.compile(r"reminders fired: (\d+)")
HANDED_ON = re.compile(r"job \S+: (\d+) conversations handed on")


def tenant() -> str:
    return f"tenant-{uuid.uuid4().hex[:10]}"


def iso(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).isoformat(timespec="milliseconds")


def hms(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).strftime("%H:%M:%S")


# ---- watching ---------------------------------------------------------------------------------------------


class Arrivals:
    """Each send's wall-clock arrival at the fake Connector: the fake's Received.arrived, taken as its handler
    starts (before Teams mode's service time; Received.at is taken after it), on this process's wall clock."""

    def __init__(self, channel: Any) -> None:
        self.channel = channel
        self.offset = time.time() - time.monotonic()

    def sends(self, text: str, start: int = 0) -> list[tuple[float, str | None]]:
        return [
            (r.arrived + self.offset, r.conversation_id)
            for r in self.channel.requests[start:]
            if r.operation == "send" and isinstance(r.body, dict) and r.body.get("text") == text
        ]


def host_lines(path: Path, offset: int) -> list[tuple[float, str, str]]:
    """The host log's lines from `offset`: (epoch seconds, level, message)."""
    time.sleep(0.1)  # the host writes its log in bursts, at most 20 ms late
    with open(path, "rb") as f:
        f.seek(offset)
        text = f.read().decode(errors="replace")
    out = []
    for line in text.splitlines():
        m = LINE.match(line)
        if m:
            at = time.mktime(time.strptime(m[1], "%Y-%m-%d %H:%M:%S")) + int(m[2]) / 1000
            out.append((at, m[3], m[5]))
    return out


class CpuTrace:
    """CPU seconds of the hosts, Azurite and this process (the fake Connector's threads), sampled over time."""

    def __init__(self, host_pids: list[int], storage_pid: int) -> None:
        self.host_pids, self.storage_pid = host_pids, storage_pid
        self.samples: list[tuple[float, float, float, float]] = []  # (time, hosts, Azurite, this process)

    def sample(self) -> tuple[float, float, float, float]:
        s = (
            time.time(),
            sum(procfs.cpu_seconds(p) for p in self.host_pids),
            procfs.cpu_seconds(self.storage_pid),
            procfs.cpu_seconds(os.getpid()),
        )
        self.samples.append(s)
        return s

    def between(self, a: float, b: float) -> tuple[float, float, float, float]:
        """(wall seconds, hosts' CPU, Azurite's CPU, this process's CPU) between the samples nearest a and b."""
        first = min(self.samples, key=lambda s: abs(s[0] - a))
        last = min(self.samples, key=lambda s: abs(s[0] - b))
        return (last[0] - first[0], last[1] - first[1], last[2] - first[2], last[3] - first[3])


def sleep_until(at: float, trace: CpuTrace | None = None) -> None:
    while (left := at - time.time()) > 0:
        time.sleep(min(left, SAMPLE))
        if trace is not None:
            trace.sample()


# ---- creating the reminders -------------------------------------------------------------------------------


def create_through_api(stack: Any, reminders: list[tuple[str, float, str]]) -> None:
    """POST /api/reminders for each (key, due, text), CREATE_CONCURRENCY at a time; each must answer 201 with
    its due time."""
    import httpx

    async def run() -> None:
        gate = asyncio.Semaphore(CREATE_CONCURRENCY)
        async with httpx.AsyncClient(
            base_url=stack.host.base_url, timeout=30, headers={"x-functions-key": "stack-key"}
        ) as client:

            async def one(key: str, due: float, text: str) -> None:
                async with gate:
                    r = await client.post(
                        "/api/reminders", json={"text": text, "target": {"conversation": key}, "due": iso(due)}
                    )
                if r.status_code != 201 or datetime.fromisoformat(r.json()["due"]).timestamp() != due:
                    raise RuntimeError(f"POST /api/reminders answered {r.status_code}: {r.text[:300]}")

            await asyncio.gather(*(one(*x) for x in reminders))

    asyncio.run(run())


def store_and_fire_in_process(env: dict[str, str], reminders: list[tuple[str, float, str]]) -> dict[str, float]:
    """Quick mode: store each reminder with ReminderStore.add (told it is 80 s before the due time, so that it
    stores rather than enqueues), then enqueue them with ReminderStore.fire_due at the real time, as the timer
    would. Returns the fire_due call's wall time, this process's CPU for it, and how many it enqueued."""
    from botcore.app import bot_for, close
    from botcore.delivery.reminders import LOOKAHEAD
    from botcore.jobs import now_iso, parse_job
    from tests.botstack import environment

    async def run() -> dict[str, float]:
        delivery = bot_for().delivery
        gate = asyncio.Semaphore(CREATE_CONCURRENCY)

        async def one(key: str, due: float, text: str) -> None:
            job = parse_job(
                json.dumps(
                    {
                        "kind": "reminder",
                        "id": uuid.uuid4().hex,
                        "created": now_iso(),
                        "target": {"conversation": key},
                        "text": text,
                        "due": iso(due),
                    }
                )
            )
            told = datetime.fromtimestamp(due, UTC) - LOOKAHEAD - timedelta(seconds=5)
            async with gate:
                await delivery.reminders.add(delivery.ledger, delivery.jobs, job, now=told)

        try:
            await asyncio.gather(*(one(*x) for x in reminders))
            wall, cpu = time.perf_counter(), time.process_time()
            fired = await delivery.reminders.fire_due(delivery)
            return {
                "seconds": time.perf_counter() - wall,
                "cpu": time.process_time() - cpu,
                "fired": fired,
                "at": time.time(),
            }
        finally:
            await close()

    with environment(env):
        return asyncio.run(run())


def profile_jobs(env: dict[str, str], keys: list[str]) -> dict[str, Any]:
    """One reminder's job at a time, in this process: the notify job ReminderStore.add would store (its header
    opened as add opens it), already due, run by the queue function's handler (botcore.worker.handle_job_message),
    with every storage call counted and timed. The first is a warm-up (token, connections); returns the medians
    of the others: wall time, this thread's CPU (the fake Connector runs in other threads), and the calls."""
    from dataclasses import replace

    from botcore.app import bot_for, close
    from botcore.jobs import now_iso, parse_job
    from botcore.storage import Queue, Table
    from botcore.worker import handle_job_message
    from tests.botstack import environment

    calls: list[tuple[str, float]] = []
    patched: list[tuple[type, str, Any]] = []

    def count(cls: type, name: str) -> None:
        original = getattr(cls, name)

        async def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            what = f"{self.name} {args[1] if name == '_update' else name}"
            try:
                return await original(self, *args, **kwargs)
            except Exception as exc:
                what += f" ({type(exc).__name__})"
                raise
            finally:
                calls.append((what, time.perf_counter() - started))

        patched.append((cls, name, original))
        setattr(cls, name, wrapper)

    async def run() -> list[dict[str, Any]]:
        bot = bot_for()
        runs = []
        try:
            for key in keys:
                job = parse_job(
                    json.dumps(
                        {
                            "kind": "reminder",
                            "id": uuid.uuid4().hex,
                            "created": now_iso(),
                            "target": {"conversation": key},
                            "text": "bench profile",
                            "due": iso(time.time()),
                        }
                    )
                )
                notify = (await bot.delivery.ledger.open_job(replace(job, kind="notify"), kind="reminder")).job
                del calls[:]
                wall, cpu = time.perf_counter(), time.thread_time()
                outcome = await handle_job_message(notify.to_json().encode(), "profile", 1)
                runs.append(
                    {
                        "wall": time.perf_counter() - wall,
                        "cpu": time.thread_time() - cpu,
                        "calls": list(calls),
                        "outcome": outcome,
                    }
                )
        finally:
            await close()
        return runs

    for cls, names in (
        (Table, ("get", "insert", "_update", "upsert", "delete", "page", "transact")),
        (Queue, ("send",)),
    ):
        for name in names:
            count(cls, name)
    try:
        with environment(env):
            runs = asyncio.run(run())[1:]
    finally:
        for cls, name, original in patched:
            setattr(cls, name, original)
    if not all(r["outcome"].startswith("sent 1") for r in runs):
        raise RuntimeError(f"profiled jobs: {[r['outcome'] for r in runs]}")
    kinds = Counter(what for r in runs for what, _ in r["calls"])
    return {
        "runs": len(runs),
        "wall": stats.median([r["wall"] for r in runs]),
        "cpu": stats.median([r["cpu"] for r in runs]),
        "calls": stats.median([len(r["calls"]) for r in runs]),
        "storage_wall": stats.median([sum(d for _, d in r["calls"]) for r in runs]),
        "kinds": {k: v / len(runs) for k, v in kinds.most_common()},
    }


def stored_reminders(connection_string: str) -> int:
    from azure.data.tables import TableClient

    from botcore.settings import REMINDERS_TABLE

    with TableClient.from_connection_string(connection_string, REMINDERS_TABLE) as table:
        return sum(1 for _ in table.list_entities(select=["RowKey"]))


def choose_due(after: float) -> tuple[float, float]:
    """(T, M): the first whole second T after `after` that lies 30 to 74 s after a minute boundary M. The timer
    at M enqueues what falls due by M + 75 s; the one before it (M - 60 s) reaches only M + 15 s."""
    due = math.ceil(after)
    second = due % 60
    if 15 <= second < 30:
        due += 30 - second
    minute = due - ((due - 16) % 60 + 16)
    assert 30 <= due - minute <= 74, (due, minute)
    return float(due), float(minute)


# ---- one run ----------------------------------------------------------------------------------------------


def _run(tmp: Path, sizes: Sizes, quick: bool) -> dict[str, Any]:
    from botcore.delivery.reminders import LOOKAHEAD
    from devhost.channel import TeamsLimits
    from tests.botstack import APP_ID

    n = sizes.reminders
    with contextlib.ExitStack() as started:
        storage = started.enter_context(azurite(tmp / "azurite"))
        stack = started.enter_context(
            bot_stack(
                storage.connection_string,
                tmp / "stack",
                teams=TeamsLimits(),
                extra_env={"BotSendConcurrency": str(SEND_CONCURRENCY)},
            )
        )
        hosts = [
            stack.host,
            *(
                started.enter_context(second_host(stack.env, tmp / "stack" / f"host-{i + 2}.log"))
                for i in range(HOSTS - 1)
            ),
        ]
        tenants = [tenant() for _ in range(n + 1)]
        ids, seed_seconds = seed(storage.connection_string, n + 1, stack.service_url, APP_ID, tenants=tenants)
        lone_id, ids = ids[0], ids[1:]
        keys = [stack.key(cid) for cid in ids]
        arrivals = Arrivals(stack.channel)
        trace = CpuTrace([h.process.pid for h in hosts], storage.process.pid)
        text = f"bench reminder {uuid.uuid4().hex[:8]}"
        lone_text = text + " alone"

        def reminders(due: float) -> list[tuple[str, float, str]]:
            return [(stack.key(lone_id), due - LONE_BEFORE, lone_text), *((k, due, text) for k in keys)]

        offsets = [h.log_path.stat().st_size for h in hosts]
        r: dict[str, Any] = {"n": n, "hosts": len(hosts), "seed_seconds": seed_seconds}

        if quick:
            # Clear of the host's minute timer (storing and firing 101 take a few seconds): it must not be the
            # one that enqueues them.
            to_boundary = 60 - time.time() % 60
            if to_boundary < 8:
                sleep_until(time.time() + to_boundary + 1)
            due = float(math.ceil(time.time()) + 10)
            cpu0 = trace.sample()
            fire = store_and_fire_in_process(stack.env, reminders(due))
            cpu1 = trace.sample()
            r.update(
                due=due,
                minute=None,
                fire_seconds=fire["seconds"],
                fire_cpu=fire["cpu"],
                fired=fire["fired"],
                create_seconds=None,
                create_host_cpu=None,
                create_bench_cpu=cpu1[3] - cpu0[3],
            )
            if fire["fired"] != n + 1:  # the host's timer took some after all: they are enqueued the same way
                if stored_reminders(storage.connection_string):
                    raise RuntimeError(f"fire_due enqueued {fire['fired']} of {n + 1} reminders, and some are left")
                log(f"reminders: the host's minute timer enqueued {n + 1 - fire['fired']} of the {n + 1}")
        else:
            due, minute = choose_due(time.time() + sizes.create_budget + LOOKAHEAD.total_seconds() + 2)
            log(f"reminders: {n} due at {hms(due)} UTC, to be enqueued by the timer at {hms(minute)}")
            cpu0 = trace.sample()
            t0 = time.time()
            create_through_api(stack, reminders(due))
            created = time.time()
            cpu1 = trace.sample()
            if due - created <= LOOKAHEAD.total_seconds():
                raise RuntimeError(
                    f"creating {n} reminders took {created - t0:.1f} s, past the budget of "
                    f"{sizes.create_budget:.0f} s: some were queued, not stored"
                )
            stored = stored_reminders(storage.connection_string)
            if stored != n + 1:
                raise RuntimeError(f"{stored} reminders stored, expected {n + 1}")
            log(f"reminders: {n} created in {created - t0:.1f} s; waiting {due - created:.0f} s for {hms(due)}")
            r.update(
                due=due,
                minute=minute,
                create_seconds=created - t0,
                create_host_cpu=cpu1[1] - cpu0[1],
                create_bench_cpu=cpu1[3] - cpu0[3],
            )
            sleep_until(minute - 2)
            offsets = [h.log_path.stat().st_size for h in hosts]
            trace.sample()
            sleep_until(min(due - 3, minute + 25), trace)  # the timer's run (checked below)

        # The reminders fall due.
        start = 0  # every send with this text counts (arrivals are recorded from before the creations)
        deadline = due + sizes.deliver_timeout
        trace.sample()
        while time.time() < deadline:
            for h in hosts:
                if h.process.poll() is not None:
                    raise RuntimeError(f"a host exited (code {h.process.returncode}):\n{h.log()[-2000:]}")
            if len(arrivals.sends(text, start)) >= n:
                break
            time.sleep(SAMPLE / 2)
            if not trace.samples or time.time() - trace.samples[-1][0] >= SAMPLE:
                trace.sample()
        sleep_until(time.time() + SETTLE, trace)
        sends = arrivals.sends(text, start)
        r["lines"] = [host_lines(h.log_path, o) for h, o in zip(hosts, offsets, strict=True)]
        counts = Counter(cid for _, cid in sends)
        missing = sum(1 for cid in ids if cid not in counts)
        duplicated = sum(c - 1 for c in counts.values() if c > 1)
        strangers = len(set(counts) - set(ids))
        if missing or duplicated or strangers:
            raise RuntimeError(
                f"reminders: {missing} missing, {duplicated} duplicate deliveries, {strangers} "
                f"unexpected recipients (of {n}); host log tail:\n{hosts[0].log()[-2000:]}"
            )
        r["late"] = sorted(at - due for at, _ in sends)
        lone = arrivals.sends(lone_text)
        if len(lone) != 1:
            raise RuntimeError(f"the lone reminder arrived {len(lone)} times")
        r["lone_late"] = lone[0][0] - (due - LONE_BEFORE)
        r["trace"] = trace
        r["refused"] = sum(1 for f in stack.channel.faulted if f.status == 429)
        r["max_in_flight"] = stack.channel.max_in_flight
        r["profile"] = profile_jobs(stack.env, keys[: sizes.profiled + 1])
        return _analyse(r)


def _analyse(r: dict[str, Any]) -> dict[str, Any]:
    """Where the time went, from the hosts' logs and the CPU trace."""
    due, lines, trace = r["due"], r["lines"], r["trace"]
    late = r["late"]
    last = due + late[-1]
    r["early"] = sum(1 for x in late if x < 0)
    r["over"] = sum(1 for x in late if x > WINDOW)
    r["within"] = len(late) - r["early"] - r["over"]

    timers: list[tuple[float, float, float]] = []  # (started, ended, seconds) of each reminder_timer run
    queued: list[float] = []
    fired = 0
    jobs: dict[str, list[float]] = {}  # invocation id → [picked up, finished]
    handed_on = 0
    for host in lines:
        running: dict[str, tuple[str, float]] = {}
        for at, _, message in host:
            if m := EXECUTING.search(message):
                running[m[3]] = (m[1], at)
            elif m := EXECUTED.search(message):
                name, started = running.pop(m[3], (m[1], math.nan))
                if name == "reminder_timer":
                    timers.append((started, at, int(m[4]) / 1000))
                elif name == "jobs":
                    jobs[m[3]] = [started, at]
            elif QUEUED.search(message):
                queued.append(at)
            elif m := FIRED.search(message):
                fired += int(m[1])  # with two hosts, both timers claim rows
            elif m := HANDED_ON.search(message):
                handed_on += int(m[1])
    if r["minute"] is not None:
        runs = [x for x in timers if abs(x[0] - r["minute"]) < 5]
        if not runs or fired != r["n"] + 1:
            raise RuntimeError(f"the host's timer did not enqueue the reminders (timers {timers}, fired {fired})")
        timer = (min(x[0] for x in runs), max(x[1] for x in runs), max(x[2] for x in runs))
        r["fire_seconds"] = timer[2]
        r["fired"] = fired
        r["timer_at"] = timer[0] - r["minute"]
        wall, host_cpu, _, _ = trace.between(r["minute"] - 1, timer[1] + 0.5)
        r["fire_host_cpu"] = host_cpu
    r["queued"] = (min(queued) - r["minute"], max(queued) - r["minute"]) if queued and r["minute"] else None

    lone = [j for j in jobs.values() if j[0] < due - 2]  # the others are hidden until T - 1 s at the earliest
    if len(lone) == 1:
        r["lone_work"] = lone[0][1] - max(lone[0][0], due - LONE_BEFORE)
        r["lone_picked"] = lone[0][0] - (due - LONE_BEFORE)
    jobs = {k: j for k, j in jobs.items() if j[0] >= due - 2}
    picked = sorted(j[0] - due for j in jobs.values())
    r["jobs"] = len(jobs)
    r["picked"] = picked
    r["work"] = sorted(j[1] - max(j[0], due) for j in jobs.values())
    events = sorted([(j[0], 1) for j in jobs.values()] + [(j[1], -1) for j in jobs.values()])
    running = peak = 0
    for _, step in events:
        running += step
        peak = max(peak, running)
    r["peak_jobs"] = peak
    # Jobs in flight on average while the queue still held due ones (T to the last pickup): throughput is this
    # over a job's duration (Little's law).
    end = max(picked, default=0.0) + due
    busy = sum(max(0.0, min(j[1], end) - max(j[0], due)) for j in jobs.values())
    r["mean_jobs"] = busy / (end - due) if end > due else math.nan
    r["mean_job"] = sum(j[1] - max(j[0], due) for j in jobs.values()) / len(jobs) if jobs else math.nan
    r["handed_on"] = handed_on

    # Delivery: from 3 s before T (every job is still hidden or waiting) to the last arrival.
    wall, host_cpu, storage_cpu, bench_cpu = trace.between(due - 3, last + 0.2)
    r["deliver_wall"], r["deliver_host_cpu"] = wall, host_cpu
    r["deliver_storage_cpu"], r["deliver_bench_cpu"] = storage_cpu, bench_cpu
    wall, host_cpu, _, _ = trace.between(due, last)
    r["deliver_share"] = host_cpu / wall if wall > 0 else math.nan
    # The hosts' CPU share second by second from T.
    shares = []
    second = due
    while second < last:
        w, c, _, _ = trace.between(second, second + 1)
        shares.append(c / w if w > 0 else math.nan)
        second += 1
    r["shares"] = shares
    del r["lines"], r["trace"]
    return r


# ---- the report -------------------------------------------------------------------------------------------


def run(tmp: Path, quick: bool, context: dict[str, Any]) -> Section:
    sizes = QUICK if quick else FULL
    r = _run(tmp, sizes, quick)
    late = r["late"]
    log(
        f"reminders: {r['n']} arrived {late[0]:+.2f} to {late[-1]:+.2f} s after T (p50 {stats.median(late):+.2f}); "
        f"{r['early']} early, {r['over']} later than T+{WINDOW:g} s"
    )
    return _section(sizes, r, quick)


def _ms(seconds: float | None) -> str:
    return "n/a" if seconds is None else stats.number(seconds * 1000)


def _section(sizes: Sizes, r: dict[str, Any], quick: bool) -> Section:
    n = r["n"]
    late = r["late"]
    how = (
        (
            "stored in-process with `ReminderStore.add` and enqueued by `ReminderStore.fire_due` called in-process "
            "(not by the host's minute timer, which would make the smoke run wait up to two minutes)"
        )
        if quick
        else (
            "created through `POST /api/reminders` (16 at a time) more than 75 s ahead, "
            "so stored in `botreminders`, and "
            "enqueued by the host's own minute timer"
        )
    )
    section = Section(
        "8. Reminders",
        f"{n:,} reminders due at the same whole second T, each to one stored conversation of its own tenant ({n:,} "
        "tenants, so that no tenant's pace is shared: what is measured is the reminder path, not Teams pacing), "
        f"{how}; {r['hosts']} local host{'s' if r['hosts'] > 1 else ''} against the fake Connector in Teams mode "
        "(devhost.channel.TeamsLimits: 50 requests/s per tenant, lognormal service time with a median of 80 ms; a "
        "thread of the benchmark process) with the bot's default pace. Arrival: the wall-clock time a reminder's "
        "request reached the fake (before its service time), minus T. One run"
        + ("" if quick else " (the timer makes a run last about two and a half minutes)")
        + ".",
    )
    t = section.table(["measure", "value"])
    if r["minute"] is not None:
        t.add(
            "T, and the timer run that enqueued the reminders",
            f"{hms(r['due'])} UTC; the timer at {hms(r['minute'])} (T − {r['due'] - r['minute']:.0f} s), "
            f"which started {r['timer_at']:.2f} s after its minute",
        )
        t.add(
            "creating them: POSTs, seconds (per second)",
            f"{n:,} in {r['create_seconds']:.1f} s ({n / r['create_seconds']:.0f}/s)",
        )
        t.add("host CPU per creation (ms)", _ms(r["create_host_cpu"] / n))
    t.add(
        "**arrival − T: min / p50 / p99 / max (s)**",
        " / ".join(f"{x:+.2f}" for x in (late[0], stats.median(late), stats.percentile(late, 99), late[-1])),
    )
    t.add("**early (before T) / within [T, T+1 s] / later than T+1 s**", f"{r['early']} / {r['within']} / {r['over']}")
    t.add(
        "arrival − T at the 10th, 25th, 75th, 90th percentile (s)",
        " / ".join(f"{stats.percentile(late, q):+.2f}" for q in (10, 25, 75, 90)),
    )
    if "lone_work" in r:
        t.add(
            f"one reminder alone, due {LONE_BEFORE:.0f} s before T (same timer run): arrival − its due time; its job "
            "picked up after its due time; the job's work after it (s)",
            f"{r['lone_late']:+.2f}; {r['lone_picked']:+.2f}; {r['lone_work']:.2f}",
        )
    t.add(
        "arrivals per second after T (the first to the last)",
        stats.number((n - 1) / (late[-1] - late[0])) if late[-1] > late[0] else "n/a",
    )
    fire_source = "the host log's Duration of reminder_timer" if r["minute"] is not None else "in-process call"
    t.add(
        f"**fire_due for {n:,} ({fire_source}; s)**",
        f"{r['fire_seconds']:.2f} ({n / r['fire_seconds']:.0f} reminders/s)" if r["fire_seconds"] else "n/a",
    )
    if r.get("queued"):
        q0, q1 = r["queued"]
        t.add(
            "the timer's enqueueing: first / last reminder enqueued (s after the minute; per second)",
            f"{q0:.2f} / {q1:.2f} ({stats.number(r['fired'] / (q1 - q0)) if q1 > q0 else 'n/a'}/s; the last "
            f"{r['due'] - r['minute'] - q1:.1f} s before T)",
        )
    if r["minute"] is not None:
        t.add("**host CPU per reminder, the timer's run (ms)**", _ms(r["fire_host_cpu"] / n))
    else:
        t.add("benchmark-process CPU per reminder, storing + fire_due in-process (ms)", _ms(r["create_bench_cpu"] / n))
        t.add("benchmark-process CPU per reminder, fire_due alone (ms)", _ms(r["fire_cpu"] / n))
    t.add("**host CPU per reminder, delivery (T − 3 s to the last arrival; ms)**", _ms(r["deliver_host_cpu"] / n))
    t.add(
        "host CPU share from T to the last arrival (cores), and per second from T",
        f"{r['deliver_share']:.2f}; "
        + ", ".join(f"{s:.2f}" for s in r["shares"][:12])
        + (" …" if len(r["shares"]) > 12 else ""),
    )
    t.add(
        "Azurite / benchmark process (fake Connector) CPU per reminder, delivery (ms)",
        f"{_ms(r['deliver_storage_cpu'] / n)} / {_ms(r['deliver_bench_cpu'] / n)}",
    )
    p = r["picked"]
    if p:
        t.add(
            "jobs picked up by the host, relative to T: first / p50 / last (s)",
            f"{p[0]:+.2f} / {stats.median(p):+.2f} / {p[-1]:+.2f}",
        )
        picked_after = [x for x in p if x >= 0]
        span = p[-1] - max(p[0], 0.0)
        t.add(
            "jobs picked up by T / pickups per second after T",
            f"{len(p) - len(picked_after)} / {stats.number(len(picked_after) / span) if span > 0 else 'n/a'}",
        )
        t.add(
            "a job's work after T (from max(pickup, T) to its end): p50 / p90 / max (ms)",
            " / ".join(_ms(stats.percentile(r["work"], q)) for q in (50, 90, 100)),
        )
        t.add(
            "jobs running at once: at the most / on average from T to the last pickup (host log)",
            f"{r['peak_jobs']} / {r['mean_jobs']:.1f}",
        )
    t.add("conversations handed on (a slot missed: back on the queue)", str(r["handed_on"]))
    pr = r["profile"]
    t.add(
        f"one reminder's job alone, in-process (median of {pr['runs']}): wall time / the bot's CPU (ms)",
        f"{_ms(pr['wall'])} / {_ms(pr['cpu'])}",
    )
    t.add(
        "… its storage calls: how many, their wall time (ms), which",
        f"{pr['calls']:.0f}, {_ms(pr['storage_wall'])}: "
        + ", ".join(f"{k}{f' ×{v:g}' if v != 1 else ''}" for k, v in pr["kinds"].items()),
    )
    t.add("requests answered 429 / the fake's most requests in flight", f"{r['refused']} / {r['max_in_flight']}")

    met = r["early"] == 0 and r["over"] == 0
    section.target(
        f"{n:,} reminders due in the same second: each arrives in [T, T+1 s]",
        f"{r['within']:,} of {n:,} (max {late[-1]:+.2f} s, {r['early']} early)",
        met,
    )
    section.notes.append(
        "Delivery check: each reminder's conversation received its message exactly once and nothing else received "
        "it; a run that delivers wrongly fails the benchmark."
    )
    section.notes.append(_bounds(r))
    return section


def _bounds(r: dict[str, Any]) -> str:
    """What the figures say bounds the lateness."""
    n, late = r["n"], r["late"]
    host_ms = r["deliver_host_cpu"] / n * 1000
    share = r["deliver_share"]
    parts = [
        f"Delivery cost the host {host_ms:.1f} ms of CPU per reminder, so one host process (one core at the most) "
        f"cannot deliver more than about {1000 / host_ms:.0f} reminders a second whatever the queue allows: "
        f"{n:,} due in one second need {n * host_ms / 1000:.1f} s of host CPU",
        f"from T to the last arrival the host used {share:.2f} cores on average",
    ]
    if r["picked"]:
        parts.append(
            f"the queue trigger ran at most {r['peak_jobs']} jobs at once (host.json batchSize 16, a new "
            f"batch once 8 or fewer run), {r['mean_jobs']:.1f} on average until the last was picked up, each "
            f"working {_ms(r['mean_job'])} ms after T on average: {r['mean_jobs']:.1f} / "
            f"{r['mean_job']:.3f} s = {r['mean_jobs'] / r['mean_job']:.0f} reminders/s (measured: "
            f"{(n - 1) / (late[-1] - late[0]):.0f}/s), and the due jobs waited on the queue for a free slot "
            f"(picked up {stats.median(r['picked']):+.1f} s after T at the median)"
        )
    pr = r["profile"]
    parts.append(
        f"alone, a reminder's job takes {_ms(pr['wall'])} ms: {pr['calls']:.0f} storage calls "
        f"({_ms(pr['storage_wall'])} ms), the pace calendar's start lead (0.1 s) and the Connector's "
        f"service time (80 ms median)"
    )
    return "Where the time went: " + "; ".join(parts) + "."
