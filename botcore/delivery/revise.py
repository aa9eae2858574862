"""Updating and deleting what a notification sent (docs/delivery.md, "Updating and deleting what was sent").

A revision (an update or delete job: PATCH or DELETE /api/notify/{id}, or the jobs queue) is first recorded
on the notification, numbered (ledger.register_revision). From then on every send of the notification
carries it (delivery.send): what is not sent yet goes out updated, or not at all after a delete.

What was sent before is revised row by row. The revision job goes through the notification's settled
delivery rows and puts a revision batch on the sends queue for each row with a message behind; a row still
being sent when the revision arrived is the sender's to report once settled (send._revise_if_behind). A
revision batch claims the row's revision row, reads the latest revision, and updates or deletes each message
still behind it, at the tenant's pace like sends. Every worker brings messages to the latest revision and
one worker at a time revises a row, so an older revision never overwrites a newer one.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import replace
from typing import TYPE_CHECKING

from ..jobs import Job, JobError
from ..storage import EntityChangedError
from .batches import RevisionBatch
from .ledger import REVISION_FINAL, BatchClaim, Delivered, Outcome, Status
from .pacing import RETRY_LEAD, Slot, pace_key
from .revisions import LatestRevision
from .send import BatchSlots, Report, failure, run_paced, slot_for

if TYPE_CHECKING:
    from collections.abc import Iterable

    from ..protocol.activity import ConversationReference, ServiceEndpoint
    from .context import DeliveryContext

log = logging.getLogger(__name__)

ROWS_PAGE = 100
PAGES_PER_INVOCATION = 20


async def run_revision(ctx: DeliveryContext, job: Job) -> str:
    """An update or delete job: record the revision, then have every settled row that is behind it revised.
    The pass's cursor is saved in the job's own header, so a long pass continues in a fresh invocation."""
    notification = job.notification
    assert notification is not None
    revision = await ctx.ledger.register_revision(job)
    latest = await ctx.ledger.revision(notification)
    if latest is not None and latest.number > revision.number:
        return f"superseded by revision {latest.number}"  # whose job revises everything to it
    header = await ctx.ledger.header(job.id)
    assert header is not None  # registering opened it
    if header.fanned_out:
        return "duplicate"
    for _ in range(PAGES_PER_INVOCATION):
        rows, cursor = await ctx.ledger.deliveries(notification, header.cursor, ROWS_PAGE)
        behind = [
            row.row_id
            for row in rows
            if row.settled
            and any(d.status == Status.SENT and d.activity_id and d.revision < revision.number for _, d in row.entries)
        ]
        await asyncio.gather(*(ctx.sends.send(RevisionBatch(notification, row).to_json()) for row in behind))
        header.cursor, header.fanned_out, header.targets = cursor, not cursor, header.targets + len(behind)
        try:
            await ctx.ledger.save_progress(header)
        except EntityChangedError:
            return "duplicate"  # another worker is going through the rows
        if header.fanned_out:
            log.info(
                "job %s: %s of notification %s (revision %d): %d rows to revise",
                job.id,
                job.kind,
                notification,
                revision.number,
                header.targets,
            )
            return f"revision {revision.number}: {header.targets} rows to revise"
    await ctx.jobs.send(job.to_json())  # the next rows, in a fresh invocation
    return "continuing"


async def run_revision_batch(ctx: DeliveryContext, batch: RevisionBatch) -> str:
    """Bring one delivery row's messages to the notification's latest revision."""
    job = await ctx.job_of(batch.job)
    if job is None:
        raise JobError(f"revision batch for job {batch.job}, which has no ledger header")
    latest = await ctx.ledger.revision(job.id)
    ctx.revisions.of(job.id).saw(latest)  # at least this one, for the requests below
    row = await ctx.ledger.delivery_row(job.id, batch.row)
    if latest is None or row is None or not row.settled:
        return "nothing to revise" if row is None or row.settled else "still sending (its sender asks for this again)"
    behind = {
        key: d.activity_id
        for key, d in row.entries
        if d.status == Status.SENT and d.activity_id and d.revision < latest.number
    }
    if not behind:
        return "up to date"
    records = dict(zip(behind, await asyncio.gather(*(ctx.conversations.get(key) for key in behind)), strict=True))
    references = {key: r.reference for key, r in records.items() if r is not None and r.active}
    slot: Slot | None = None
    if references:
        first = next(iter(references.values()))
        pace = pace_key(first.channel_id, first.tenant_id)

        async def requeue(later: Slot) -> None:  # the slots are kept: the batch comes back for them
            await ctx.sends.send(
                RevisionBatch(batch.job, batch.row, batch.attempt, later).to_json(),
                delay=later.visibility(time.time(), RETRY_LEAD),
            )

        slot = await slot_for(ctx, pace, batch.slot, len(references), requeue)
        if slot is None:
            return f"{len(references)} messages wait for their slots"
    claim = await ctx.ledger.claim_revision(job.id, batch.row)
    if claim is None:  # another worker is revising the row: look again once its claim may have lapsed
        await ctx.sends.send(batch.to_json(), delay=ctx.settings.delivery_claim_seconds / 4)
        return "busy"
    claims = _ClaimRevision(ctx, job, batch, claim, latest.number, list(behind))
    retired = [
        Outcome(key, Status.GONE, "the conversation is retired", attempted=False, revision=latest.number)
        for key in claims.attempts
        if key not in references
    ]
    for outcome in retired:
        del claims.attempts[outcome.key]
    outcomes = retired
    not_before = time.time()
    unwritten = retired
    if claims.attempts:
        assert slot is not None  # every key left has a reference
        run = await run_paced(
            ctx,
            job.id,
            claims,
            _Revise(ctx, job, references, behind),
            BatchSlots(ctx, job.id, pace, slot, len(references)),
        )
        outcomes, unwritten, not_before = [*run.outcomes, *retired], [*run.unwritten, *retired], run.not_before
    for o in outcomes:
        if o.status == Status.GONE and o.attempted:
            await ctx.conversations.retire(o.key, o.error)
    retrying = await claims.hand_on(outcomes, unwritten, not_before)
    revised = sum(o.status in (Status.UPDATED, Status.DELETED) for o in outcomes)
    gone = sum(o.status == Status.GONE for o in outcomes)
    failed = len(outcomes) - revised - gone - retrying
    return (
        f"revision {latest.number}: revised {revised}, gone {gone}, failed {failed}, retrying {retrying}, "
        f"already done {claims.done_before}"
    )


class _ClaimRevision:
    """Claims for a revision batch: the row's revision row, held while its messages are revised and released
    after, so that a later revision claims it again."""

    def __init__(
        self, ctx: DeliveryContext, job: Job, batch: RevisionBatch, claim: BatchClaim, number: int, keys: list[str]
    ) -> None:
        self.ctx, self.job, self.batch, self.claim = ctx, job, batch, claim
        done = {k for k, d in claim.outcomes.items() if d.revision >= number and d.status in REVISION_FINAL}
        self.attempts = {k: _attempts(claim.outcomes.get(k), number) for k in keys if k not in done}
        self.done_before = len(keys) - len(self.attempts)

    async def take(self) -> Report | None:
        return None  # claimed before the run

    def _apply(self, outcomes: list[Outcome]) -> None:
        for o in outcomes:
            self.claim.outcomes[o.key] = Delivered(
                o.status, o.activity_id, o.error, self.attempts.get(o.key, 0) + o.attempted, o.revision
            )

    async def write(self, outcomes: list[Outcome]) -> None:
        self._apply(outcomes)
        await self.ctx.ledger.record_revision(self.job.id, self.claim)

    async def hand_on(self, outcomes: list[Outcome], unwritten: list[Outcome], not_before: float) -> int:
        """Write the last outcomes, put what must be tried again on the queue, and release the row. The retry
        goes on the queue before the release: a crash in between leaves the claim to lapse, never a row whose
        retries nobody will make."""
        self._apply(unwritten)
        retrying = sum(o.status == Status.RETRYING for o in outcomes)
        if retrying:
            await self.ctx.ledger.record_revision(self.job.id, self.claim)
            retry = RevisionBatch(self.batch.job, self.batch.row, self.batch.attempt + 1)  # takes new slots
            await self.ctx.sends.send(retry.to_json(), delay=max(0.0, not_before - time.time()))
        await self.ctx.ledger.record_revision(self.job.id, self.claim, release=True)
        return retrying


def _attempts(done: Delivered | None, number: int) -> int:
    """Attempts a message has used at this revision (a newer revision starts again from none)."""
    return done.attempts if done is not None and done.revision >= number else 0


class _Revise:
    """A revision batch's work: update each message to the latest revision, or delete it."""

    def __init__(
        self, ctx: DeliveryContext, job: Job, references: dict[str, ConversationReference], activity_ids: dict[str, str]
    ) -> None:
        self.ctx, self.job, self.references, self.activity_ids = ctx, job, references, activity_ids
        self.revision = LatestRevision(ctx.revisions.of(job.id))

    def conversation(self, key: str) -> str:
        return key

    def endpoints(self) -> Iterable[ServiceEndpoint]:
        return (r.endpoint for r in self.references.values())

    async def before(self, key: str) -> Outcome | None:
        await self.revision.get()  # a newer revision arrived: it is what the next requests bring
        return None

    async def act(self, key: str, attempts: int) -> Outcome:
        latest = self.revision.known
        assert latest is not None  # revisions are never removed
        reference, activity_id = self.references[key], self.activity_ids[key]
        try:
            if latest.deletes:
                await self.ctx.connector.delete_activity(
                    reference.endpoint, reference.conversation.id, activity_id, retry=False
                )
            else:
                activity = reference.outgoing(**latest.content)
                activity["id"] = activity_id
                await self.ctx.connector.update_activity(
                    reference.endpoint, reference.conversation.id, activity_id, activity, retry=False
                )
        except Exception as exc:
            return replace(failure(self.ctx, self.job.id, key, exc, attempts, latest.kind), revision=latest.number)
        return Outcome(
            key, Status.DELETED if latest.deletes else Status.UPDATED, activity_id=activity_id, revision=latest.number
        )
