"""Planning send batches: each batch's slots reserved in its pace key's calendar and the batch put on the
sends queue made visible just before them; a fan-out's progress saved page by page. Selections (fanout.py)
and team rosters (rosters.py) plan their batches here."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import TYPE_CHECKING

from ..jobs import Job
from ..storage import EntityChangedError
from .batches import SendBatch, pack
from .ledger import JobHeader
from .pacing import LEAD, START_LEAD, Slot
from .send import deliver

if TYPE_CHECKING:
    from .context import DeliveryContext

log = logging.getLogger(__name__)


class SentAtOnce:
    """The send batches a fan-out sends in its own invocation, which ends only once they have."""

    def __init__(self, ctx: DeliveryContext, job: Job) -> None:
        self.ctx, self.job = ctx, job
        self._tasks: list[asyncio.Task[object]] = []

    def start(self, batch: SendBatch) -> None:
        self._tasks.append(asyncio.create_task(deliver(self.ctx, self.job, batch)))

    async def __aenter__(self) -> SentAtOnce:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        for result in await asyncio.gather(*self._tasks, return_exceptions=True):
            if isinstance(result, BaseException):  # its queued copy sends what it did not
                log.warning(
                    "job %s: a batch sent at once stopped (%r); its queued copy takes over", self.job.id, result
                )


async def save_page(ctx: DeliveryContext, job: Job, header: JobHeader, cursor: str | None, count: int) -> str | None:
    """Record that a page of `count` targets is fanned out, up to `cursor`; the invocation's result when it
    stops here (the fan-out is complete, or another worker is doing it), else None."""
    header.cursor, header.targets, header.fanned_out = cursor, header.targets + count, not cursor
    if header.fanned_out and not header.targets and not header.warning:  # a typo must not look like success
        header.warning = f"no stored conversation matches the target {json.dumps(job.target.to_dict())}"
        log.warning("job %s: %s", job.id, header.warning)
    try:
        await ctx.ledger.save_progress(header)
    except EntityChangedError:
        log.warning("job %s: another worker is fanning out this job; leaving it to that one", job.id)
        return "duplicate"
    if header.fanned_out:
        log.info("job %s: fanned out to %d targets", job.id, header.targets)
        return f"fanned out to {header.targets}"
    return None


async def enqueue_paced(
    ctx: DeliveryContext,
    job_id: str,
    pace: str,
    items: list[tuple[str, str]],
    id_prefix: str,
    at_once: SentAtOnce | None = None,
) -> None:
    """Send batches of (key, reference JSON) for one pace key, with a slot reserved for each conversation,
    each batch made visible just before its slot (`reserve_paced`, then `enqueue_reserved`)."""
    slot = await reserve_paced(ctx, pace, len(items), at_once)
    await enqueue_reserved(ctx, job_id, pace, items, id_prefix, slot, at_once)


async def reserve_paced(ctx: DeliveryContext, pace: str, requests: int, at_once: SentAtOnce | None) -> Slot:
    """Slots for `requests` sends of one pace key: from now (START_LEAD) when sent at once, else from the time
    a queued batch takes to be picked up (LEAD), and after whatever the key's calendar gave out already."""
    return await ctx.pacing.reserve(pace, requests, lead=START_LEAD if at_once else LEAD)


async def enqueue_reserved(
    ctx: DeliveryContext,
    job_id: str,
    pace: str,
    items: list[tuple[str, str]],
    id_prefix: str,
    slot: Slot,
    at_once: SentAtOnce | None = None,
) -> None:
    """Put the batches of `items` on the sends queue, each made visible just before its part of `slot`.

    With `at_once`, when the slots start now, the first batch starts in this invocation while the others go on
    the queue; its queued copy is made visible only once a claim on it would have lapsed, so it sends only what
    this invocation could not."""
    now = time.time()
    messages = [(m, s) for m, s in pack(job_id, items, id_prefix=id_prefix, pace=pace, slot=slot) if s is not None]
    delays = [batch_slot.visibility(now) for _, batch_slot in messages]
    if at_once is not None and slot.start - now < LEAD:
        at_once.start(SendBatch.parse(messages[0][0]))
        delays[0] += ctx.settings.delivery_claim_seconds
    await asyncio.gather(
        *(ctx.sends.send(message, delay=delay) for (message, _), delay in zip(messages, delays, strict=True))
    )
