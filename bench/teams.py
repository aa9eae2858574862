"""Benchmark 7: delivery against a Teams-like channel, two local hosts on one storage account.

Per repeat: a fresh Azurite, a BotStack in Teams mode (the fake Connector, threads of this process, keeps
Teams' default limits: 50 requests per second per tenant, the per-conversation windows, 429 with
Retry-After, a lognormal service time of median 80 ms; the bot keeps its default pace,
BotTenantRatePerSecond 50) and a second host process with the same settings, so on the same storage and
queues. Three scenarios, each in tenants of its own:

(a) N conversations over 4 tenants, one `POST /api/notify` with `{"everyone": true}`: run first in the
    repeat's fresh storage account, when the seeded conversations are the only ones it holds, so that
    "everyone" is exactly these tenants;
(b) N conversations in one tenant, `{"tenantId": ...}`;
(c) a team of N members (the bot installed in the team with a conversationUpdate, none of the members known
    yet: N one-to-one conversations to create), `{"team": ...}`.

Figures per scenario: seconds from the POST to the last delivery at the fake, against the limits' bound
(the fewest requests the scenario needs per tenant over 50 per second; for the team: roster pages +
creations + sends), the ratio bound / elapsed, the share of requests to the scenario's tenants answered
429, host CPU per delivered message (both hosts, utime+stime from /proc around the scenario), each host's
peak RSS during the scenario, and which host sent how many batches (from the host logs). Every conversation
must receive its message exactly once, or the benchmark fails.
"""

from __future__ import annotations

import math
import re
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, replace
from itertools import pairwise
from pathlib import Path
from typing import Any

from . import procfs, stats
from .infra import azurite, bot_stack, log, second_host, seed
from .report import Section

RATE = 50.0  # Teams' requests per second per tenant (devhost.channel.TeamsLimits().tenant)
ROSTER_PAGE = 500  # members per roster page the bot asks for (botcore.delivery.rosters.ROSTER_PAGE)
TARGET_RATIO = {"a": 0.85, "b": 0.9, "s": 0.85}  # bound / elapsed, the start included
TARGET_STEADY = 0.94  # (a): each tenant's pace from its first send to its last, against the limit
TARGET_REFUSED = 0.01
SLOW_LATENCY = 0.25  # (s): scenario (a) again, the fake's median service time this long (Little's law: 12 in flight)
SETTLE = 1.0  # seconds to keep watching after the last delivery: a duplicate would arrive by then
NAMES = {"a": "(a) tenants, everyone", "b": "(b) one tenant", "c": "(c) team roster", "s": "(s) (a), slow fake"}


@dataclass(frozen=True)
class Sizes:
    tenants: int
    per_tenant: int
    single: int
    team: int
    repeats: int


FULL = Sizes(tenants=4, per_tenant=500, single=1000, team=500, repeats=3)
QUICK = Sizes(tenants=4, per_tenant=50, single=100, team=50, repeats=1)

LINE = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),(\d{3}) (\w+) ([\w.]+): (.*)$")
SEND_BATCH = re.compile(
    r"send batch \S+ \(dequeue count \d+\): sent (\d+), gone (\d+), failed (\d+), "
    r"retrying (\d+), already done (\d+)"
)
THROTTLED = re.compile(r"(\S+): the channel is throttling; paused ([\d.]+)s, now ([\d.]+) requests/s")
HANDED_ON = re.compile(r"job \S+: (\d+) conversations handed on \(attempt (\d+); the batch started (-?[\d.]+)s after")
JOB_DONE = re.compile(r"job message \S+ \(dequeue count \d+\): (.*)")


def tenant() -> str:
    return f"tenant-{uuid.uuid4().hex[:10]}"


# ---- watching one scenario ------------------------------------------------------------------------------


class Watch:
    """Everything measured around one scenario: the hosts' CPU, peak RSS and logs, the fake's tallies and
    requests. The fake runs in this process, so the waiting polls only what arrived since the last look
    (a list slice, no lock held), every 0.1 s."""

    def __init__(self, stack: Any, hosts: list[Any], tenants: list[str]) -> None:
        self.stack, self.hosts, self.tenants = stack, hosts, tenants
        channel = stack.channel
        self.index, self.faulted_index = len(channel.requests), len(channel.faulted)
        self.tallies = {t: replace(channel.tenants[t]) if t in channel.tenants else None for t in tenants}
        self.offsets = [h.log_path.stat().st_size for h in hosts]
        self.rss_reset = all([procfs.reset_peak_rss(h.process.pid) for h in hosts])
        self.cpu0 = [procfs.cpu_seconds(h.process.pid) for h in hosts]
        self.wall0, self.t0 = time.time(), time.monotonic()

    def wait_sends(self, text: str, count: int, timeout: float) -> list[Any]:
        """The sends carrying `text`, once `count` have arrived (or at the timeout)."""
        requests, index, found = self.stack.channel.requests, self.index, 0
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for host in self.hosts:
                if host.process.poll() is not None:
                    raise RuntimeError(f"a host exited (code {host.process.returncode}):\n{host.log()[-2000:]}")
            new = requests[index:]
            index += len(new)
            found += sum(
                1 for r in new if r.operation == "send" and isinstance(r.body, dict) and r.body.get("text") == text
            )
            if found >= count:
                break
            time.sleep(0.1)
        time.sleep(SETTLE)
        return [
            r
            for r in self.requests()
            if r.operation == "send" and isinstance(r.body, dict) and r.body.get("text") == text
        ]

    def requests(self) -> list[Any]:
        return self.stack.channel.requests[self.index :]

    def refusals(self) -> list[Any]:
        return [r for r in self.stack.channel.faulted[self.faulted_index :] if r.status == 429]

    def finish(self) -> dict[str, Any]:
        cpu = [procfs.cpu_seconds(h.process.pid) - c for h, c in zip(self.hosts, self.cpu0, strict=True)]
        peak = [procfs.peak_rss_mib(h.process.pid) for h in self.hosts]
        accepted, refused = 0, {}
        for t, before in self.tallies.items():
            now = self.stack.channel.tenants.get(t)
            if now is not None:
                accepted += now.accepted - (before.accepted if before else 0)
                refused[t] = now.refused - (before.refused if before else 0)
        return {
            "cpu": cpu,
            "peak": peak,
            "accepted": accepted,
            "refused": sum(refused.values()),
            "refused_by_tenant": refused,
            "logs": self.logs(),
        }

    def logs(self) -> list[list[tuple[float, str, str, str]]]:
        """Each host's log lines since the start: (seconds after the POST, level, message, the last line of a
        traceback that follows it, else "")."""
        time.sleep(0.1)  # the hosts write their logs in bursts, at most 20 ms late
        out = []
        for host, offset in zip(self.hosts, self.offsets, strict=True):
            with open(host.log_path, "rb") as f:
                f.seek(offset)
                text = f.read().decode(errors="replace")
            lines: list[tuple[float, str, str, str]] = []
            for line in text.splitlines():
                m = LINE.match(line)
                if m:
                    at = time.mktime(time.strptime(m[1], "%Y-%m-%d %H:%M:%S")) + int(m[2]) / 1000
                    lines.append((at - self.wall0, m[3], m[5], ""))
                elif lines and line.strip() and not line.startswith((" ", "Traceback", "The above")):
                    lines[-1] = lines[-1][:3] + (line.strip(),)
            out.append(lines)
        return out


def check_once(sends: list[Any], expected: set[str], key: Callable[[Any], str], what: str) -> tuple[int, int]:
    """Every expected key got exactly one send, and nothing else did; raises otherwise. Returns (dups, missing)."""
    counts = Counter(key(r) for r in sends)
    missing = sum(1 for k in expected if k not in counts)
    duplicated = sum(n - 1 for n in counts.values() if n > 1)
    strangers = len(set(counts) - expected)
    if missing or duplicated or strangers:
        raise RuntimeError(
            f"{what}: {missing} missing, {duplicated} duplicate deliveries, {strangers} unexpected "
            f"recipients (of {len(expected)})"
        )
    return duplicated, missing


def job_done(stack: Any, job_id: str, sent: int, timeout: float = 20.0) -> None:
    deadline, seen = time.monotonic() + timeout, {}
    while time.monotonic() < deadline:
        response = stack.api("GET", f"notify/{job_id}")
        seen = response.json() if response.status_code == 200 else {"http": response.status_code}
        if seen.get("state") == "done" and seen.get("sent") == sent:
            return
        time.sleep(0.25)
    raise RuntimeError(f"job {job_id}: status {seen}, expected done with {sent} sent")


def post_notify(stack: Any, text: str, target: dict[str, Any]) -> str:
    response = stack.api("POST", "notify", {"text": text, "target": target})
    if response.status_code != 202:
        raise RuntimeError(f"notify answered {response.status_code}: {response.text}")
    return response.json()["id"]


def _result(
    name: str,
    watch: Watch,
    sends: list[Any],
    requests_each: int,
    tenant_of: Callable[[Any], str],
    dups: int,
    missing: int,
) -> dict[str, Any]:
    """The figures of one scenario run, with its timeline (where the time went)."""
    end = watch.finish()
    t0 = watch.t0
    last = max(r.at for r in sends) - t0
    bound = requests_each / RATE
    delivered = len(sends)
    per_tenant: dict[str, list[float]] = {}
    for r in sorted(sends, key=lambda r: r.arrived):  # a tenant's pace as the channel counts it: by arrival
        per_tenant.setdefault(tenant_of(r), []).append(r.arrived - t0)
    others = Counter(r.operation for r in watch.requests() if r.operation != "send")
    creates = sorted(r.at - t0 for r in watch.requests() if r.operation == "create")
    members = sorted(r.at - t0 for r in watch.requests() if r.operation == "members")
    refusals = sorted(r.at - t0 for r in watch.refusals())
    hosts = []
    for lines in end["logs"]:
        batches = [tuple(int(x) for x in m.groups()) for _, _, text, _ in lines if (m := SEND_BATCH.search(text))]
        hosts.append(
            {
                "batches": sum(1 for b in batches if b[0] > 0),
                "sent": sum(b[0] for b in batches),
                "requeued": sum(1 for b in batches if b[0] == 0 and b[3] > 0),
                "jobs_started": [at for at, _, text, _ in lines if "Executing 'Functions.jobs'" in text],
                "jobs_done": [(at, m[1]) for at, _, text, _ in lines if (m := JOB_DONE.search(text))],
                "throttled": [
                    (at, m[1], float(m[2]), float(m[3])) for at, _, text, _ in lines if (m := THROTTLED.search(text))
                ],
                "handed_on": [
                    (at, int(m[1]), int(m[2]), float(m[3])) for at, _, text, _ in lines if (m := HANDED_ON.search(text))
                ],
                "errors": [(at, text, tail) for at, level, text, tail in lines if level in ("ERROR", "CRITICAL")],
                "takeovers": [at for at, _, text, _ in lines if "taking over a claim" in text],
            }
        )
    total = end["accepted"] + end["refused"]
    return {
        "name": name,
        "delivered": delivered,
        "elapsed": last,
        "bound": bound,
        "ratio": bound / last,
        "first": min(r.at for r in sends) - t0,
        "accepted": end["accepted"],
        "refused": end["refused"],
        "refused_share": end["refused"] / total if total else 0.0,
        "dups": dups,
        "missing": missing,
        "cpu": end["cpu"],
        "cpu_per_msg": sum(end["cpu"]) / delivered,
        "peak": end["peak"],
        "rss_reset": watch.rss_reset,
        "hosts": hosts,
        "tenants": {t: (v[0], v[-1], len(v), _longest_gap(v)) for t, v in per_tenant.items()},
        "refused_by_tenant": end["refused_by_tenant"],
        "creates": creates,
        "members": members,
        "other_requests": dict(others),
        "refusals": refusals,
    }


def _longest_gap(times: list[float]) -> tuple[float, float]:
    """(the longest pause between two consecutive sends, when it began), times sorted."""
    return max(((b - a, a) for a, b in pairwise(times)), default=(0.0, 0.0))


# ---- the scenarios --------------------------------------------------------------------------------------


def _tenants_run(
    stack: Any, hosts: list[Any], storage: Any, count: int, per_tenant: int, everyone: bool, name: str = ""
) -> dict[str, Any]:
    from tests.botstack import APP_ID

    name = name or ("a" if everyone else "b")
    tenants = [tenant() for _ in range(count)]
    ids: dict[str, str] = {}
    for t in tenants:
        seeded, _ = seed(storage.connection_string, per_tenant, stack.service_url, APP_ID, tenant_id=t)
        ids.update((cid, t) for cid in seeded)
    text = f"bench {name} {uuid.uuid4().hex[:8]}"
    target = {"everyone": True} if everyone else {"tenantId": tenants[0]}
    watch = Watch(stack, hosts, tenants)
    job = post_notify(stack, text, target)
    sends = watch.wait_sends(text, len(ids), timeout=max(60.0, 4 * per_tenant / RATE))
    dups, missing = check_once(sends, set(ids), lambda r: r.conversation_id, NAMES[name])
    result = _result(name, watch, sends, per_tenant, lambda r: ids.get(r.conversation_id, "?"), dups, missing)
    job_done(stack, job, len(ids))
    return result


def _install_in_team(stack: Any, team_id: str, tenant_id: str) -> None:
    """The bot added to a team: Teams' conversationUpdate in the team's General channel."""
    from tests.botstack import APP_ID

    activity = stack.activity(
        team_id,
        type="conversationUpdate",
        membersAdded=[{"id": f"28:{APP_ID}"}],
        conversation={"id": team_id, "tenantId": tenant_id, "conversationType": "channel", "isGroup": True},
        channelData={"team": {"id": team_id}, "tenant": {"id": tenant_id}},
    )
    response = stack.post(activity)
    if response.status_code != 200:
        raise RuntimeError(f"installing the bot in a team: {response.status_code} {response.text}")


def _team_run(stack: Any, hosts: list[Any], size: int) -> dict[str, Any]:
    group, team_id = tenant(), f"19:{uuid.uuid4().hex}@thread.tacv2"
    _install_in_team(stack, team_id, group)
    members = {m["id"] for m in stack.channel.set_roster(team_id, size, group)}
    text = f"bench c {uuid.uuid4().hex[:8]}"
    requests_each = math.ceil(size / ROSTER_PAGE) + 2 * size  # roster pages, creations, sends
    watch = Watch(stack, hosts, [group])
    job = post_notify(stack, text, {"team": team_id})
    sends = watch.wait_sends(text, size, timeout=max(60.0, 4 * requests_each / RATE))
    if any(r.conversation_id == team_id for r in sends):
        raise RuntimeError("(c) team roster: a message went to the team's channel, not to a member's chat")
    dups, missing = check_once(sends, members, lambda r: (r.body.get("recipient") or {}).get("id"), NAMES["c"])
    result = _result("c", watch, sends, requests_each, lambda r: group, dups, missing)
    job_done(stack, job, size)
    return result


def run(tmp: Path, quick: bool, context: dict[str, Any]) -> Section:
    from devhost.channel import TeamsLimits

    sizes = QUICK if quick else FULL
    runs: dict[str, list[dict[str, Any]]] = {"a": [], "b": [], "c": [], "s": []}
    for i in range(sizes.repeats):
        with (
            azurite(tmp / f"azurite-{i}") as storage,
            bot_stack(storage.connection_string, tmp / f"stack-{i}", teams=TeamsLimits()) as stack,
            second_host(stack.env, tmp / f"stack-{i}" / "second-host.log") as second,
        ):
            hosts = [stack.host, second]
            label = f"teams {i + 1}/{sizes.repeats}"
            r = _tenants_run(stack, hosts, storage, sizes.tenants, sizes.per_tenant, everyone=True)
            runs["a"].append(r)
            log(
                f"{label}: (a) {sizes.tenants} x {sizes.per_tenant}: {r['elapsed']:.2f} s (bound {r['bound']:.1f} s), "
                f"{r['refused']} refused of {r['accepted'] + r['refused']}"
            )
            r = _tenants_run(stack, hosts, storage, 1, sizes.single, everyone=False)
            runs["b"].append(r)
            log(
                f"{label}: (b) 1 x {sizes.single}: {r['elapsed']:.2f} s (bound {r['bound']:.1f} s), "
                f"{r['refused']} refused of {r['accepted'] + r['refused']}"
            )
            r = _team_run(stack, hosts, sizes.team)
            runs["c"].append(r)
            log(
                f"{label}: (c) team of {sizes.team}: {r['elapsed']:.2f} s (bound {r['bound']:.1f} s), "
                f"{r['refused']} refused of {r['accepted'] + r['refused']}"
            )
        with (  # the same limits, a fake that answers three times slower: the pace must not depend on it
            azurite(tmp / f"azurite-slow-{i}") as storage,
            bot_stack(
                storage.connection_string, tmp / f"slow-{i}", teams=TeamsLimits(latency_median=SLOW_LATENCY, seed=i)
            ) as stack,
            second_host(stack.env, tmp / f"slow-{i}" / "second-host.log") as second,
        ):
            r = _tenants_run(stack, [stack.host, second], storage, sizes.tenants, sizes.per_tenant, True, name="s")
            runs["s"].append(r)
            log(
                f"{label}: (s) {sizes.tenants} x {sizes.per_tenant}, {SLOW_LATENCY} s fake: {r['elapsed']:.2f} s "
                f"(bound {r['bound']:.1f} s), {r['refused']} refused of {r['accepted'] + r['refused']}"
            )
    return _section(sizes, runs, quick)


def _down(value: float) -> str:
    """A figure against its target, rounded down to three places: one just below never reads as met."""
    return f"{math.floor(value * 1000) / 1000:.3f}"


def _steady(r: dict[str, Any]) -> float:
    """The slowest tenant's pace from its first send to its last, against the limit: by their arrival at the fake,
    as the limit counts them (their answers come a random service time later)."""
    return min((n - 1) / (last - first) / RATE for first, last, n, _ in r["tenants"].values() if n > 1)


# ---- the report -----------------------------------------------------------------------------------------


def _cell(values: list[float], digits: int | None = None, scale: float = 1.0) -> str:
    s = stats.Summary.of(v * scale for v in values)
    spread = "" if s.runs < 2 else f" ({stats.spread(s, digits)})"
    return stats.number(s.median, digits) + spread


def _median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    return sorted(runs, key=lambda r: r["elapsed"])[len(runs) // 2]


def _timeline(r: dict[str, Any]) -> str:
    """Where one run's time went, from the fake's requests and the hosts' logs (seconds after the POST)."""
    parts = []
    for number, h in enumerate(r["hosts"], 1):
        for at in h["jobs_started"]:
            parts.append(f"host {number} took the job at {at:.2f}")
        for at, outcome in h["jobs_done"]:
            parts.append(f"host {number} finished it at {at:.2f} ({outcome})")
    if r["members"]:
        parts.append(
            f"roster page{'s' if len(r['members']) > 1 else ''} read at " + ", ".join(f"{t:.2f}" for t in r["members"])
        )
    if r["creates"]:
        c = r["creates"]
        rate = (len(c) - 1) / (c[-1] - c[0]) if len(c) > 1 and c[-1] > c[0] else math.nan
        parts.append(f"{len(c)} creations from {c[0]:.2f} to {c[-1]:.2f} ({stats.number(rate)}/s)")
    for t, (first, last, n, (gap, gap_at)) in sorted(r["tenants"].items(), key=lambda kv: kv[1]):
        rate = (n - 1) / (last - first) if last > first else math.nan
        parts.append(
            f"tenant …{t[-4:]}: {n} sends from {first:.2f} to {last:.2f} ({stats.number(rate)}/s; "
            f"longest pause {gap:.2f} s at {gap_at:.2f})"
        )
    if r["refusals"]:
        f = r["refusals"]
        parts.append(f"{len(f)} answered 429, from {f[0]:.2f} to {f[-1]:.2f}")
    for number, h in enumerate(r["hosts"], 1):
        for at, key, paused, rate in h["throttled"][:4]:
            parts.append(f"host {number} at {at:.2f}: …{key[-4:]} throttled, paused {paused:.1f} s, now {rate:.1f}/s")
        if len(h["throttled"]) > 4:
            parts.append(f"host {number}: {len(h['throttled']) - 4} more throttling pauses")
        if h["handed_on"]:
            late = [x[3] for x in h["handed_on"]]
            parts.append(
                f"host {number} handed on {sum(x[1] for x in h['handed_on'])} conversations in "
                f"{len(h['handed_on'])} batches (attempts {sorted({x[2] for x in h['handed_on']})}; "
                f"batches started {min(late):.2f} to {max(late):.2f} s after their slot)"
            )
        if h["requeued"]:
            parts.append(f"host {number} put {h['requeued']} batches back on the queue until their slots")
        for at, text, tail in h["errors"][:3]:
            parts.append(f"host {number} at {at:.2f}: ERROR {text[:70]}{': ' + tail[:160] if tail else ''}")
        if len(h["errors"]) > 3:
            parts.append(f"host {number}: {len(h['errors']) - 3} more errors")
        for at in h["takeovers"]:
            parts.append(f"host {number} at {at:.2f} took over a stopped worker's batch claim")
    return "; ".join(parts) + "."


def _section(sizes: Sizes, runs: dict[str, list[dict[str, Any]]], quick: bool) -> Section:
    heads = {
        "a": f"(a) {sizes.tenants} tenants × {sizes.per_tenant:,}, everyone",
        "b": f"(b) 1 tenant × {sizes.single:,}",
        "c": f"(c) team of {sizes.team:,} (none known)",
        "s": f"(s) as (a), the fake's median {SLOW_LATENCY * 1000:.0f} ms",
    }
    section = Section(
        "7. Teams delivery",
        "Against the fake Connector in Teams mode (devhost.channel.TeamsLimits' defaults: 50 requests/s per tenant, "
        "7/1 s, 8/2 s, 60/30 s per conversation, 429 with Retry-After past them, lognormal service time with a "
        "median of 80 ms; a thread of the benchmark process) with the bot's default pace (BotTenantRatePerSecond 50, "
        "of which the pace calendar hands out 95%) and two local hosts on one Azurite (same storage, same queues). "
        f"Per repeat a fresh Azurite; {sizes.repeats} repeat(s). (a) is one `POST /api/notify` with "
        '`{"everyone": true}`, run first in the repeat\'s fresh storage account so that everyone is exactly its '
        f'{sizes.tenants * sizes.per_tenant:,} conversations; (b) targets `{{"tenantId": ...}}`; (c) the bot is '
        "installed in a team (a conversationUpdate with channelData.team.id) whose roster none of the bot's stored "
        'conversations belongs to, and `{"team": ...}` reads the roster, creates every member\'s one-to-one '
        "conversation and sends, all on the tenant's pace. Bound: the fewest requests a tenant needs over 50 per "
        "second (for the team: roster pages + creations + sends). Elapsed: the POST to the last delivery at the fake. "
        f"(s) is (a) again against a fake with the same limits that answers in a median of {SLOW_LATENCY:g} s "
        "instead of 0.08 s, each repeat in a stack of its own. Each cell is the median (min–max over the repeats).",
    )
    order = ["a", "s", "b", "c"]
    t = section.table(["measure", *(heads[k] for k in order)])

    def row(label: str, fn: Callable[[list[dict[str, Any]]], str]) -> None:
        t.add(label, *(fn(runs[k]) for k in order))

    row("requests a tenant needs at the least", lambda rs: f"{int(round(rs[0]['bound'] * RATE)):,}")
    row("bound at 50 requests/s per tenant (s)", lambda rs: stats.number(rs[0]["bound"]))
    row("**elapsed, POST → last delivery (s)**", lambda rs: _cell([r["elapsed"] for r in rs]))
    row("**ratio bound / elapsed**", lambda rs: _cell([r["ratio"] for r in rs], 2))
    row(
        "slowest tenant's pace, first send → last (arrivals at the fake), / 50 per second",
        lambda rs: _cell([_steady(r) for r in rs], 2) if rs[0]["name"] in ("a", "s") else "—",
    )
    row("first delivery after the POST (s)", lambda rs: _cell([r["first"] for r in rs]))
    row(
        "**429 share** (refused / all requests to the scenario's tenants)",
        lambda rs: _cell([r["refused_share"] for r in rs], 2, 100) + " %",
    )
    row(
        "requests accepted / refused (median run)",
        lambda rs: f"{_median_run(rs)['accepted']:,} / {_median_run(rs)['refused']:,}",
    )
    row(
        "duplicates / missing (every run checked)",
        lambda rs: f"{sum(r['dups'] for r in rs)} / {sum(r['missing'] for r in rs)}",
    )
    row("host CPU per delivered message, both hosts (ms)", lambda rs: _cell([r["cpu_per_msg"] for r in rs], None, 1000))
    row("host CPU, host 1 / host 2 (s)", lambda rs: " / ".join(_cell([r["cpu"][i] for r in rs], 2) for i in (0, 1)))
    row(
        "peak RSS during the scenario, host 1 / host 2 (MiB)",
        lambda rs: " / ".join(_cell([r["peak"][i] for r in rs]) for i in (0, 1)),
    )
    row(
        "batches that sent, host 1 / host 2 (messages), all runs",
        lambda rs: " / ".join(
            f"{sum(r['hosts'][i]['batches'] for r in rs)} ({sum(r['hosts'][i]['sent'] for r in rs):,})" for i in (0, 1)
        ),
    )
    row(
        "job fanned out by host 1 / host 2, all runs",
        lambda rs: " / ".join(str(sum(len(r["hosts"][i]["jobs_done"]) for r in rs)) for i in (0, 1)),
    )

    caveat = (
        " (quick run: the fixed delay before the first send dominates a 1–2 s bound; the target is for the full run)"
        if quick
        else ""
    )
    for k in ("a", "s", "b"):
        ratio = stats.median([r["ratio"] for r in runs[k]])
        share = stats.median([r["refused_share"] for r in runs[k]])
        least = TARGET_RATIO[k]
        section.target(f"{heads[k]}: bound / elapsed{caveat}", f"{_down(ratio)} (≥ {least})", ratio >= least)
        if k in ("a", "s"):
            steady = stats.median([_steady(r) for r in runs[k]])
            section.target(
                f"{heads[k]}: the slowest tenant's steady pace / the limit",
                f"{_down(steady)} (≥ {TARGET_STEADY})",
                steady >= TARGET_STEADY,
            )
        section.target(
            f"{heads[k]}: share of requests answered 429",
            f"{share * 100:.2f} % (≤ {TARGET_REFUSED:.0%})",
            share <= TARGET_REFUSED,
        )

    section.notes.append(
        "Delivery check: in every run each conversation (each team member) received its message exactly once and "
        "nothing else received it, and the job's status said done with every message sent; a run that delivers "
        "wrongly fails the benchmark."
    )
    section.notes.append(
        f"What the bot's own pace allows: the calendar hands out 95% of {RATE:.0f}/s, so a tenant's N requests take "
        "N / 47.5 s once the first leaves (a ratio of 0.95 at best), and the first leaves no earlier than the pace "
        "calendar's lead (0.6 s) after the fan-out reserved it, which itself follows the host's queue polling "
        "(up to 0.5 s) after the POST."
    )
    clean = [
        last / r["bound"]
        for r in runs["a"]
        for t, (_, last, _, _) in r["tenants"].items()
        if not r["refused_by_tenant"].get(t)
    ]
    hit = [
        last / r["bound"]
        for r in runs["a"]
        for t, (_, last, _, _) in r["tenants"].items()
        if r["refused_by_tenant"].get(t)
    ]
    split = (
        f"{heads['a']}, per tenant over all runs: {len(clean)} tenants without a 429 had their last delivery "
        f"{stats.number(stats.median(clean) * runs['a'][0]['bound']) if clean else 'n/a'} s after the POST (median; "
        f"ratio {1 / stats.median(clean) if clean else math.nan:.2f})"
    )
    if hit:
        split += (
            f", {len(hit)} with a 429 at {stats.number(stats.median(hit) * runs['a'][0]['bound'])} s "
            f"(ratio {1 / stats.median(hit):.2f}); the slowest tenant sets the elapsed time"
        )
    section.notes.append(split + ".")
    if not all(r["rss_reset"] for rs in runs.values() for r in rs):
        section.notes.append("The kernel did not allow resetting VmHWM: peak RSS counts from each host's start.")
    for k in order:
        r = _median_run(runs[k])
        section.notes.append(
            f"Where the time went, {heads[k]} (the median run; seconds after the POST): {_timeline(r)}"
        )
    section.notes.append(
        "Host settings as tests.botstack.BotStack sets them in Teams mode: the bot's defaults (BotSendConcurrency "
        "256), BotHttpTimeoutSeconds 2, BotDeliveryClaimSeconds 6, host.json's queue polling (batchSize 16, "
        "maxPollingInterval 0.5 s). The fake runs in the benchmark process, which otherwise only polls what arrived "
        "every 0.1 s."
    )
    return section
