"""A notify job: to one conversation directly, or fanned out to a selection or a team as send batches.

A selection (a user, a channel, a tenant, everyone) is paged through the stored references, a page at a
time so memory stays flat. Each page's conversations are grouped by pace key (their tenant, or their
channel) and packed into send batches; each group reserves its request slots in the pace calendar
(botcore.delivery.pacing), and each batch goes on the sends queue made visible just before its slot, so
whichever instance takes it sends at the tenant's pace. A group whose calendar is free starts at once:
its first batch is sent by the fan-out's own invocation, with no queue hop between the request and the
first message (its queued copy, made visible later, finds it done, or takes over if this invocation
stopped). The fan-out saves its cursor in the job's ledger header, so a crash resumes where it stopped,
and a long one continues in a fresh invocation.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING

from ..protocol.activity import ConversationReference
from ..storage import EntityChangedError
from .batches import SendBatch, pack
from ..jobs import Job
from .ledger import FAILED, GONE, Delivered, JobHeader, Outcome
from .pacing import LEAD, START_LEAD, pace_key
from .reminders import wait_until_due
from .send import deliver

if TYPE_CHECKING:
    from .context import DeliveryContext

log = logging.getLogger(__name__)

PAGE_SIZE = 500
PAGES_PER_INVOCATION = 20


async def run_notify(ctx: "DeliveryContext", job: Job) -> str:
    """A notify or broadcast job from the jobs queue."""
    header = await ctx.ledger.open_job(job)
    if header.fanned_out:
        return "duplicate"
    await wait_until_due(job)
    latest = await ctx.ledger.revision(job.id)
    if latest is not None and latest.deletes:  # deleted before it was (all) sent: what is left stays unsent
        header.fanned_out = True
        await ctx.ledger.save_progress(header)
        log.info("job %s was deleted (by job %s) before its fan-out ended; %d targets were fanned out", job.id,
                 latest.id, header.targets)
        return "deleted"
    if job.target.team is not None:
        from .rosters import fan_out_team

        return await fan_out_team(ctx, job, header)
    if not job.is_selection:
        return await _notify_one(ctx, job, header)
    return await _fan_out(ctx, job, header)


async def _notify_one(ctx: "DeliveryContext", job: Job, header: JobHeader) -> str:
    key = job.target.conversation
    assert key is not None
    record = await ctx.conversations.get(key)
    if record is None or not record.active:
        claims = await ctx.ledger.claim(job.id, [key])
        why = "unknown conversation" if record is None else f"retired: {record.retired_reason}"
        if key in claims.claimed:
            await ctx.ledger.record(job.id, [Outcome(key, GONE, why)], claims.claimed)
        log.warning("job %s: conversation %s is %s; nothing sent", job.id, key, why)
        outcome = "skipped"
    else:
        reference = record.reference
        batch = SendBatch(job.id, [(key, reference)], pace=pace_key(reference.channel_id, reference.tenant_id))
        outcome = (await deliver(ctx, job, batch)).summary()
    # Marked only after the delivery is claimed: a job redelivered after a crash before this line
    # delivers again, and the ledger's claim keeps that from sending twice.
    header.fanned_out, header.targets = True, 1
    try:
        await ctx.ledger.save_progress(header)
    except EntityChangedError:
        pass  # a copy of this job marked it first
    return outcome


class SentAtOnce:
    """The send batches a fan-out sends in its own invocation, which ends only once they have."""

    def __init__(self, ctx: "DeliveryContext", job: Job) -> None:
        self.ctx, self.job = ctx, job
        self._tasks: list[asyncio.Task[object]] = []

    def start(self, batch: SendBatch) -> None:
        self._tasks.append(asyncio.create_task(deliver(self.ctx, self.job, batch)))

    async def __aenter__(self) -> "SentAtOnce":
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        for result in await asyncio.gather(*self._tasks, return_exceptions=True):
            if isinstance(result, BaseException):  # its queued copy sends what it did not
                log.warning("job %s: a batch sent at once stopped (%r); its queued copy takes over", self.job.id,
                            result)


async def _fan_out(ctx: "DeliveryContext", job: Job, header: JobHeader) -> str:
    async with SentAtOnce(ctx, job) as at_once:
        return await _fan_out_pages(ctx, job, header, at_once)


async def _fan_out_pages(ctx: "DeliveryContext", job: Job, header: JobHeader, at_once: SentAtOnce) -> str:
    t = job.target
    query = ctx.conversations.selection_filter(channel_id=t.channel_id, tenant_id=t.tenant_id, user_id=t.user_id)
    for _ in range(PAGES_PER_INVOCATION):
        addresses, token = await ctx.conversations.addresses(query, header.cursor, PAGE_SIZE)
        groups: dict[str, list[tuple[str, str]]] = {}
        undeliverable: dict[str, Delivered] = {}
        for address in addresses:
            try:
                reference = ConversationReference.bounded_json(address.reference)
            except (ValueError, RecursionError) as exc:  # ActivityError, or text that is not JSON
                undeliverable[address.key] = Delivered(FAILED, error=f"stored reference unusable: {exc}")
                continue
            groups.setdefault(pace_key(address.channel_id, address.tenant_id), []).append((address.key, reference))
        # Named by their place in the fan-out, which the saved cursor makes the same on a redo.
        for number, pace in enumerate(sorted(groups)):
            await enqueue_paced(ctx, job.id, pace, groups[pace], f"{header.targets}.{number}.", at_once)
        if undeliverable:
            log.error("job %s: %d conversations cannot be sent to: %s", job.id, len(undeliverable),
                      "; ".join(f"{k}: {d.error}" for k, d in list(undeliverable.items())[:3]))
            await ctx.ledger.record_undeliverable(job.id, f"{header.targets}.u", undeliverable)
        stop = await save_page(ctx, job, header, token, len(addresses))
        if stop is not None:
            return stop
    await ctx.jobs.send(job.to_json())  # the next pages, in a fresh invocation
    log.info("job %s: %d conversations so far; fan-out continues", job.id, header.targets)
    return "continuing"


async def save_page(ctx: "DeliveryContext", job: Job, header: JobHeader, cursor: str | None, count: int) -> str | None:
    """Record that a page of `count` targets is fanned out, up to `cursor`; the invocation's result when it
    stops here (the fan-out is complete, or another worker is doing it), else None."""
    header.cursor, header.targets, header.fanned_out = cursor, header.targets + count, not cursor
    try:
        await ctx.ledger.save_progress(header)
    except EntityChangedError:
        log.warning("job %s: another worker is fanning out this job; leaving it to that one", job.id)
        return "duplicate"
    if header.fanned_out:
        log.info("job %s: fanned out to %d targets", job.id, header.targets)
        return f"fanned out to {header.targets}"
    return None


async def enqueue_paced(ctx: "DeliveryContext", job_id: str, pace: str, items: list[tuple[str, str]], id_prefix: str,
                        at_once: SentAtOnce | None = None) -> None:
    """Send batches of (key, reference JSON) for one pace key, with a slot reserved for each conversation,
    each batch made visible just before its slot.

    With `at_once`, when the key's calendar is free, the first batch's slots start now (START_LEAD) and the
    batch starts in this invocation while the others go on the queue; its queued copy is made visible only
    once a claim on it would have lapsed, so it sends only what this invocation could not."""
    slot = await ctx.pacing.reserve(pace, len(items), lead=START_LEAD if at_once else LEAD)
    now = time.time()
    messages = [(m, s) for m, s in pack(job_id, items, id_prefix=id_prefix, pace=pace, slot=slot) if s is not None]
    delays = [batch_slot.visibility(now) for _, batch_slot in messages]
    if at_once is not None and slot.start - now < LEAD:
        at_once.start(SendBatch.parse(messages[0][0]))
        delays[0] += ctx.settings.delivery_claim_seconds
    await asyncio.gather(*(ctx.sends.send(message, delay=delay) for (message, _), delay in zip(messages, delays)))
