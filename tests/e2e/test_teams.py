"""Delivery against a Teams-like channel: the fake Connector keeps Teams' limits (50 requests per second per
tenant, 7 per second / 8 per 2 s / 60 per 30 s per conversation, 429 with Retry-After past them, service
time of tens of milliseconds), and the bot keeps its default pace (BotTenantRatePerSecond 50). In a storage
account of their own, so that nothing else uses the tenants' pace."""

from __future__ import annotations

import json
import time
import uuid
from collections import Counter

import pytest

from devhost.channel import TeamsLimits
from tests.botstack import BotStack, new_tenant, stack_of_its_own, status_of, wait_until
from tests.hostproc import REPO, HostProcess

pytestmark = pytest.mark.slow

TEAMS = TeamsLimits(latency_median=0.02, latency_sigma=0.4)


@pytest.fixture(scope="module")
def teams(tmp_path_factory):
    with stack_of_its_own(tmp_path_factory.mktemp("teams"), teams=TEAMS) as stack:
        yield stack


def _delivered(stack: BotStack, cids: list[str], text: str) -> Counter:
    """One pass over what the channel received. (The channel runs in this process: a test that held its lock
    or kept the CPU busy while waiting would delay the channel's own handling, and so its counting.)"""
    wanted = set(cids)
    return Counter(
        r.conversation_id
        for r in stack.channel.activities()
        if r.conversation_id in wanted and r.body.get("text") == text
    )


def _arrivals(stack: BotStack, cids: list[str], text: str) -> list[float]:
    """When the channel received these conversations' messages, in order (the channel's clock)."""
    wanted = set(cids)
    return sorted(
        r.at for r in stack.channel.activities() if r.conversation_id in wanted and r.body.get("text") == text
    )


def _span(stack: BotStack, cids: list[str], text: str) -> tuple[float, float]:
    times = _arrivals(stack, cids, text)
    return times[0], times[-1]


def _peak_per_second(stack: BotStack, cids: list[str], text: str) -> int:
    """The most of these messages the channel received in any one second."""
    times, peak, first = _arrivals(stack, cids, text), 0, 0
    for last, at in enumerate(times):
        while at - times[first] >= 1.0:
            first += 1
        peak = max(peak, last - first + 1)
    return peak


def test_two_hosts_pace_each_tenant_to_its_limit_together(teams: BotStack, tmp_path) -> None:
    """Two big tenants (150 conversations each: 3 s at 50/s) and 30 small ones: more jobs at once than one host
    takes in a poll (batchSize 16), so both hosts fan out and send, and each tenant's pace must hold across them."""
    second = HostProcess(REPO, teams.env, tmp_path / "second-host.log")
    try:
        big, small = [new_tenant(), new_tenant()], [new_tenant() for _ in range(30)]
        cids = {t: teams.seed(150 if t in big else 10, tenant_id=t) for t in big + small}
        everyone = [c for t in cids for c in cids[t]]
        started = time.monotonic()
        jobs = {t: teams.api("POST", "notify", {"text": "paced", "target": {"tenantId": t}}).json()["id"] for t in cids}
        assert wait_until(lambda: len(_delivered(teams, everyone, "paced")) == len(everyone), timeout=60, interval=0.25)
        elapsed = time.monotonic() - started
        for t, job in jobs.items():
            status_of(teams, job, state="done", sent=len(cids[t]))
        assert set(_delivered(teams, everyone, "paced").values()) == {1}  # each exactly once
        for t in cids:
            tally = teams.channel.tenants[t]
            assert tally.peak <= 50 and tally.refused <= tally.accepted // 100, (t, tally)  # at most 1 % 429s
        # A big tenant's 150 at 50/s take at least 3 s: paced. Each tenant has a pace of its own: on the
        # channel's clock, the tenants together went past one tenant's 50 per second.
        assert elapsed >= 150 / 50 * 0.9, elapsed
        assert all(end - start >= 150 / 50 * 0.9 for start, end in (_span(teams, cids[t], "paced") for t in big))
        assert _peak_per_second(teams, everyone, "paced") > 50
        for host in (teams.host, second):  # both hosts took part
            assert "Executed 'Functions.jobs'" in host.log() or "send batch" in host.log()
    finally:
        second.stop()


def test_a_fresh_instance_waiting_for_its_first_token_still_sends_at_the_pace(tmp_path) -> None:
    """A host's first token comes from a distant identity provider (0.4 s): the paced run fetches it before its
    first slot, so the requests that would have waited for it behind their slots do not leave together."""
    with stack_of_its_own(tmp_path, teams=TEAMS) as stack:
        stack.idp.token_latency = 0.4
        tenant = new_tenant()
        cids = stack.seed(120, tenant_id=tenant)
        job = stack.api("POST", "notify", {"text": "first token", "target": {"tenantId": tenant}}).json()["id"]
        status_of(stack, job, state="done", sent=len(cids), timeout=30)
        tally = stack.channel.tenants[tenant]
        assert tally.refused == 0 and tally.accepted == len(cids), tally
        assert len(stack.idp.token_requests) == 1  # one token, fetched ahead by one run, shared by all


def test_a_burst_to_one_conversation_is_spaced_to_its_windows(teams: BotStack, tenant) -> None:
    [cid] = teams.seed(1, tenant_id=tenant)
    started = time.monotonic()
    for i in range(12):
        assert (
            teams.api("POST", "notify", {"text": f"burst {i}", "target": {"conversation": teams.key(cid)}}).status_code
            == 202
        )
    assert teams.channel.wait_for(lambda c: len(c.activities(cid)) == 12, timeout=30)
    assert sorted(teams.texts_of(cid)) == sorted(f"burst {i}" for i in range(12))
    assert teams.channel.conversations[cid].refused == 0  # never sent into a 429
    # 7 in the first second, then 8 per 2 s: the 12th cannot be sent before 2 s have passed.
    assert time.monotonic() - started >= 2.0


def test_a_team_roster_gets_one_message_each_in_personal_conversations_once(teams: BotStack) -> None:
    group, team_id = new_tenant(), f"19:{uuid.uuid4().hex}@thread.tacv2"
    teams.install_in_team(team_id, group)
    members = teams.channel.set_roster(team_id, 40, group)
    known = members[:10]
    for member in known:  # ten members already talk to the bot one to one
        personal = f"a:{uuid.uuid4().hex}"
        activity = teams.activity(
            personal,
            "hi",
            user=member["id"],
            conversation={"id": personal, "tenantId": group, "conversationType": "personal"},
        )
        assert teams.post(activity).status_code == 200
    creates_before = sum(r.operation == "create" for r in teams.channel.requests)
    response = teams.api("POST", "notify", {"text": "to the team", "target": {"team": team_id}})
    assert response.status_code == 202, response.text
    job_id = response.json()["id"]
    status_of(teams, job_id, state="done", targets=40, sent=40, timeout=30)
    creates = sum(r.operation == "create" for r in teams.channel.requests) - creates_before
    assert creates == 30  # the ten known conversations were reused
    sends = [r for r in teams.channel.activities() if r.body.get("text") == "to the team"]
    assert Counter(r.body["recipient"]["id"] for r in sends) == Counter({m["id"]: 1 for m in members})
    assert all(r.conversation_id != team_id for r in sends)  # one to one, never in the team's channel

    rerun = {
        "kind": "notify",
        "id": job_id,
        "created": "2026-12-01T00:00:00Z",
        "target": {"team": team_id},
        "text": "to the team",
    }
    rerun_message = teams.enqueue(json.dumps(rerun))  # the same job again: the header says it is done
    assert wait_until(
        lambda: f"job message {rerun_message} (dequeue count 1): duplicate" in teams.host.log(), timeout=15
    ), teams.host.log()[-3000:]
    assert sum(r.body.get("text") == "to the team" for r in teams.channel.activities()) == 40
    second = teams.api("POST", "notify", {"text": "again", "target": {"team": team_id}}).json()["id"]
    status_of(teams, second, state="done", targets=40, sent=40, timeout=30)
    assert sum(r.operation == "create" for r in teams.channel.requests) - creates_before == 30  # all reused now
    assert teams.channel.tenants[group].refused == 0
