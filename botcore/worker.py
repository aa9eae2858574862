"""The queue and timer functions' edge: what becomes of one message, and of botcore's errors there.

Every failure ends one of three ways (botcore.errors): bad input or a permanent conflict goes to the
poison queue at once, since retrying cannot fix it; anything else raises, so that the host retries the
message; and when the host's last attempt (MAX_DEQUEUE_COUNT) fails too, the job's status says so before
the host moves the message to poison, so that no status waits forever.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from . import telemetry
from .app import bot_for
from .delivery.batches import PackMessage, RevisionBatch, SendBatch, parse_sends_message
from .delivery.fanout import run_notify
from .delivery.ledger import IdConflictError
from .delivery.packs import run_pack
from .delivery.proactive import begin_dialog
from .delivery.replies import send_pending_replies
from .delivery.retention import RetentionReport, run_retention
from .delivery.revise import run_revision, run_revision_batch
from .delivery.send import abandon_batch, batch_pace, run_send_batch
from .errors import BadInputError, ConflictError, UnavailableError
from .jobs import Job, JobError, parse_job
from .settings import JOBS_QUEUE, MAX_DEQUEUE_COUNT, SENDS_QUEUE
from .storage import get_queue

if TYPE_CHECKING:
    from opentelemetry.util.types import AttributeValue

    from .delivery.context import DeliveryContext

log = logging.getLogger(__name__)


async def handle_job_message(
    body: bytes, message_id: str = "", dequeue_count: int = 1, traceparent: str | None = None
) -> str:
    """Run one job from the jobs queue; returns a short outcome for the log. `traceparent` is the invocation's trace
    context (the Functions host's): the job continues the one it carries, if it carries one (botcore.telemetry)."""
    delivery = bot_for().delivery
    attributes: dict[str, AttributeValue] = {"messaging.message.id": message_id, "bot.dequeue_count": dequeue_count}
    try:
        job = parse_job(body)
    except JobError as exc:
        with telemetry.invocation("job", None, traceparent, attributes):
            await poison(JOBS_QUEUE, body, f"message {message_id}: {exc}")
        return "poisoned"
    attributes.update({"bot.job.id": job.id, "bot.job.kind": job.kind})
    with telemetry.invocation(f"job {job.kind}", job.traceparent, traceparent, attributes):
        try:
            return await _run_job(delivery, job)
        except Exception as exc:
            hopeless = _hopeless(exc)
            if hopeless or dequeue_count >= MAX_DEQUEUE_COUNT:
                await _give_up(delivery, job, exc)
            if not hopeless:
                raise  # the host retries the message
            await poison(JOBS_QUEUE, body, f"message {message_id}: {exc}")
            return "poisoned"


def _hopeless(exc: Exception) -> bool:
    """Whether retrying a message cannot help: bad input, or a conflict that will not go away."""
    return isinstance(exc, BadInputError) or isinstance(exc, ConflictError) and exc.permanent


async def _run_job(delivery: DeliveryContext, job: Job) -> str:
    if job.kind in ("notify", "broadcast"):
        return await run_notify(delivery, job)
    if job.kind == "beginDialog":
        return await begin_dialog(delivery, job)
    if job.kind == "replies":
        return await send_pending_replies(delivery, job)
    if job.kind == "reminder":
        due = await delivery.reminders.add(delivery.ledger, delivery.jobs, job)
        return f"reminder {job.id} due {due.isoformat()}"
    if job.kind in ("update", "delete"):
        return await run_revision(delivery, job)
    raise JobError(f"job kind {job.kind!r} has no handler")  # parse_job admits only the kinds above


async def _give_up(delivery: DeliveryContext, job: Job, exc: Exception) -> None:
    """Mark a job that can no longer succeed as failed, so that its status ends (best effort: the storage that
    made it fail may be what is down)."""
    if isinstance(exc, IdConflictError):
        return  # the header with that id belongs to the other job
    try:
        await delivery.ledger.fail_job(job, _status_error(exc))
    except Exception:
        log.exception("job %s failed for good, and its status could not say so", job.id)


def _status_error(exc: Exception) -> str:
    """Why a job failed, as its status says it to whoever asks: what was wrong with a job that can never
    work, else fixed words (the error itself may name a storage host or an SDK's exception; the log has it)."""
    if isinstance(exc, BadInputError):
        return str(exc)
    if isinstance(exc, UnavailableError):
        return f"a service the bot depends on was unavailable; given up after {MAX_DEQUEUE_COUNT} attempts"
    return f"given up after {MAX_DEQUEUE_COUNT} attempts; the log says why"


async def handle_send_message(
    body: bytes, message_id: str = "", dequeue_count: int = 1, traceparent: str | None = None
) -> str:
    """Deliver one message from the sends queue: a send batch, a revision batch, or a pack of reminders. It
    continues the trace context it carries, else the invocation's (`traceparent`, the Functions host's)."""
    delivery = bot_for().delivery
    attributes: dict[str, AttributeValue] = {"messaging.message.id": message_id, "bot.dequeue_count": dequeue_count}
    try:
        batch = parse_sends_message(body)
    except JobError as exc:
        with telemetry.invocation("sends message", None, traceparent, attributes):
            await poison(SENDS_QUEUE, body, f"message {message_id}: {exc}")
        return "poisoned"
    name, described = _described(batch)
    with telemetry.invocation(name, batch.traceparent, traceparent, {**attributes, **described}):
        try:
            if isinstance(batch, SendBatch):
                return await run_send_batch(delivery, batch)
            if isinstance(batch, RevisionBatch):
                return await run_revision_batch(delivery, batch)
            return await run_pack(delivery, batch)
        except Exception as exc:
            if not _hopeless(exc):
                if dequeue_count >= MAX_DEQUEUE_COUNT and isinstance(batch, SendBatch):
                    await abandon_batch(delivery, batch, f"{type(exc).__name__}: {exc}")
                raise
            await poison(SENDS_QUEUE, body, f"message {message_id}: {exc}")
            return "poisoned"


def _described(message: SendBatch | RevisionBatch | PackMessage) -> tuple[str, dict[str, AttributeValue]]:
    """A sends-queue message's span: its name and attributes."""
    if isinstance(message, SendBatch):
        pace = batch_pace(message)
        return "send batch", {
            "bot.job.id": message.job,
            "bot.batch.id": message.id,
            "bot.batch.size": len(message.items),
            "bot.batch.attempt": message.attempt,
            "bot.pace_key": pace,
        }
    if isinstance(message, RevisionBatch):
        return "revision batch", {"bot.job.id": message.job, "bot.batch.attempt": message.attempt}
    return "reminder pack", {"bot.pack.id": message.pack}


async def fire_reminders(traceparent: str | None = None) -> int:
    """The timer: send the reminders due before its next run on their way, to arrive at their second. Its trace
    continues the invocation's (`traceparent`), and so do the jobs and packs it sends."""
    delivery = bot_for().delivery
    with telemetry.invocation("reminder timer", None, traceparent):
        return await delivery.reminders.fire_due(delivery)


async def expire_records() -> RetentionReport:
    """The retention timer: one bounded pass deleting what delivery keeps of work finished BotLedgerRetentionDays
    ago (it logs what it did, and the storage calls it made)."""
    return await run_retention(bot_for().delivery)


async def poison(queue: str, body: bytes, reason: str) -> None:
    """Move a message the app can never process to `<queue>-poison`, keeping its body."""
    log.error("poison: %s", reason)
    await get_queue(f"{queue}-poison").send(body.decode("utf-8", "replace"))
