"""Reminders: notifications stored for later, sent at their second.

A reminder due within the timer's reach (the next run and a little more, LOOKAHEAD) goes straight on the
jobs queue, made visible at its due time; a later one is stored, in a row keyed by the minute it falls
due (PartitionKey `yyyymmddHHMM`, UTC), and the minute timer puts the coming minute's reminders on the
queue the same way, then deletes their rows. So the timer's range query returns only what is due soon:
its cost grows with due reminders, not with all stored ones.

An instance claims a row (botcore.delivery.claims) before enqueueing it, so two timers firing at once
enqueue it once; the notify job carries the reminder's id, and the reminder claimed that id in the
delivery ledger when it was stored, so even a crash between enqueue and delete cannot make it send twice.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING

from ..keys import encode_key
from ..settings import REMINDERS_TABLE
from ..storage import EntityChangedError, EntityNotFoundError, TableStore
from .claims import CLAIMED, claim_row
from .jobs import Job, due_time

if TYPE_CHECKING:
    from ..app import Bot

log = logging.getLogger(__name__)

WAITING, FIRING = "waiting", "firing"
FIRING_TTL = timedelta(minutes=2)  # a claim older than this belongs to a timer that died
LOOKAHEAD = timedelta(seconds=75)  # the timer runs every minute: what falls due before its next run + slack
MAX_EARLY = 5.0  # seconds a reminder's job waits for its due time (it arrives at most a second early)


def minute_key(at: datetime) -> str:
    return at.astimezone(timezone.utc).strftime("%Y%m%d%H%M")


class ReminderStore(TableStore):
    table_name = REMINDERS_TABLE

    async def add(self, bot: "Bot", job: Job, *, request_digest: str = "", now: datetime | None = None) -> datetime:
        """Schedule a reminder job (kind reminder) as the notify job it fires; returns when it is due.

        The reminder claims its id in the delivery ledger first (DeliveryLedger.open_job): the same
        reminder scheduled twice is one reminder, and an id already used for other work is refused.
        """
        header = await bot.ledger.open_job(replace(job, kind="notify"), kind="reminder", request_digest=request_digest)
        notify = header.job  # a repeated request schedules what the first one did
        due = due_time(notify)
        now = now or datetime.now(timezone.utc)
        if due - now <= LOOKAHEAD:
            await bot.jobs.send(notify.to_json(), delay=max(0.0, (due - now).total_seconds()))
            log.info("reminder %s queued, due %s", notify.id, due.isoformat())
        else:
            await self.table.upsert({"PartitionKey": minute_key(due), "RowKey": encode_key(notify.id), "due": due,
                                     "status": WAITING, "job": notify.to_json()})
            log.info("reminder %s stored, due %s", notify.id, due.isoformat())
        return due

    async def fire_due(self, bot: "Bot", now: datetime | None = None) -> int:
        """Put every reminder due before the timer's next run on the queue, made visible at its due time;
        returns how many this call enqueued. Each delay is reckoned as its reminder is enqueued: with many due
        at once, enqueueing them takes a while, and a delay reckoned at the start would make the last ones late."""
        now = now or datetime.now(timezone.utc)
        started = time.monotonic()
        horizon = now + LOOKAHEAD
        fired = 0
        async for row in self.table.query(f"PartitionKey le '{minute_key(horizon)}'"):
            if row["due"] > horizon:
                continue
            claim = await claim_row(self.table, row["PartitionKey"], row["RowKey"], status=FIRING, ttl=FIRING_TTL,
                                    now=now)
            if claim.state != CLAIMED:
                continue  # another timer is firing it, or fired it
            elapsed = timedelta(seconds=time.monotonic() - started)
            await bot.jobs.send(row["job"], delay=max(0.0, (row["due"] - now - elapsed).total_seconds()))
            try:
                await self.table.delete(row["PartitionKey"], row["RowKey"], claim.etag)
            except (EntityChangedError, EntityNotFoundError):
                pass
            fired += 1
            log.info("reminder %s queued (due %s)", row["RowKey"], row["due"].isoformat())
        return fired


async def wait_until_due(job: Job) -> None:
    """A reminder's job may arrive up to a second early (a queue delay is whole seconds, rounded down): it waits
    for its second, so that a reminder is never early."""
    if job.due is None:
        return
    early = (due_time(job) - datetime.now(timezone.utc)).total_seconds()
    if early > 0:
        await asyncio.sleep(min(early, MAX_EARLY))
