"""The jobs queue: what a queue-triggered invocation does with one message.

Outcomes are explicit: a malformed job is moved to the poison queue at once
(retrying cannot fix it), a job for an unknown or retired conversation is logged
and dropped, a transient failure raises so the host retries the message later.
"""

from __future__ import annotations

import logging

from .jobs import Job, JobError, parse_job
from .settings import JOBS_QUEUE, Settings, get_settings

log = logging.getLogger("botcore.worker")


async def handle_job_message(body: bytes, message_id: str = "", settings: Settings | None = None) -> str:
    """Run one job; returns a short outcome word for logs and tests."""
    settings = settings or get_settings()
    try:
        job = parse_job(body)
    except JobError as exc:
        await poison(JOBS_QUEUE, body, f"message {message_id}: {exc}")
        return "poisoned"
    if job.kind == "beginDialog":
        return await begin_dialog(job, settings)
    if job.kind == "notify" and job.target.conversation:
        return await notify_conversation(job, settings)
    await poison(JOBS_QUEUE, body, f"job {job.id}: kind {job.kind} with this target is not supported")
    return "poisoned"


async def poison(queue: str, body: bytes, reason: str) -> None:
    """Move a message the app can never process to `<queue>-poison`, keeping its body."""
    from .storage import get_queue_client

    log.error("poison: %s", reason)
    await get_queue_client(f"{queue}-poison").send_message(body.decode("utf-8", "replace"))


async def begin_dialog(job: Job, settings: Settings) -> str:
    from .connector import ConversationGoneError
    from .turns import _turn_info, run_dialog_turn, send_replies, services

    svc = services(settings)
    key = job.target.conversation
    assert key is not None
    record = await svc.store.get(key)
    if record is None or not record.active:
        log.warning("job %s: conversation %s is %s; dialog %s not started", job.id, key,
                    "unknown" if record is None else "retired", job.dialog)
        return "skipped"
    info = _turn_info(settings, record.reference.user.name if record.reference.user else None)
    result, record = await run_dialog_turn(
        svc, key,
        lambda state: svc.engine.begin_proactive(state, job.dialog, job_id=job.id, ctx_info=info),
        None,
    )
    try:
        await send_replies(svc, record.reference, result.replies)
    except ConversationGoneError as exc:
        await svc.store.retire(key, exc.code or f"HTTP {exc.status}")
        log.warning("job %s: conversation %s is gone (%s); reference retired", job.id, key, exc.code)
        return "retired"
    return "started" if result.replies else "duplicate"


async def notify_conversation(job: Job, settings: Settings) -> str:
    from .connector import ConversationGoneError
    from .turns import send_replies, services

    svc = services(settings)
    key = job.target.conversation
    assert key is not None
    record = await svc.store.get(key)
    if record is None or not record.active:
        log.warning("job %s: conversation %s is %s; nothing sent", job.id, key,
                    "unknown" if record is None else "retired")
        return "skipped"
    reply = {"text": job.text, "attachments": job.attachments or None}
    try:
        await send_replies(svc, record.reference, [reply])
    except ConversationGoneError as exc:
        await svc.store.retire(key, exc.code or f"HTTP {exc.status}")
        return "retired"
    return "sent"
