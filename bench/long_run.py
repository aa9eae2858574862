"""Benchmark 11: hours of sending, time-scaled: what a long broadcast meets, in about ten minutes.

A low per-tenant limit (RATE requests/s at the fake Connector in Teams mode and in the bot's pace, where Teams
allows 50) stretches one notify-everyone job over 10 tenants × PER_TENANT conversations to about nine minutes,
as long as 25,000 conversations per tenant take at Teams' pace; the claims (BotDeliveryClaimSeconds) and the
local host's queue leases (LocalQueueLeaseSeconds) are short in proportion. Two local hosts on one Azurite.
In one run:

- the fan-out reserves calendar slots minutes ahead, and the batches wait on the queue for them;
- every batch outlasts its claim (a batch of 100 takes 53 s at 2 requests/s) and renews it as it sends;
- a 429 storm in one tenant: for STORM seconds the fake answers every request of that tenant 429 with a
  Retry-After of 1 s (FakeConnector.fail, one fault per conversation of the tenant);
- the second host is killed (SIGKILL: nothing is cleaned up) while it sends, and restarted: the claims of the
  batches it was sending lapse, and a host takes each over when its queue message reappears.

Checks: every conversation received the message (nothing lost, or the benchmark fails), and the duplicates stay
within docs/delivery.md's bound: at most BotSendConcurrency per batch the killed host was sending.
"""

from __future__ import annotations

import contextlib
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import stats
from .infra import REPO, azurite, bot_stack, log, second_host, seed
from .report import Section
from .teams import THROTTLED, job_done, post_notify

RATE = 2  # requests/s per tenant: Teams' 50, slowed 25 times
CLAIM_SECONDS = 5  # BotDeliveryClaimSeconds (120 s by default)
LEASE_SECONDS = 6  # LocalQueueLeaseSeconds: how soon a killed host's queue messages reappear
SEND_CONCURRENCY = 32
TAKEOVER = "taking over a claim"
EXECUTING = ("Executing 'Functions.sends'", "Executing 'Functions.jobs'")  # batches, and a fan-out's first ones
EXECUTED = "Executed 'Functions."


@dataclass(frozen=True)
class Plan:
    tenants: int
    per_tenant: int
    storm_at: float  # seconds after the POST
    storm_seconds: float
    kill_at: float
    down_seconds: float


FULL = Plan(tenants=10, per_tenant=1000, storm_at=120, storm_seconds=20, kill_at=240, down_seconds=30)
QUICK = Plan(tenants=2, per_tenant=20, storm_at=3, storm_seconds=2, kill_at=5, down_seconds=2)


def _in_flight(log_text: str) -> int:
    """Sending invocations a host's log shows started and not finished (the batches it was sending when it stopped,
    and a fan-out's, which sends its first batches itself)."""
    lines = log_text.splitlines()
    started = {line.rsplit("Id=", 1)[1][:36] for line in lines if any(e in line for e in EXECUTING)}
    return len(started - {line.rsplit("Id=", 1)[1][:36] for line in lines if EXECUTED in line})


def _calendar_reach(connection_string: str) -> float:
    """How far ahead of now the pace calendar's latest reservation reaches (seconds)."""
    from azure.data.tables import TableClient

    from botcore.settings import PACING_TABLE

    with TableClient.from_connection_string(connection_string, PACING_TABLE) as table:
        return max((float(row.get("next") or 0) for row in table.list_entities()), default=0.0) - time.time()


def run(tmp: Path, quick: bool, context: dict[str, Any]) -> Section:
    from devhost.channel import TeamsLimits, Window
    from tests.botstack import APP_ID
    from tests.hostproc import HostProcess

    plan = QUICK if quick else FULL
    tag = uuid.uuid4().hex[:6]
    tenants = [f"tenant-{i}-{tag}" for i in range(plan.tenants)]
    count = plan.tenants * plan.per_tenant
    env = {
        "BotTenantRatePerSecond": str(RATE),
        "BotDeliveryClaimSeconds": str(CLAIM_SECONDS),
        "LocalQueueLeaseSeconds": str(LEASE_SECONDS),
        "BotSendConcurrency": str(SEND_CONCURRENCY),
    }
    events: list[tuple[float, str]] = []
    with contextlib.ExitStack() as stack_of:
        storage = stack_of.enter_context(azurite(tmp / "azurite"))
        stack = stack_of.enter_context(
            bot_stack(storage.connection_string, tmp / "stack", env, teams=TeamsLimits(tenant=Window(RATE, 1.0)))
        )
        second = stack_of.enter_context(second_host(stack.env, tmp / "stack" / "second-host.log"))
        ids, _ = seed(storage.connection_string, count, stack.service_url, APP_ID, tenants=tenants)
        tenant_of = {cid: tenants[i % len(tenants)] for i, cid in enumerate(ids)}
        stormy = [cid for cid in ids if tenant_of[cid] == tenants[0]]
        hosts = [stack.host, second]
        text = f"long {tag}"
        t0 = time.monotonic()
        job = post_notify(stack, text, {"everyone": True})
        log(f"long run: {count:,} conversations, {plan.tenants} tenants at {RATE}/s; job {job}")
        requests, index = stack.channel.requests, 0
        delivered: Counter[str] = Counter()
        reach = None
        storm_end = kill_end = None
        in_flight = 0
        bound_seconds = plan.per_tenant / (RATE * 0.95)
        deadline = t0 + 3 * bound_seconds + 120
        while time.monotonic() < deadline:
            now = time.monotonic() - t0
            if reach is None and "fanned out to" in stack.host.log() + second.log():
                reach = _calendar_reach(storage.connection_string)
                events.append((now, f"fan-out done; the calendar reaches {reach:.0f} s ahead"))
            if storm_end is None and now >= plan.storm_at:
                for cid in stormy:
                    stack.channel.fail(429, "Throttled", times=None, conversation_id=cid, retry_after=1)
                storm_end = now + plan.storm_seconds
                events.append((now, f"429 storm in tenant …{tenants[0][-9:]} for {plan.storm_seconds:.0f} s"))
            elif storm_end is not None and storm_end > 0 and now >= storm_end:
                stack.channel.clear_faults()
                storm_end = -1.0
                events.append((now, "storm over"))
            if kill_end is None and now >= plan.kill_at:
                second.process.kill()
                second.process.wait()
                in_flight = _in_flight(second.log())
                kill_end = now + plan.down_seconds
                events.append((now, f"host 2 killed with {in_flight} invocations under way"))
            elif kill_end is not None and kill_end > 0 and now >= kill_end:
                second.stop()
                second = HostProcess(REPO, stack.env, tmp / "stack" / "second-host-restarted.log")
                stack_of.callback(second.stop)
                hosts.append(second)
                kill_end = -1.0
                events.append((time.monotonic() - t0, "host 2 restarted"))
            new = requests[index:]
            index += len(new)
            delivered.update(r.conversation_id for r in new if r.operation == "send" and r.body.get("text") == text)
            if len(delivered) >= count and storm_end == -1.0 and kill_end == -1.0:
                break
            time.sleep(0.2)
        time.sleep(3.0)  # a late duplicate would arrive by then
        new = requests[index:]
        delivered.update(r.conversation_id for r in new if r.operation == "send" and r.body.get("text") == text)
        sends = [r for r in requests if r.operation == "send" and r.body.get("text") == text]
        last = max(r.at for r in sends) - t0
        missing = sum(1 for cid in ids if cid not in delivered)
        duplicates = sum(n - 1 for n in delivered.values() if n > 1)
        strangers = len(set(delivered) - set(ids))
        logs = [h.log() for h in hosts]
        if missing or strangers:
            raise RuntimeError(f"long run: {missing} missing, {strangers} unexpected recipients (of {count})")
        job_done(stack, job, count, timeout=60)
        per_tenant_last = {t: 0.0 for t in tenants}
        for r in sends:
            t = tenant_of[r.conversation_id]
            per_tenant_last[t] = max(per_tenant_last[t], r.at - t0)
        refused = [r for r in stack.channel.faulted if r.status == 429]
        result = {
            "plan": plan,
            "count": count,
            "elapsed": last,
            "bound": bound_seconds,
            "reach": reach,
            "missing": missing,
            "duplicates": duplicates,
            "dup_bound": SEND_CONCURRENCY * in_flight,
            "in_flight": in_flight,
            "takeovers": [sum(1 for line in text.splitlines() if TAKEOVER in line) for text in logs],
            "throttled": sum(1 for text in logs for line in text.splitlines() if THROTTLED.search(line)),
            "refused": len(refused),
            "refused_stormy": sum(1 for r in refused if tenant_of.get(r.conversation_id or "") == tenants[0]),
            "stormy_last": per_tenant_last[tenants[0]],
            "others_last": max(v for t, v in per_tenant_last.items() if t != tenants[0]),
            "events": events,
        }
    return _section(result, quick)


def _section(r: dict[str, Any], quick: bool) -> Section:
    plan: Plan = r["plan"]
    section = Section(
        "11. Hours of sending, time-scaled",
        f"One notify-everyone job to {r['count']:,} conversations ({plan.tenants} tenants × {plan.per_tenant:,}), "
        f"two local hosts on one Azurite, the fake Connector in Teams mode at {RATE} requests/s per tenant and the "
        f"bot's pace the same (Teams' 50, slowed {50 // RATE} times: a minute here is {50 // RATE} minutes of "
        f"sending at Teams' pace), BotDeliveryClaimSeconds {CLAIM_SECONDS} (120 by default), "
        f"LocalQueueLeaseSeconds {LEASE_SECONDS}, BotSendConcurrency {SEND_CONCURRENCY}. During the run a 429 "
        f"storm in one tenant ({plan.storm_seconds:.0f} s of every request answered 429, Retry-After 1 s) and "
        f"the second host killed (SIGKILL) and restarted {plan.down_seconds:.0f} s later. One run.",
    )
    t = section.table(["measure", "value"])
    t.add("POST → last delivery (s)", stats.number(r["elapsed"]))
    t.add("a tenant's bound at 95 % of the limit (s)", stats.number(r["bound"]))
    reach = r["reach"]
    t.add("the pace calendar's reach when the fan-out ended (s ahead)", "—" if reach is None else stats.number(reach))
    t.add(
        "the stormy tenant's last delivery / the others' last (s)",
        f"{stats.number(r['stormy_last'])} / {stats.number(r['others_last'])}",
    )
    t.add(
        "429s answered (in the stormy tenant) / pauses the hosts recorded",
        f"{r['refused']:,} ({r['refused_stormy']:,}) / {r['throttled']:,}",
    )
    t.add("invocations under way on the killed host", r["in_flight"])
    t.add("claims taken over, host 1 / host 2 / host 2 restarted", " / ".join(str(n) for n in r["takeovers"]))
    t.add("**missing**", r["missing"])
    t.add(
        "**duplicates** (bound: BotSendConcurrency × batches under way at the kill)",
        f"{r['duplicates']} ({r['dup_bound']})",
    )
    section.target("nothing lost", f"{r['missing']} of {r['count']:,} missing", r["missing"] == 0)
    section.target(
        "nothing sent twice beyond the bound",
        f"{r['duplicates']} duplicates (bound {r['dup_bound']})",
        r["duplicates"] <= r["dup_bound"],
    )
    section.notes.append(
        "What happened (seconds after the POST): " + "; ".join(f"{at:.0f}: {what}" for at, what in r["events"]) + "."
    )
    return section
