"""Update or delete, through the Connector, every message a notify job sent.

The delivery ledger kept the activity id of each message; a row (a send batch,
or one conversation) remembers which revision last finished it, so a redelivered
update or delete job does not do it again.
"""

from __future__ import annotations

import asyncio
import logging

from ..errors import UnavailableError
from .jobs import Job
from .ledger import SENT, DeliveryLedger
from ..settings import Settings

log = logging.getLogger(__name__)


class RevisionIncompleteError(UnavailableError):
    """Some messages could not be changed through the Connector: the job is retried for them."""


async def revise(job: Job, settings: Settings) -> str:
    from .broadcast import limiter_for
    from ..protocol.connector import ConnectorError
    from ..state.turns import services

    assert job.notification is not None
    svc = services(settings)
    ledger = DeliveryLedger()
    if await ledger.header(job.notification) is None:
        log.warning("job %s: notification %s is unknown; nothing to %s", job.id, job.notification, job.kind)
        return "unknown notification"
    limiter = limiter_for(settings)
    done = failed = 0

    async def one(key: str, activity_id: str) -> bool:
        nonlocal done, failed
        record = await svc.store.get(key)
        if record is None or not record.active:
            return True
        ref = record.reference
        try:
            async with limiter:
                if job.kind == "update":
                    activity = ref.outgoing(**job.content())
                    activity["id"] = activity_id
                    await svc.connector.update_activity(ref.endpoint, ref.conversation.id, activity_id, activity)
                else:
                    await svc.connector.delete_activity(ref.endpoint, ref.conversation.id, activity_id)
        except ConnectorError as exc:
            failed += 1
            log.warning("job %s: %s of %s in %s failed: %s", job.id, job.kind, activity_id, key, exc)
            return False
        done += 1
        return True

    async def revise_row(row: dict, sent: list[tuple[str, str]]) -> None:
        results = await asyncio.gather(*(one(key, activity_id) for key, activity_id in sent))
        if all(results):  # a row is marked once all of it is done, so a retried job skips it
            await ledger.table.merge({"PartitionKey": row["PartitionKey"], "RowKey": row["RowKey"],
                                      "revisedBy": job.id})

    pending: list[tuple[dict, list[tuple[str, str]]]] = []
    async for row, deliveries in ledger.deliveries(job.notification):
        sent = [(key, activity_id) for key, status, activity_id in deliveries if status == SENT and activity_id]
        if sent and row.get("revisedBy") != job.id:
            pending.append((row, sent))
        if len(pending) >= 10:
            await asyncio.gather(*(revise_row(r, s) for r, s in pending))
            pending.clear()
    await asyncio.gather(*(revise_row(r, s) for r, s in pending))
    log.info("job %s: %s of notification %s: %d done, %d failed", job.id, job.kind, job.notification, done, failed)
    if failed:
        raise RevisionIncompleteError(f"job {job.id}: {failed} messages could not be {job.kind}d; the job will be retried")
    return f"{job.kind}d {done}"
