"""Reminders: notifications stored for later, fired by a timer.

Rows are keyed by the minute they fall due (PartitionKey `yyyymmddHHMM`, UTC), and
a fired reminder's row is deleted, so the timer's range query over due minutes
returns only what is due now: its cost grows with due reminders, not with all
stored ones. An instance claims a row with its ETag before enqueueing it, so two
timers firing at once enqueue it once; the notify job carries the reminder's id,
so even a crash between enqueue and delete cannot make it send twice (the
delivery ledger keys on the job id).
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta, timezone

from .jobs import Job, due_time
from ..keys import encode_key
from ..settings import JOBS_QUEUE, REMINDERS_TABLE
from ..storage import TableStore
from ..storage import EntityChangedError, EntityNotFoundError, etag_of

log = logging.getLogger(__name__)

WAITING, FIRING = "waiting", "firing"
FIRING_TTL = timedelta(minutes=2)  # a claim older than this belongs to a timer that died


def minute_key(at: datetime) -> str:
    return at.astimezone(timezone.utc).strftime("%Y%m%d%H%M")


class ReminderStore(TableStore):
    table_name = REMINDERS_TABLE

    async def add(self, job: Job, *, request_digest: str = "") -> datetime:
        """Store a reminder job (kind reminder) as the notify job it fires; returns when it is due.

        The reminder claims its id in the delivery ledger first (see DeliveryLedger.open_job): the same
        reminder stored twice is one reminder, and an id already used for other work is refused.
        """
        from dataclasses import replace

        from .ledger import DeliveryLedger

        header = await DeliveryLedger().open_job(replace(job, kind="notify"), kind="reminder",
                                                 request_digest=request_digest)
        notify = header.job  # a repeated request stores what the first one stored
        due = due_time(notify)
        await self.table.upsert(
            {"PartitionKey": minute_key(due), "RowKey": encode_key(notify.id), "due": due,
             "status": WAITING, "job": notify.to_json()})
        log.info("reminder %s stored, due %s", notify.id, due.isoformat())
        return due

    async def fire_due(self, now: datetime | None = None) -> int:
        """Enqueue every reminder that is due; returns how many this call enqueued."""
        from ..storage import get_queue

        now = now or datetime.now(timezone.utc)
        fired = 0
        query = f"PartitionKey le '{minute_key(now)}'"
        async for row in self.table.query(query):
            if row["due"] > now:
                continue
            if row.get("status") == FIRING and now - row["firedAt"] < FIRING_TTL:
                continue  # another timer is firing it right now
            try:
                etag = await self.table.merge(
                    {"PartitionKey": row["PartitionKey"], "RowKey": row["RowKey"], "status": FIRING,
                     "firedAt": now}, etag_of(row))
            except (EntityChangedError, EntityNotFoundError):
                continue  # another timer claimed it first
            await get_queue(JOBS_QUEUE).send(row["job"])
            try:
                await self.table.delete(row["PartitionKey"], row["RowKey"], etag)
            except (EntityChangedError, EntityNotFoundError):
                pass
            fired += 1
            log.info("reminder %s fired (due %s)", row["RowKey"], row["due"].isoformat())
        return fired
