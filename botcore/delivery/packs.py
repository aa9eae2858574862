"""Reminders due together, sent in packs (docs/delivery.md, "Reminders").

A reminder sent as a job of its own costs its instance a dozen storage calls at its second, so a thousand
due in one second would arrive over many. The minute timer therefore does the work ahead, while the
reminders are still some seconds off: for the one-conversation reminders it fires, it reads each
conversation's reference, points each reminder's job at its pack and reads its latest revision, and keeps up
to PACK_SIZE of them in one pack row. The pack's message goes on the sends queue made visible just before
the first is due. At their second, whichever instance takes the pack sends each reminder and records the
outcomes in the pack row a few at a time, like a send batch. A later run of the pack (SETTLE_AFTER) writes
each reminder's outcome to its job, where its status and its revisions look for it: a storage call per
reminder, kept out of the second the sends need.

A pack sends across tenants. A pace key with more than FREE_PER_KEY reminders in the pack takes its slots in
the pace calendar; fewer go inside the share of the limit the calendar leaves free (pacing.SLOT_SHARE), so
that a thousand tenants' reminders cost no thousand calendar writes at their second.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from typing import TYPE_CHECKING

from ..jobs import Job, due_time
from ..protocol.activity import ConversationReference
from .batches import PackMessage, RevisionBatch, SendBatch
from .ledger import PACK_BATCH, BatchClaim, Delivered, Outcome, PackItem, Revision, Status
from .pacing import LEAD, START_LEAD, Slot, pace_key
from .send import MAX_INLINE_WAIT, Report, failure, run_paced

if TYPE_CHECKING:
    from collections.abc import Iterable

    from ..protocol.activity import ServiceEndpoint
    from ..state.conversations import ConversationRecord
    from .context import DeliveryContext

log = logging.getLogger(__name__)

PACK_SIZE = 100
PACK_CHARS = 350_000  # what one pack row holds (tablejson: 390,000 characters)
PACK_SPAN = 1.0  # seconds between a pack's first reminder and its last (its run waits for them)
FREE_PER_KEY = 2  # reminders of one pace key a pack sends outside the calendar (within its free share)
AT_ONCE = 16  # storage calls at once while packing and settling
MARKS_REFRESH = 0.5  # seconds a running pack trusts the revision marks it read
SETTLE_AFTER = 5.0  # seconds after its sends that a pack writes its outcomes to its reminders' jobs


def packable(job: Job) -> bool:
    """A notify to one conversation: what a pack sends. Selections and teams fan out as jobs."""
    return job.kind == "notify" and job.target.conversation is not None


async def pack(ctx: DeliveryContext, jobs: list[Job]) -> list[Job]:
    """Pack reminders (in due order) whose conversation is known and active; returns the rest, to be sent as
    jobs of their own (which say why a conversation is unknown)."""
    gate = asyncio.Semaphore(AT_ONCE)

    async def record(job: Job) -> ConversationRecord | None:
        async with gate:
            assert job.target.conversation is not None
            return await ctx.conversations.get(job.target.conversation)

    records = await asyncio.gather(*(record(job) for job in jobs))
    rest = [job for job, r in zip(jobs, records, strict=True) if r is None or not r.active]
    known = [(job, r) for job, r in zip(jobs, records, strict=True) if r is not None and r.active]
    sizes = [len(r.reference.to_json()) + len(json.dumps(job.content())) for job, r in known]
    for members in group([due_time(job).timestamp() for job, _ in known], sizes):
        await _write_pack(ctx, [known[i] for i in members], gate)
    return rest


def group(dues: list[float], sizes: list[int]) -> list[list[int]]:
    """Reminders (their due times, in due order, and the characters each takes in a pack row) grouped into
    packs, as indexes: at most PACK_SIZE reminders and PACK_CHARS characters a pack, each due within PACK_SPAN
    of its pack's first. A pack runs when its first is due and waits in its run for the others: one due later
    than a run may wait (send.MAX_INLINE_WAIT) would be handed on as a job of its own, the costly path packs
    exist to avoid."""
    packs: list[list[int]] = []
    chars = first = 0.0
    for index, (due, size) in enumerate(zip(dues, sizes, strict=True)):
        if not packs or len(packs[-1]) >= PACK_SIZE or chars + size > PACK_CHARS or due - first > PACK_SPAN:
            packs.append([])
            chars, first = 0.0, due
        packs[-1].append(index)
        chars += size
    return packs


async def _write_pack(
    ctx: DeliveryContext, members: list[tuple[Job, ConversationRecord]], gate: asyncio.Semaphore
) -> None:
    """Point each reminder's job at the pack, then read its latest revision: a revision registered meanwhile
    reads the pointer after writing itself (ledger.register_revision), so one of the two sees the other."""
    pack_id = f"rp{uuid.uuid4().hex}"

    async def item(job: Job, record: ConversationRecord) -> PackItem:
        async with gate:
            await ctx.ledger.packed(job.id, pack_id)
            revision = await ctx.ledger.revision(job.id)
        return PackItem(
            job.id, record.key, record.reference.to_json(), job.content(), due_time(job).timestamp(), revision
        )

    items = await asyncio.gather(*(item(job, record) for job, record in members))
    await ctx.ledger.write_pack(pack_id, items)
    await enqueue(ctx, PackMessage(pack_id, min(i.due for i in items)))
    log.info("pack %s: %d reminders, the first due at %.3f", pack_id, len(items), min(i.due for i in items))


async def enqueue(ctx: DeliveryContext, message: PackMessage) -> None:
    await ctx.sends.send(message.to_json(), delay=max(0.0, message.first_due - LEAD - time.time()))


async def resume(ctx: DeliveryContext, job: Job) -> bool:
    """A reminder a stopped timer was firing: True when its pack exists (its message is put on the queue again:
    the pack's claim sends it once), False when it must be packed afresh."""
    header = await ctx.ledger.header(job.id)
    if header is None or not header.pack:
        return False
    items = await ctx.ledger.pack_items(header.pack)
    if items is None:
        return False
    await enqueue(ctx, PackMessage(header.pack, min(i.due for i in items)))
    return True


async def run_pack(ctx: DeliveryContext, message: PackMessage) -> str:
    """Send a pack's reminders, each at its second; then, in a later run (SETTLE_AFTER), write each outcome to
    its reminder's job. The writes cost a storage call a reminder: kept out of the second the sends need."""
    items = await ctx.ledger.pack_items(message.pack)
    if items is None:
        return f"pack {message.pack}: no such pack"
    if message.first_due - time.time() > MAX_INLINE_WAIT:  # the queue let it out early: back until then
        await enqueue(ctx, message)
        return f"pack {message.pack}: early"
    # A second early at most (a queue delay is whole seconds, rounded down): wait for the time it was meant to
    # run, so that its last reminder (PACK_SPAN after its first) is still within a run's wait.
    await asyncio.sleep(max(0.0, message.first_due - LEAD - time.time()))
    claim = await ctx.ledger.claim_batch(message.pack, PACK_BATCH)
    if claim is None:  # another worker is sending it: look again once its claim may have lapsed
        await ctx.sends.send(message.to_json(), delay=ctx.settings.delivery_claim_seconds / 4)
        return f"pack {message.pack}: busy"
    if claim.done:
        return f"pack {message.pack}: already done"
    references = {i.job: ConversationReference.from_dict(json.loads(i.reference)) for i in items}
    claims = _ClaimPack(ctx, message.pack, claim, items, references)
    if not claims.attempts:  # every reminder has its outcome: write them where their jobs look
        await claims.settle()
        return f"pack {message.pack} of {len(items)}: settled"
    slots = _PackSlots(ctx, items, references)
    await slots.reserve([i for i in items if i.job in claims.attempts])
    run = await run_paced(ctx, message.pack, claims, _PackSend(ctx, message.pack, items, references), slots)
    by_job = {i.job: i for i in items}
    for o in run.outcomes:
        if o.status == Status.GONE:
            await ctx.conversations.retire(by_job[o.key].key, o.error)
    retrying = await claims.hand_on(run.outcomes, run.unwritten, run.not_before)
    await ctx.sends.send(message.to_json(), delay=SETTLE_AFTER)  # before the release: a crash leaves the claim
    await ctx.ledger.record_batch(message.pack, claim, release=True)
    report = Report(
        sent=sum(o.status == Status.SENT for o in run.outcomes),
        gone=sum(o.status == Status.GONE for o in run.outcomes),
        failed=sum(o.status not in (Status.SENT, Status.GONE, Status.RETRYING, Status.CANCELLED) for o in run.outcomes),
        retrying=retrying,
        done_before=claims.done_before,
        cancelled=sum(o.status == Status.CANCELLED for o in run.outcomes),
    )
    return f"pack {message.pack} of {len(items)}: " + report.summary()


class _PackSlots:
    """Each reminder at its second; a pace key with more than FREE_PER_KEY of them takes slots in the
    calendar, and its reminders go at the later of their second and their slot."""

    def __init__(
        self, ctx: DeliveryContext, items: list[PackItem], references: dict[str, ConversationReference]
    ) -> None:
        self.ctx = ctx
        self.items = {i.job: i for i in items}
        self.paces = {job: _pace(r) for job, r in references.items()}
        self.starts = {i.job: i.due for i in items}

    async def reserve(self, items: list[PackItem]) -> None:
        by_pace: dict[str, list[PackItem]] = {}
        for item in items:
            by_pace.setdefault(self.paces[item.job], []).append(item)
        for pace, members in by_pace.items():
            if len(members) > FREE_PER_KEY:
                first = min(i.due for i in members)
                block = await self.ctx.pacing.reserve(pace, len(members), lead=max(START_LEAD, first - time.time()))
                for index, item in enumerate(sorted(members, key=lambda i: i.due)):
                    self.starts[item.job] = max(item.due, block.at(index))

    def pace(self, key: str) -> str:
        return self.paces[key]

    def interval(self, key: str) -> float:
        return self.ctx.guard.interval

    def overrun(self, at: float, now: float) -> bool:
        return False  # late, a reminder still goes (the guard keeps its key's spacing)

    def unrecorded(self, cap: int) -> int:
        return cap  # reminders of many keys, due together: as many at once as the instance sends

    async def at(self, index: int, key: str, now: float, remaining: int) -> float:
        return max(self.starts[key], now)  # late, it still goes: a reminder is better late than handed on


def _pace(reference: ConversationReference) -> str:
    return pace_key(reference.channel_id, reference.tenant_id)


class _ClaimPack:
    """The pack's row, claimed like a send batch, with its outcomes keyed by reminder."""

    def __init__(
        self,
        ctx: DeliveryContext,
        pack_id: str,
        claim: BatchClaim,
        items: list[PackItem],
        references: dict[str, ConversationReference],
    ) -> None:
        self.ctx, self.pack_id, self.claim = ctx, pack_id, claim
        self.items, self.references = {i.job: i for i in items}, references
        ordered = sorted(items, key=lambda i: i.due)
        self.attempts = {i.job: 0 for i in ordered if i.job not in claim.outcomes}
        self.done_before = len(items) - len(self.attempts)
        self.gate = asyncio.Semaphore(AT_ONCE)

    async def take(self) -> Report | None:
        return None  # claimed before the run

    def _apply(self, outcomes: list[Outcome]) -> None:
        for o in outcomes:
            self.claim.outcomes[o.key] = Delivered(o.status, o.activity_id, o.error, int(o.attempted), o.revision)

    async def write(self, outcomes: list[Outcome]) -> None:
        self._apply(outcomes)
        await self.ctx.ledger.record_batch(self.pack_id, self.claim)

    async def hand_on(self, outcomes: list[Outcome], unwritten: list[Outcome], not_before: float) -> int:
        """Write the last outcomes, and hand the reminders that must wait on as one-conversation sends of their
        own jobs, never before their second."""
        self._apply(unwritten)
        await self.ctx.ledger.record_batch(self.pack_id, self.claim)
        retrying = [job for job, d in self.claim.outcomes.items() if d.status == Status.RETRYING]
        await asyncio.gather(*(self._hand(job, not_before) for job in retrying))
        return len(retrying)

    async def _hand(self, job: str, not_before: float) -> None:
        item, reference = self.items[job], self.references[job]
        at = max(item.due, not_before)
        batch = SendBatch(
            job,
            [(item.key, reference)],
            attempt=1,
            pace=_pace(reference),
            slot=Slot(at, self.ctx.guard.interval),
        )
        async with self.gate:
            await self.ctx.sends.send(batch.to_json(), delay=max(0.0, at - LEAD - time.time()))

    async def settle(self) -> None:
        """Write each final outcome to its reminder's job, where its status and its revisions look for it, have
        the sent ones revised if a revision came after them, and mark the pack done. A revision registered after
        the pack was written marks the pack; one registered before it finds its reminder's row written, so one
        read of the marks after the writes finds every message a revision missed. What was handed on is handed
        on again in case the run that sent stopped first (the one-conversation claims send it once)."""

        async def one(job: str, delivered: Delivered) -> None:
            outcome = Outcome(
                self.items[job].key,
                delivered.status,
                delivered.error,
                delivered.activity_id,
                revision=delivered.revision,
            )
            async with self.gate:
                await self.ctx.ledger.settle(job, outcome)

        outcomes = self.claim.outcomes
        await asyncio.gather(
            *(one(job, d) for job, d in outcomes.items() if d.status != Status.RETRYING),
            *(self._hand(job, time.time()) for job, d in outcomes.items() if d.status == Status.RETRYING),
        )
        marks = await self.ctx.ledger.pack_revisions(self.pack_id)
        for job, revision in marks.items():
            delivered = outcomes.get(job)
            if delivered is not None and delivered.status == Status.SENT and delivered.revision < revision.number:
                await self.ctx.sends.send(RevisionBatch(job, self.items[job].key).to_json())
        await self.ctx.ledger.record_batch(self.pack_id, self.claim, done=True)


class _PackSend:
    """A pack's work: each reminder's message (as its latest revision has it) to its conversation."""

    def __init__(
        self, ctx: DeliveryContext, pack_id: str, items: list[PackItem], references: dict[str, ConversationReference]
    ) -> None:
        self.ctx, self.pack_id = ctx, pack_id
        self.items, self.references = {i.job: i for i in items}, references
        self._marks: dict[str, Revision] = {}
        self._read_at = -1e18

    def conversation(self, key: str) -> str:
        return self.items[key].key

    def endpoints(self) -> Iterable[ServiceEndpoint]:
        return (r.endpoint for r in self.references.values())

    async def _refresh(self) -> None:
        if time.monotonic() - self._read_at >= MARKS_REFRESH:
            self._marks = await self.ctx.ledger.pack_revisions(self.pack_id)
            self._read_at = time.monotonic()

    def _latest(self, job: str) -> Revision | None:
        """The newer of the revision read when packed and one marked since (as last read: no I/O)."""
        known, marked = self.items[job].revision, self._marks.get(job)
        return marked if marked is not None and (known is None or marked.number > known.number) else known

    async def before(self, key: str) -> Outcome | None:
        await self._refresh()
        latest = self._latest(key)
        if latest is not None and latest.deletes:
            return Outcome(key, Status.CANCELLED, "the reminder was deleted", attempted=False, revision=latest.number)
        return None

    async def act(self, key: str, attempts: int) -> Outcome:
        item, latest = self.items[key], self._latest(key)
        content = latest.content if latest is not None else item.content
        try:
            response = await self.ctx.connector.send(self.references[key], retry=False, **content)
        except Exception as exc:
            return failure(self.ctx, self.pack_id, key, exc, attempts, "reminder")
        return Outcome(key, Status.SENT, activity_id=response.id or "", revision=latest.number if latest else 0)
