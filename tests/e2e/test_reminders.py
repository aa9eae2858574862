"""Stored reminders fired by the minute timer: one-conversation reminders travel in packs prepared ahead of
their second (botcore.delivery.packs), arrive at their second and never twice, and can still be updated or
deleted until they are sent."""

from __future__ import annotations

import asyncio
import re
import time
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest

from botcore.app import bot_for, close
from botcore.jobs import Target, new_job
from tests.botstack import BotStack, environment, new_tenant, status_of, wait_until

pytestmark = pytest.mark.slow


async def _store(bot: BotStack, cids: list[str], text: str, due: datetime) -> list[str]:
    """Reminders stored as the API stores those due past the timer's lookahead (here a few seconds off: `add`
    is told it is earlier than it is); returns their ids."""
    with environment(bot.env):
        delivery = bot_for().delivery
        ids = []
        for cid in cids:
            job = new_job("reminder", Target(conversation=bot.key(cid)), text=text, due=due.isoformat())
            await delivery.reminders.add(
                delivery.ledger, delivery.jobs, job, now=datetime.now(UTC) - timedelta(seconds=600)
            )
            ids.append(job.id)
        await close()
    return ids


async def _fire(bot: BotStack) -> int:
    with environment(bot.env):
        fired = await bot_for().delivery.reminders.fire_due(bot_for().delivery)
        await close()
    return fired


def _arrivals(bot: BotStack, cids: list[str], text: str) -> dict[str, list[float]]:
    """When each conversation received `text`, in the channel's wall-clock seconds."""
    offset = time.time() - time.monotonic()
    out: dict[str, list[float]] = {cid: [] for cid in cids}
    for r in bot.channel.activities():
        if r.conversation_id in out and r.body.get("text") == text:
            out[r.conversation_id].append(r.at + offset)
    return out


async def test_reminders_due_together_arrive_at_their_second_once_each(bot: BotStack) -> None:
    groups = [new_tenant() for _ in range(30)]  # a pack crosses tenants
    cids = [cid for group in groups for cid in await asyncio.to_thread(bot.seed, 1, tenant_id=group)]
    due = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=5)
    ids = await _store(bot, cids, "standup", due)
    assert await _fire(bot) >= len(ids)
    assert await asyncio.to_thread(bot.channel.wait_for, lambda c: all(_arrivals(bot, cids, "standup").values()), 15)
    arrivals = _arrivals(bot, cids, "standup")
    assert all(len(times) == 1 for times in arrivals.values()), arrivals
    lateness = [times[0] - due.timestamp() for times in arrivals.values()]
    assert min(lateness) >= 0 and max(lateness) < 1.0, sorted(lateness)
    for job_id in ids:
        await asyncio.to_thread(status_of, bot, job_id, state="done", sent=1, pending=0)


async def test_reminders_seconds_apart_go_in_packs_of_their_own_second_and_none_is_handed_on(bot: BotStack) -> None:
    cids = [cid for _ in range(6) for cid in await asyncio.to_thread(bot.seed, 1, tenant_id=new_tenant())]
    first = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=5)
    later = first + timedelta(seconds=3)  # past what one pack's run waits for after its first
    offset = len(bot.host.log())
    await _store(bot, cids[:3], "early bird", first)
    await _store(bot, cids[3:], "late riser", later)
    assert await _fire(bot) >= len(cids)
    for text, group, due in (("early bird", cids[:3], first), ("late riser", cids[3:], later)):
        arrived = await asyncio.to_thread(
            bot.channel.wait_for, lambda _, g=group, t=text: all(_arrivals(bot, g, t).values()), 15
        )
        lateness = [t - due.timestamp() for times in _arrivals(bot, group, text).values() for t in times]
        assert arrived and len(lateness) == 3 and min(lateness) >= 0 and max(lateness) < 1.0, lateness

    def runs() -> list[tuple[str, ...]]:
        return re.findall(r"pack rp\w+ of (\d+): sent (\d+), .*retrying (\d+)", bot.host.log()[offset:])

    await asyncio.to_thread(wait_until, lambda: len(runs()) >= 2)
    assert sorted((int(n), int(sent), int(retrying)) for n, sent, retrying in runs()) == [(3, 3, 0), (3, 3, 0)], runs()


async def test_a_due_reminder_fires_once_with_two_timers_at_once(bot: BotStack, second_instance) -> None:
    [cid] = await asyncio.to_thread(bot.seed, 1)
    [job_id] = await _store(bot, [cid], "stretch", datetime.now(UTC) + timedelta(seconds=3))

    async def timer():
        return await bot_for().delivery.reminders.fire_due(bot_for().delivery)

    fired = await asyncio.gather(timer(), second_instance(timer()))
    await close()
    assert sorted(fired) == [0, 1]
    await asyncio.to_thread(status_of, bot, job_id, state="done", sent=1)  # its outcome written: it was sent
    assert bot.texts_of(cid) == ["stretch"]


async def test_a_packed_reminder_updated_or_deleted_before_its_second_sends_the_revision(bot: BotStack) -> None:
    """Revised after the timer packed them: the pack learns of it from the mark a revision leaves."""
    first, second = await asyncio.to_thread(bot.seed, 2)
    due = datetime.now(UTC) + timedelta(seconds=4)
    [deleted] = await _store(bot, [first], "never", due)
    [updated] = await _store(bot, [second], "draft", due)
    assert await _fire(bot) >= 2
    assert (await asyncio.to_thread(bot.api, "DELETE", f"notify/{deleted}")).status_code == 202
    assert (await asyncio.to_thread(bot.api, "PATCH", f"notify/{updated}", {"text": "final"})).status_code == 202
    await asyncio.to_thread(status_of, bot, updated, state="done", sent=1, timeout=15)
    await asyncio.to_thread(status_of, bot, deleted, state="deleted", cancelled=1, timeout=15)
    assert bot.texts_of(second) == ["final"] and bot.texts_of(first) == []


async def test_a_stored_reminder_deleted_before_its_minute_never_fires(bot: BotStack) -> None:
    [cid] = await asyncio.to_thread(bot.seed, 1)
    [job_id] = await _store(bot, [cid], "later", datetime.now(UTC) + timedelta(seconds=3))
    assert (await asyncio.to_thread(bot.api, "DELETE", f"notify/{job_id}")).status_code == 202
    assert await _fire(bot) >= 1
    await asyncio.to_thread(status_of, bot, job_id, state="deleted", cancelled=1, timeout=15)
    assert bot.texts_of(cid) == []


async def test_a_timer_that_stopped_after_packing_is_taken_over_and_the_pack_sends_once(bot: BotStack) -> None:
    """A timer packed a reminder and stopped before deleting its row: once its claim lapses, the next timer
    finds the pack and puts it on the queue again; the pack's claim sends it once."""
    from botcore.delivery import reminders

    [cid] = await asyncio.to_thread(bot.seed, 1)
    [job_id] = await _store(bot, [cid], "once", datetime.now(UTC) + timedelta(seconds=4))
    with environment(bot.env):
        delivery = bot_for().delivery
        store = delivery.reminders
        rows = [row async for row in store.table.query(f"RowKey eq '{job_id}'")]
        await reminders.packs.pack(delivery, [reminders.parse_job(rows[0]["job"])])  # what the stopped timer did
        await store.table.merge(
            {
                "PartitionKey": rows[0]["PartitionKey"],
                "RowKey": job_id,
                "status": "firing",
                "claimedAt": datetime.now(UTC) - timedelta(minutes=5),
            }
        )
        assert await store.fire_due(delivery) >= 1
        pack = (await delivery.ledger.header(job_id)).pack
        await close()
    await asyncio.to_thread(status_of, bot, job_id, state="done", sent=1, timeout=15)
    assert await asyncio.to_thread(wait_until, lambda: f"pack {pack}: already done" in bot.host.log(), 15)
    assert Counter(bot.texts_of(cid)) == Counter({"once": 1})  # its second message came, and sent nothing


def test_a_reminder_due_soon_arrives_at_its_second_never_before(bot: BotStack) -> None:
    """Due within the timer's reach: it goes straight on the queue, whose delay is whole seconds rounded down;
    its job waits for the rest."""
    [cid] = bot.seed(1)
    due = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=3, milliseconds=700)
    response = bot.api(
        "POST", "reminders", {"text": "on the dot", "target": {"conversation": bot.key(cid)}, "due": due.isoformat()}
    )
    assert response.status_code == 201, response.text
    assert bot.channel.wait_for(lambda c: _arrivals(bot, [cid], "on the dot")[cid], timeout=15)
    [arrived] = _arrivals(bot, [cid], "on the dot")[cid]
    assert 0 <= arrived - due.timestamp() < 1.0, arrived - due.timestamp()
