"""Messages kept in the ledger before they are sent, for one conversation: a committed turn's replies the
Connector did not take (a `replies` job), and a proactive dialog's first messages. Each is sent once: claimed,
sent, recorded."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from ..errors import UnavailableError
from ..jobs import Job
from ..protocol.activity import ConversationReference
from ..protocol.connector import ConversationGoneError
from .ledger import FINAL, Outcome, Status

if TYPE_CHECKING:
    from .context import DeliveryContext

log = logging.getLogger(__name__)


async def deliver_prepared(ctx: DeliveryContext, job_id: str, key: str, reference: ConversationReference) -> str:
    """Send the messages kept in the ledger for (job, conversation) once: claim, send, record.

    A failure records the row as retrying and raises, so that the host retries the job's message.
    """
    prepared = await ctx.ledger.prepared(job_id, key)
    if prepared is None or prepared.status in FINAL:
        return "duplicate"
    claims = await ctx.ledger.claim(job_id, [key])
    if key in claims.busy:  # a copy of this job is sending right now: look again later
        raise DeliveryBusyError(f"job {job_id}: another worker is sending to {key}; retrying later")
    if key in claims.done:
        return "duplicate"
    try:
        for message in prepared.messages:
            await ctx.connector.reply(reference, message, retry=True)
    except ConversationGoneError as exc:
        await ctx.ledger.record(
            job_id, [Outcome(key, Status.GONE, exc.service_code or f"HTTP {exc.status}")], claims.claimed
        )
        await ctx.conversations.retire(key, exc.service_code or f"HTTP {exc.status}")
        log.warning("job %s: conversation %s is gone (%s); reference retired", job_id, key, exc.service_code)
        return "retired"
    except Exception as exc:
        await ctx.ledger.record(job_id, [Outcome(key, Status.RETRYING, f"{type(exc).__name__}: {exc}")], claims.claimed)
        raise
    await ctx.ledger.record(job_id, [Outcome(key, Status.SENT)], claims.claimed)
    return "sent"


async def send_pending_replies(ctx: DeliveryContext, job: Job) -> str:
    """A `replies` job: the replies of a committed turn that could not be sent at once."""
    key = job.target.conversation
    assert key is not None
    record = await ctx.conversations.get(key)
    if record is None or not record.active:
        await ctx.ledger.skip_unreachable(job.id, key, record)
        return "skipped"
    return await deliver_prepared(ctx, job.id, key, record.reference)


class DeliveryBusyError(UnavailableError):
    """Another invocation is delivering the same messages right now; the host retries this one later."""
