"""What the queue-triggered functions do with one message: the queue edge of botcore's errors.

Every failure ends one of three ways (botcore.errors): bad input or a permanent conflict goes to
the poison queue at once, since retrying cannot fix it; anything else raises, so that the host
retries the message; and when the host's last attempt (MAX_DEQUEUE_COUNT) fails too, the job's
status says so before the host moves the message to poison, so that no status waits forever.
"""

from __future__ import annotations

import logging
from typing import Any

from .errors import BadInputError, ConflictError, UnavailableError
from .delivery.jobs import Job, JobError, parse_job
from .settings import JOBS_QUEUE, MAX_DEQUEUE_COUNT, SENDS_QUEUE, Settings, get_settings

log = logging.getLogger(__name__)


async def handle_job_message(body: bytes, message_id: str = "", dequeue_count: int = 1,
                             settings: Settings | None = None) -> str:
    """Run one job from the jobs queue; returns a short outcome for the log."""
    job: Job | None = None
    try:
        job = parse_job(body)
        return await _run_job(job, settings or get_settings())
    except Exception as exc:
        hopeless = _hopeless(exc)
        if job is not None and (hopeless or dequeue_count >= MAX_DEQUEUE_COUNT):
            await _give_up(job, exc)
        if not hopeless:
            raise  # the host retries the message
        await poison(JOBS_QUEUE, body, f"message {message_id}: {exc}")
        return "poisoned"


def _hopeless(exc: Exception) -> bool:
    """Whether retrying a message cannot help: bad input, or a conflict that will not go away."""
    return isinstance(exc, BadInputError) or isinstance(exc, ConflictError) and exc.permanent


async def _give_up(job: Job, exc: Exception) -> None:
    """Mark a notify job that can no longer succeed as failed, so that its status ends (best effort:
    the storage that made it fail may be what is down)."""
    from .delivery.ledger import DeliveryLedger, IdConflictError

    if job.kind not in ("notify", "broadcast", "reminder") or isinstance(exc, IdConflictError):
        return  # no status of its own (an IdConflictError's header belongs to the other job)
    try:
        await DeliveryLedger().fail_job(job, f"{type(exc).__name__}: {exc}")
    except Exception:
        log.exception("job %s failed for good, and its status could not say so", job.id)


async def _run_job(job: Job, settings: Settings) -> str:
    if job.kind in ("notify", "broadcast"):
        from .delivery.broadcast import run_notify

        return await run_notify(job, settings)
    if job.kind == "beginDialog":
        return await begin_dialog(job, settings)
    if job.kind == "replies":
        return await send_pending_replies(job, settings)
    if job.kind == "reminder":
        from .delivery.reminders import ReminderStore

        await ReminderStore().add(job)
        return f"reminder {job.id} due {job.due}"
    from .delivery.revise import revise

    return await revise(job, settings)


async def handle_send_message(body: bytes, message_id: str = "", dequeue_count: int = 1,
                              settings: Settings | None = None) -> str:
    """Deliver one batch from the sends queue."""
    from .delivery.broadcast import SendBatch, abandon_batch, run_send_batch

    settings = settings or get_settings()
    try:
        return await run_send_batch(body, settings)
    except Exception as exc:
        if not _hopeless(exc):
            if dequeue_count >= MAX_DEQUEUE_COUNT:
                await abandon_batch(SendBatch.parse(body), f"{type(exc).__name__}: {exc}")
            raise
        await poison(SENDS_QUEUE, body, f"message {message_id}: {exc}")
        return "poisoned"


async def poison(queue: str, body: bytes, reason: str) -> None:
    """Move a message the app can never process to `<queue>-poison`, keeping its body."""
    from .storage import get_queue

    log.error("poison: %s", reason)
    await get_queue(f"{queue}-poison").send(body.decode("utf-8", "replace"))


async def begin_dialog(job: Job, settings: Settings) -> str:
    """Start a dialog proactively: push it, commit, then send its first messages.

    The messages are written to the delivery ledger before the state commits, so
    a send that fails after the commit is retried by the redelivered job instead
    of being lost (the job id in the state keeps the dialog from starting twice).
    """
    from .delivery.ledger import DeliveryLedger
    from .state.turns import run_dialog_turn, services, turn_info

    svc = services(settings)
    if job.dialog not in svc.engine.dialogs:
        raise JobError(f"job.dialog {job.dialog!r} names no dialog; known: {', '.join(sorted(svc.engine.dialogs))}")
    ledger = DeliveryLedger()
    key = job.target.conversation
    assert key is not None
    record = await svc.store.get(key)
    if record is None or not record.active:
        log.warning("job %s: conversation %s is %s; dialog %s not started", job.id, key,
                    "unknown" if record is None else "retired", job.dialog)
        return "skipped"
    info = turn_info(settings, record.reference.user.name if record.reference.user else None)

    async def keep_replies(result) -> None:
        if result.replies:
            await ledger.prepare(job.id, key, result.replies)

    result, record = await run_dialog_turn(
        svc, key,
        lambda state: svc.engine.begin_proactive(state, job.dialog, job_id=job.id, ctx_info=info),
        None, before_commit=keep_replies,
    )
    outcome = await deliver_prepared(svc, ledger, job.id, key, record.reference, settings)
    if outcome != "sent":
        return outcome
    return "started" if result.replies else "resent"


async def send_pending_replies(job: Job, settings: Settings) -> str:
    """A `replies` job: the replies of a committed turn that could not be sent at once."""
    from .delivery.ledger import DeliveryLedger
    from .state.turns import services

    svc = services(settings)
    key = job.target.conversation
    assert key is not None
    record = await svc.store.get(key)
    if record is None or not record.active:
        log.warning("job %s: conversation %s is %s; its pending replies are dropped", job.id, key,
                    "unknown" if record is None else "retired")
        return "skipped"
    return await deliver_prepared(svc, DeliveryLedger(), job.id, key, record.reference, settings)


async def deliver_prepared(svc: Any, ledger: Any, job_id: str, key: str, reference: Any, settings: Settings) -> str:
    """Send the messages kept in the ledger for (job, conversation) once: claim, send, record.

    A failure records the row as retrying and raises, so that the host retries the job's message.
    """
    from .delivery.broadcast import claim_ttl
    from .protocol.connector import ConversationGoneError
    from .delivery.ledger import FINAL, GONE, RETRYING, SENT, Outcome
    from .tablejson import join_json
    from .state.turns import send_reply

    row = await ledger.row(job_id, key)
    if row is None or row.get("status") in FINAL:
        return "duplicate"
    claims = await ledger.claim(job_id, [key], claim_ttl(settings))
    if key in claims.busy:  # a copy of this job is sending right now: look again later
        raise DeliveryBusyError(f"job {job_id}: another worker is sending to {key}; retrying later")
    if key in claims.done:
        return "duplicate"
    try:
        for message in join_json(row, "payload"):
            await send_reply(svc, reference, message, retry=True)
    except ConversationGoneError as exc:
        await ledger.record(job_id, [Outcome(key, GONE, exc.code or f"HTTP {exc.status}")], claims.claimed)
        await svc.store.retire(key, exc.code or f"HTTP {exc.status}")
        log.warning("job %s: conversation %s is gone (%s); reference retired", job_id, key, exc.code)
        return "retired"
    except Exception as exc:
        await ledger.record(job_id, [Outcome(key, RETRYING, f"{type(exc).__name__}: {exc}")], claims.claimed)
        raise
    await ledger.record(job_id, [Outcome(key, SENT)], claims.claimed)
    return "sent"


class DeliveryBusyError(UnavailableError):
    """Another invocation is delivering the same job right now; the host retries this one later."""
