"""Update or delete, through the Connector, every message a notify job sent.

The delivery ledger kept the activity id of each message; a row remembers which
revision last touched it, so a redelivered update or delete job does each
conversation once.
"""

from __future__ import annotations

import asyncio
import logging

from .jobs import Job
from .ledger import SENT, DeliveryLedger
from .settings import Settings

log = logging.getLogger("botcore.revise")


async def revise(job: Job, settings: Settings) -> str:
    from .broadcast import limiter_for
    from .connector import ConnectorError
    from .turns import services

    assert job.notification is not None
    svc = services(settings)
    ledger = DeliveryLedger()
    if await ledger.header(job.notification) is None:
        log.warning("job %s: notification %s is unknown; nothing to %s", job.id, job.notification, job.kind)
        return "unknown notification"
    limiter = limiter_for(settings)
    done = failed = 0

    async def one(row: dict) -> None:
        nonlocal done, failed
        record = await svc.store.get(row["RowKey"])
        if record is None or not record.active or not row.get("activityId"):
            return
        ref = record.reference
        try:
            async with limiter.slot():
                if job.kind == "update":
                    activity = ref.outgoing(**job.content())
                    activity["id"] = row["activityId"]
                    await svc.connector.update_activity(ref.endpoint, ref.conversation.id, row["activityId"],
                                                        activity)
                else:
                    await svc.connector.delete_activity(ref.endpoint, ref.conversation.id, row["activityId"])
        except ConnectorError as exc:
            failed += 1
            log.warning("job %s: %s of %s in %s failed: %s", job.id, job.kind, row["activityId"],
                        row["RowKey"], exc)
            return
        await ledger.table.merge({"PartitionKey": row["PartitionKey"], "RowKey": row["RowKey"], "revisedBy": job.id})
        done += 1

    pending: list[dict] = []
    async for row in ledger.rows(job.notification, status=SENT):
        if row.get("revisedBy") != job.id:
            pending.append(dict(row))
        if len(pending) >= 100:
            await asyncio.gather(*(one(r) for r in pending))
            pending.clear()
    await asyncio.gather(*(one(r) for r in pending))
    log.info("job %s: %s of notification %s: %d done, %d failed", job.id, job.kind, job.notification, done, failed)
    if failed:
        raise RuntimeError(f"job {job.id}: {failed} messages could not be {job.kind}d; the job will be retried")
    return f"{job.kind}d {done}"
