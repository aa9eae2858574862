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
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..jobs import Job
from ..loops import together
from ..protocol.activity import ConversationReference
from ..state.conversations import Address
from ..storage import MAX_PAGE, EntityChangedError
from .batches import SendBatch
from .ledger import Delivered, JobHeader, Status
from .pacing import Slot, pace_key
from .plan import SentAtOnce, enqueue_reserved, reserve_paced, save_page
from .reminders import wait_until_due
from .rosters import fan_out_team
from .send import deliver

if TYPE_CHECKING:
    from .context import DeliveryContext

log = logging.getLogger(__name__)

# Conversations a page plans together (two queries): each page costs the fan-out a calendar write per pace key,
# its batches' puts and a cursor save, so fuller pages plan more references per request. The job's first page is
# one query, so that the batches it starts at once wait for no second one.
PAGE_SIZE = 2 * MAX_PAGE
FIRST_PAGE = MAX_PAGE
PAGES_PER_INVOCATION = 6


async def run_notify(ctx: DeliveryContext, job: Job) -> str:
    """A notify or broadcast job from the jobs queue."""
    header = await ctx.ledger.open_job(job, seen=True)
    if header.fanned_out:
        return "duplicate"
    await wait_until_due(job)
    latest = await ctx.ledger.revision(job.id)
    if latest is not None and latest.deletes:  # deleted before it was (all) sent: what is left stays unsent
        header.fanned_out = True
        await ctx.ledger.save_progress(header)
        log.info(
            "job %s was deleted (by job %s) before its fan-out ended; %d targets were fanned out",
            job.id,
            latest.id,
            header.targets,
        )
        return "deleted"
    if job.target.team is not None:
        return await fan_out_team(ctx, job, header)
    if not job.is_selection:
        return await _notify_one(ctx, job, header)
    return await _fan_out(ctx, job, header)


async def _notify_one(ctx: DeliveryContext, job: Job, header: JobHeader) -> str:
    key = job.target.conversation
    assert key is not None
    record = await ctx.conversations.get(key)
    if record is None or not record.active:
        await ctx.ledger.skip_unreachable(job.id, key, record, header=header)
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


async def _fan_out(ctx: DeliveryContext, job: Job, header: JobHeader) -> str:
    async with SentAtOnce(ctx, job) as at_once:
        return await _fan_out_pages(ctx, job, header, at_once)


async def _fan_out_pages(ctx: DeliveryContext, job: Job, header: JobHeader, at_once: SentAtOnce) -> str:
    """The selection's pages in a pipeline: a page's slots are reserved while the page before goes on the sends
    queue and has its cursor saved, and while the next page is read (after the invocation's first page, once its
    slots are reserved). A page's batches are put only after the page before it is saved, so at most one page's
    batches lie beyond the saved cursor."""
    t = job.target
    pages = _ReadAhead(
        ctx, ctx.conversations.selection_filter(channel_id=t.channel_id, tenant_id=t.tenant_id, user_id=t.user_id)
    )
    pages.read(header.cursor)
    planned = header.targets  # conversations fanned out before this page: its batches' names start with it
    queuing: asyncio.Task[str | None] | None = None
    try:
        for page in range(PAGES_PER_INVOCATION):
            addresses, token = await pages.take()
            more = bool(token) and page + 1 < PAGES_PER_INVOCATION
            if more and page:  # the next page read while this one is planned
                pages.read(token)
            reserved = await _reserve_page(ctx, addresses, at_once)
            if more and not page:  # behind the first page's reservations, whose batches may start at once: a
                pages.read(token)  # query keeps storage busy a while
            if queuing is not None and (stop := await queuing) is not None:
                return stop
            queuing = asyncio.create_task(
                _queue_page(ctx, job, header, at_once, reserved, planned, token, len(addresses))
            )
            planned += len(addresses)
            if not token:
                break
        assert queuing is not None
        if (stop := await queuing) is not None:
            return stop
    finally:
        await pages.close()
        if queuing is not None:  # a failure elsewhere: the page under way ends before the invocation does
            await asyncio.gather(queuing, return_exceptions=True)
    await ctx.jobs.send(job.to_json())  # the next pages, in a fresh invocation
    log.info("job %s: %d conversations so far; fan-out continues", job.id, header.targets)
    return "continuing"


class _ReadAhead:
    """The selection's pages, the next one read while the current one is planned (the cursor saved is still each
    page's own)."""

    def __init__(self, ctx: DeliveryContext, query: str | None) -> None:
        self.ctx, self.query = ctx, query
        self._next: asyncio.Task[tuple[list[Address], str | None]] | None = None

    def read(self, cursor: str | None) -> None:
        size = FIRST_PAGE if cursor is None else PAGE_SIZE  # the same pages on a redo from any saved cursor
        self._next = asyncio.ensure_future(self.ctx.conversations.addresses(self.query, cursor, size))

    async def take(self) -> tuple[list[Address], str | None]:
        assert self._next is not None
        following, self._next = self._next, None
        return await following

    async def close(self) -> None:
        """A read ahead no longer wanted (stopped early, or failed): cancelled, and its outcome taken."""
        if self._next is not None:
            self._next.cancel()
            await asyncio.gather(self._next, return_exceptions=True)


@dataclass
class _Reserved:
    """A page's conversations grouped by pace key, each group with its slots; and those no send can reach."""

    groups: dict[str, list[tuple[str, str]]]
    slots: list[Slot]
    undeliverable: dict[str, Delivered]


async def _reserve_page(ctx: DeliveryContext, addresses: list[Address], at_once: SentAtOnce) -> _Reserved:
    groups: dict[str, list[tuple[str, str]]] = {}
    undeliverable: dict[str, Delivered] = {}
    for address in addresses:
        try:
            reference = ConversationReference.bounded_json(address.reference)
        except (ValueError, RecursionError) as exc:  # ActivityError, or text that is not JSON
            undeliverable[address.key] = Delivered(Status.FAILED, error=f"stored reference unusable: {exc}")
            continue
        groups.setdefault(pace_key(address.channel_id, address.tenant_id), []).append((address.key, reference))
    # Each pace key's calendar row is its own, so the groups reserve together (a round trip each, not one
    # after another), in the order of their keys.
    groups = dict(sorted(groups.items()))
    slots = await together(reserve_paced(ctx, pace, len(items), at_once) for pace, items in groups.items())
    return _Reserved(groups, slots, undeliverable)


async def _queue_page(
    ctx: DeliveryContext,
    job: Job,
    header: JobHeader,
    at_once: SentAtOnce,
    page: _Reserved,
    planned: int,
    token: str | None,
    count: int,
) -> str | None:
    """Put a reserved page's batches on the sends queue and save the fan-out's progress past it; the
    invocation's result when it stops here. Batches are named by their place in the fan-out (`planned`, the
    conversations before this page), which the saved cursor makes the same on a redo."""
    await together(
        enqueue_reserved(ctx, job.id, pace, items, f"{planned}.{number}.", slot, at_once)
        for number, ((pace, items), slot) in enumerate(zip(page.groups.items(), page.slots, strict=True))
    )
    if page.undeliverable:
        log.error(
            "job %s: %d conversations cannot be sent to: %s",
            job.id,
            len(page.undeliverable),
            "; ".join(f"{k}: {d.error}" for k, d in list(page.undeliverable.items())[:3]),
        )
        await ctx.ledger.record_undeliverable(job.id, f"{planned}.u", page.undeliverable)
    return await save_page(ctx, job, header, token, count)
