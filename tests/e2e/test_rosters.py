"""A team's roster read from a Connector that misbehaves: paging that goes in circles or never ends, members
listed twice, entries that are no member. Every job ends, every member is notified once, and what could not
be done is said in the job's status."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter

import pytest

from botcore.delivery.rosters import MAX_PAGES
from tests.botstack import BotStack, environment, new_tenant, status_of


def _team(bot: BotStack) -> tuple[str, str]:
    group, team_id = new_tenant(), f"19:{uuid.uuid4().hex}@thread.tacv2"
    bot.install_in_team(team_id, group)
    return group, team_id


def _received(bot: BotStack, text: str) -> Counter:
    return Counter(r.body["recipient"]["id"] for r in bot.channel.activities() if r.body.get("text") == text)


def _notify_team(bot: BotStack, team_id: str, text: str) -> str:
    response = bot.api("POST", "notify", {"text": text, "target": {"team": team_id}})
    assert response.status_code == 202, response.text
    return response.json()["id"]


def test_paging_in_circles_stops_at_the_repeated_token_and_notifies_each_member_once(bot: BotStack) -> None:
    group, team_id = _team(bot)
    members = bot.channel.set_roster(team_id, 2, group)
    bot.channel.break_paging(team_id, "circle")
    job_id = _notify_team(bot, team_id, "circles")
    status = status_of(bot, job_id, state="done", targets=2, sent=2, pending=0, timeout=20)
    assert "continuation token it had given before" in status["warning"]
    assert _received(bot, "circles") == Counter({m["id"]: 1 for m in members})
    pages = [r for r in bot.channel.requests if r.operation == "members" and r.conversation_id == team_id]
    assert len(pages) == 2


@pytest.mark.slow
def test_a_roster_past_the_page_bound_fails_the_job_with_the_reason(bot: BotStack) -> None:
    group, team_id = _team(bot)
    bot.channel.break_paging(team_id, "endless")
    job_id = _notify_team(bot, team_id, "endless")
    status = status_of(bot, job_id, state="failed", timeout=60)
    assert f"past {MAX_PAGES} pages" in status["error"]
    assert status["targets"] == MAX_PAGES
    status = status_of(bot, job_id, sent=MAX_PAGES, timeout=30)  # those read were notified, once each
    assert set(_received(bot, "endless").values()) == {1} and len(_received(bot, "endless")) == MAX_PAGES


def test_members_listed_twice_are_notified_once_and_the_job_ends(bot: BotStack) -> None:
    group, team_id = _team(bot)
    first, second = bot.channel.set_roster(team_id, 2, group)
    bot.channel.members[team_id] = [first, second, first, dict(second, name="again")]
    job_id = _notify_team(bot, team_id, "twice listed")
    status_of(bot, job_id, state="done", targets=2, sent=2, pending=0, timeout=20)
    assert _received(bot, "twice listed") == Counter({first["id"]: 1, second["id"]: 1})


async def test_a_malformed_member_fails_alone_with_its_reason_in_the_ledger(bot: BotStack) -> None:
    from botcore.app import bot_for, close

    group, team_id = await asyncio.to_thread(_team, bot)
    good = bot.channel.set_roster(team_id, 2, group)
    bot.channel.members[team_id] = [good[0], {"name": "no id"}, {"id": "29:" + "x" * 5000}, good[1]]
    job_id = await asyncio.to_thread(_notify_team, bot, team_id, "one bad apple")
    await asyncio.to_thread(status_of, bot, job_id, state="done", targets=4, sent=2, failed=2, pending=0, timeout=20)
    assert _received(bot, "one bad apple") == Counter({m["id"]: 1 for m in good})
    with environment(bot.env):
        rows, _ = await bot_for().delivery.ledger.deliveries(job_id)
        await close()
    errors = [d.error for row in rows for _, d in row.entries if d.status == "failed"]
    assert len(errors) == 2 and all(e.startswith("not a member: ") for e in errors), errors
    assert any("id" in e for e in errors)
