"""Update or delete, through the Connector, every message a notify job sent.

The delivery ledger kept the activity id of each message; a ledger row (a send batch, or one
conversation) remembers which revision last went through all of it, so a redelivered update or delete
job does not do it again. Revisions are spaced by the per-instance guard and a 429 pauses the tenant's
calendar, as for sends; they do not reserve calendar slots. A message beyond changing (its conversation
gone, the message deleted by the user, its service URL not verified) is logged and not retried.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from ..errors import BotError, UnavailableError
from .jobs import Job
from .ledger import SENT, DeliveryRow
from .pacing import DEFAULT_RETRY_AFTER, pace_key

if TYPE_CHECKING:
    from ..app import Bot

log = logging.getLogger(__name__)

ROWS_AT_ONCE = 10


class RevisionIncompleteError(UnavailableError):
    """Some messages could not be changed through the Connector: the job is retried for them."""


async def revise(bot: "Bot", job: Job) -> str:
    from ..protocol.connector import ConversationGoneError, RequestRejectedError, RetryableConnectorError
    from ..protocol.trust import UntrustedServiceUrlError

    assert job.notification is not None
    if await bot.ledger.header(job.notification) is None:
        log.warning("job %s: notification %s is unknown; nothing to %s", job.id, job.notification, job.kind)
        return "unknown notification"
    done = skipped = failed = 0

    async def one(key: str, activity_id: str) -> bool:
        """Whether this message needs no more work: changed, or beyond changing (retrying cannot help)."""
        nonlocal done, skipped, failed
        record = await bot.conversations.get(key)
        if record is None or not record.active:
            return True
        ref = record.reference
        pace = pace_key(ref.channel_id, ref.tenant_id)
        try:
            async with bot.sending:
                await bot.guard.wait(pace)
                if job.kind == "update":
                    activity = ref.outgoing(**job.content())
                    activity["id"] = activity_id
                    await bot.connector.update_activity(ref.endpoint, ref.conversation.id, activity_id, activity)
                else:
                    await bot.connector.delete_activity(ref.endpoint, ref.conversation.id, activity_id)
        except ConversationGoneError as exc:
            skipped += 1
            log.warning("job %s: conversation %s is gone (%s); reference retired", job.id, key, exc.code)
            await bot.conversations.retire(key, exc.code or f"HTTP {exc.status}")
            return True
        except (RequestRejectedError, UntrustedServiceUrlError) as exc:  # e.g. a message the user deleted
            skipped += 1
            log.warning("job %s: %s of %s in %s refused for good: %s", job.id, job.kind, activity_id, key, exc)
            return True
        except RetryableConnectorError as exc:
            failed += 1
            if exc.status == 429:
                await bot.pacing.throttled(pace, exc.retry_after or DEFAULT_RETRY_AFTER)
            log.warning("job %s: %s of %s in %s failed: %s", job.id, job.kind, activity_id, key, exc)
            return False
        except BotError as exc:  # the bot's token or storage: the job is retried
            failed += 1
            log.warning("job %s: %s of %s in %s failed: %s", job.id, job.kind, activity_id, key, exc)
            return False
        done += 1
        return True

    async def revise_row(row: DeliveryRow) -> None:
        sent = [(key, d.activity_id) for key, d in row.entries if d.status == SENT and d.activity_id]
        results = await asyncio.gather(*(one(key, activity_id) for key, activity_id in sent))
        if all(results):  # a row is marked once all of it is done, so a retried job skips it
            await bot.ledger.mark_revised(job.notification, row.row_id, job.id)  # type: ignore[arg-type]

    pending: list[DeliveryRow] = []
    async for row in bot.ledger.deliveries(job.notification):
        if row.revised_by != job.id and any(d.status == SENT and d.activity_id for _, d in row.entries):
            pending.append(row)
        if len(pending) >= ROWS_AT_ONCE:
            await asyncio.gather(*(revise_row(r) for r in pending))
            pending.clear()
    await asyncio.gather(*(revise_row(r) for r in pending))
    log.info("job %s: %s of notification %s: %d done, %d beyond changing, %d failed", job.id, job.kind,
             job.notification, done, skipped, failed)
    if failed:
        raise RevisionIncompleteError(f"job {job.id}: {failed} messages could not be {job.kind}d; the job will be retried")
    return f"{job.kind}d {done}" + (f", {skipped} beyond changing" if skipped else "")
