"""Reminders: notifications stored for later, sent at their second.

A reminder due within the timer's reach (the next run and a little more, LOOKAHEAD) goes straight on the
jobs queue, made visible at its due time; a later one is stored, in a row keyed by the minute it falls
due (PartitionKey `yyyymmddHHMM`, UTC), and the minute timer sends the coming minute's reminders on their
way, then deletes their rows: one-conversation reminders in packs (botcore.delivery.packs), which do ahead
of time the work a thousand reminders due in one second could not do in that second; the others as jobs on
the queue, made visible at their second. So the timer's range query returns only what is due soon: its cost
grows with due reminders, not with all stored ones.

An instance claims a row (botcore.delivery.claims) before firing it, so two timers firing at once fire it
once. The reminder claimed its id in the delivery ledger when it was stored, and a pack's claim sends it
once, so even a crash between firing and deleting cannot make it send twice: a timer that takes a stopped
timer's claim over finds the reminder's pack and puts it on the queue again.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from ..jobs import Job, due_time, parse_job
from ..keys import encode_key
from ..settings import REMINDERS_TABLE
from ..storage import EntityChangedError, EntityNotFoundError, TableStore
from . import packs
from .claims import CLAIMED, Claim, claim_row

if TYPE_CHECKING:
    from azure.data.tables import TableEntity

    from ..storage import Queue
    from .context import DeliveryContext
    from .ledger import DeliveryLedger

log = logging.getLogger(__name__)

WAITING, FIRING = "waiting", "firing"
FIRING_TTL = timedelta(minutes=2)  # a claim older than this belongs to a timer that died
LOOKAHEAD = timedelta(seconds=75)  # the timer runs every minute: what falls due before its next run + slack
MAX_EARLY = 5.0  # seconds a reminder's job waits for its due time (it arrives at most a second early)
FIRE_PAGE = 1000  # due reminders the timer takes at a time, in due order


def minute_key(at: datetime) -> str:
    """The row's PartitionKey: the minute (UTC) a reminder falls due in, so that the timer's range query reads
    only due minutes."""
    return at.astimezone(UTC).strftime("%Y%m%d%H%M")


def within_reach(due: datetime, now: datetime) -> bool:
    """Whether a reminder falls due before the timer's next run (and a little more): it goes on its way now,
    rather than waiting in the table."""
    return due - now <= LOOKAHEAD


def queue_delay(due: datetime, now: datetime, elapsed: float = 0.0) -> float:
    """Seconds to keep a reminder's job hidden on the queue: until its second, reckoned from `now` plus the
    `elapsed` seconds since `now` was read (enqueueing many takes a while)."""
    return max(0.0, (due - now).total_seconds() - elapsed)


def time_to_wait(due: datetime, now: datetime) -> float:
    """Seconds a reminder's job that arrived before its second waits for it (at most MAX_EARLY: it arrives at
    most a second early, and a `due` far ahead on a job is no reminder's)."""
    return min(MAX_EARLY, max(0.0, (due - now).total_seconds()))


class ReminderStore(TableStore):
    table_name = REMINDERS_TABLE

    async def add(
        self, ledger: DeliveryLedger, jobs: Queue, job: Job, *, request_digest: str = "", now: datetime | None = None
    ) -> datetime:
        """Schedule a reminder job (kind reminder) as the notify job it fires; returns when it is due.

        The reminder claims its id in the delivery ledger first (DeliveryLedger.open_job): the same
        reminder scheduled twice is one reminder, and an id already used for other work is refused.
        """
        header = await ledger.open_job(replace(job, kind="notify"), kind="reminder", request_digest=request_digest)
        notify = header.job  # a repeated request schedules what the first one did
        due = due_time(notify)
        now = now or datetime.now(UTC)
        if within_reach(due, now):
            await jobs.send(notify.to_json(), delay=queue_delay(due, now))
            log.info("reminder %s queued, due %s", notify.id, due.isoformat())
        else:
            await self.table.upsert(
                {
                    "PartitionKey": minute_key(due),
                    "RowKey": encode_key(notify.id),
                    "due": due,
                    "status": WAITING,
                    "job": notify.to_json(),
                }
            )
            log.info("reminder %s stored, due %s", notify.id, due.isoformat())
        return due

    async def fire_due(self, ctx: DeliveryContext, now: datetime | None = None) -> int:
        """Put every reminder due before the timer's next run on its way, to arrive at its due time; returns how
        many this call fired. One-conversation reminders go in packs (botcore.delivery.packs), the rest as jobs
        made visible at their second, each delay reckoned as its job is enqueued."""
        now = now or datetime.now(UTC)
        started = time.monotonic()
        horizon = now + LOOKAHEAD
        fired = 0
        page: list[TableEntity] = []
        async for row in self.table.query(f"PartitionKey le '{minute_key(horizon)}'"):
            if within_reach(row["due"], now):
                page.append(row)
            if len(page) >= FIRE_PAGE:
                fired += await self._fire(ctx, page, now, started)
                page = []
        return fired + (await self._fire(ctx, page, now, started) if page else 0)

    async def _fire(self, ctx: DeliveryContext, rows: list[TableEntity], now: datetime, started: float) -> int:
        """Claim a page of due reminders, send them on their way in due order, and delete their rows."""
        gate = asyncio.Semaphore(packs.AT_ONCE)

        async def claim(row: TableEntity) -> tuple[TableEntity, Claim]:
            async with gate:
                return row, await claim_row(
                    self.table, row["PartitionKey"], row["RowKey"], status=FIRING, ttl=FIRING_TTL, now=now
                )

        claimed = [
            (row, c)
            for row, c in await asyncio.gather(*(claim(r) for r in sorted(rows, key=_due)))
            if c.state == CLAIMED
        ]  # the others another timer is firing, or fired
        jobs = [parse_job(row["job"]) for row, _ in claimed]
        taken_over = {
            job.id
            for job, (_, c) in zip(jobs, claimed, strict=True)
            if c.row is not None and c.row.get("status") == FIRING
        }
        resumed = {
            job.id for job in jobs if job.id in taken_over and packs.packable(job) and await packs.resume(ctx, job)
        }
        alone = await packs.pack(ctx, [j for j in jobs if packs.packable(j) and j.id not in resumed])
        alone += [j for j in jobs if not packs.packable(j)]
        for job in alone:
            await ctx.jobs.send(job.to_json(), delay=queue_delay(due_time(job), now, time.monotonic() - started))
            log.info("reminder %s queued (due %s)", job.id, job.due)

        async def delete(row: TableEntity, c: Claim) -> None:
            async with gate:
                try:
                    await self.table.delete(row["PartitionKey"], row["RowKey"], c.etag)
                except (EntityChangedError, EntityNotFoundError):
                    pass

        await asyncio.gather(*(delete(row, c) for row, c in claimed))
        return len(claimed)


def _due(row: TableEntity) -> datetime:
    due: datetime = row["due"]
    return due


async def wait_until_due(job: Job) -> None:
    """A reminder's job may arrive up to a second early (a queue delay is whole seconds, rounded down): it waits
    for its second, so that a reminder is never early."""
    if job.due is None:
        return
    wait = time_to_wait(due_time(job), datetime.now(UTC))
    if wait > 0:
        await asyncio.sleep(wait)
