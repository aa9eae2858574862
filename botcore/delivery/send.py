"""Sending one batch of a job: claim it, send each message at its slot, record what happened, and hand on
what must wait.

A 429, a transient error, a slot missed or a conversation over its window never makes a worker sleep
long: those conversations go back on the queue as a new batch, with new slots from the pace calendar
(after the Retry-After pause, for a 429). Outcomes are written as sends complete (OutcomeRecorder), and
only a few sends may be unrecorded at once, so a crash resends at most that few.

Every send carries the job's latest revision (ledger.Revision): what is sent after an update carries the
new message, and nothing is sent after a delete. A batch that sent an older revision asks, once it is
settled, for its messages to be revised (botcore.delivery.revise).

The paced loop (`run_paced`) serves send batches and revision batches alike.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from .. import telemetry
from ..backoff import backoff
from ..errors import BotError
from ..jobs import Job, JobError
from ..protocol.activity import ConversationReference
from ..protocol.connector import ConversationGoneError, RequestRejectedError, RetryableConnectorError
from ..protocol.trust import UntrustedServiceUrlError
from ..storage import STORAGE_TIMEOUT, StorageStalledError
from .batches import RevisionBatch, SendBatch, pack, retry_prefix
from .ledger import BATCH_PREFIX, Delivered, Outcome, Revision, Status, handed_on
from .pacing import (
    DEFAULT_RETRY_AFTER,
    LATE_GRACE,
    LEAD,
    RETRY_LEAD,
    START_LEAD,
    BlockSlots,
    Slot,
    pace_key,
    unrecorded_limit,
)
from .revisions import LatestRevision

if TYPE_CHECKING:
    from collections.abc import Iterable

    from ..protocol.activity import ServiceEndpoint
    from .context import DeliveryContext

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 8
BACKOFF_BASE = 2.0  # seconds before a conversation's first retry (at most); doubling each attempt after
MAX_BACKOFF = 600.0
MAX_INLINE_WAIT = 2.0  # seconds a worker may wait for a slot; a later one goes back on the queue
FLUSH_SECONDS = 0.5  # outcomes wait at most this long to be written (unless a write is under way): each write
# carries the batch's every outcome so far, so writing a few at a time would cost a merge of a growing row per
# couple of sends, the most of a message's storage transactions and CPU
EARLY_WRITE = 0.5  # ... or until this share of the unrecorded limit is used: the rest keeps the pace while the write
# waits on storage (half a second of pace, as when outcomes were written every 0.1 s)


@dataclass
class Report:
    sent: int = 0
    gone: int = 0
    failed: int = 0
    retrying: int = 0
    done_before: int = 0
    cancelled: int = 0

    def summary(self) -> str:
        text = (
            f"sent {self.sent}, gone {self.gone}, failed {self.failed}, retrying {self.retrying}"
            f", already done {self.done_before}"
        )
        return text + (f", cancelled {self.cancelled}" if self.cancelled else "")


def batch_pace(batch: SendBatch) -> str:
    """The batch's pace key (a batch written before batches carried one: its first reference's)."""
    if batch.pace or not batch.items:
        return batch.pace
    reference = batch.items[0][1]
    return pace_key(reference.channel_id, reference.tenant_id)


class OutcomeRecorder:
    """Writes outcomes to the ledger as sends complete, and keeps the sends not yet on record few.

    A send is unrecorded from the moment it may start until the write carrying its outcome succeeded. At most
    `limit` are unrecorded at once: a worker killed at any moment has sent at most `limit` messages that the
    worker taking its batch over sends again. One write runs at a time, carrying every outcome that came
    before it; writing each outcome alone would cap sends at the table's single-write rate. A write starts
    at most FLUSH_SECONDS after the one before, or sooner once the unrecorded sends (those waiting for the
    Connector too) near the limit, so that a slow Connector does not make sends wait for writes. A write that
    takes longer than STORAGE_TIMEOUT fails the recorder: no more sends start.

    A write also renews the claim it is made under. When no outcome came for `renew_every` (the run waits for
    slots, permits or windows), an empty write renews it all the same: a claim that lapsed under a live worker
    would let another take the batch over and send what this one is still sending.
    """

    def __init__(
        self,
        write: Callable[[list[Outcome]], Awaitable[None]],
        limit: int,
        timeout: float = STORAGE_TIMEOUT,
        renew_every: float | None = None,
    ) -> None:
        self._write = write
        self.limit, self.timeout, self.renew_every = max(1, limit), timeout, renew_every
        self._renewal: asyncio.TimerHandle | None = None
        if renew_every is not None:
            self._renewal = asyncio.get_running_loop().call_later(renew_every, self._renew)
        self._pending: list[Outcome] = []
        self._unrecorded = 0
        self._writer: asyncio.Task[None] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._changed = asyncio.Condition()
        self._last = time.monotonic()
        self.failed: BaseException | None = None

    async def start(self) -> bool:
        """Wait until one more send may start; False once outcomes can no longer be written."""
        async with self._changed:
            while self._unrecorded >= self.limit and self.failed is None:
                self._kick(now=True)
                await self._changed.wait()
            if self.failed is not None:
                return False
            self._unrecorded += 1
            return True

    def unstarted(self) -> None:
        """A send that `start` let through did not happen after all."""
        self._unrecorded -= 1

    def add(self, outcome: Outcome) -> None:
        self._pending.append(outcome)
        self._kick()

    async def finish(self) -> list[Outcome]:
        """The outcomes not written yet, once every send is done: the batch's last write carries them.
        Raises what made a write fail: outcomes that could not be written must not be lost silently."""
        if self._renewal is not None:
            self._renewal.cancel()
            self._renewal = None
        while self._writer is not None:
            await asyncio.shield(self._writer)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self.failed is not None:
            raise self.failed
        pending, self._pending = self._pending, []
        return pending

    def _kick(self, now: bool = False) -> None:
        if self._writer is not None or not self._pending or self.failed is not None:
            return
        wait = FLUSH_SECONDS - (time.monotonic() - self._last)
        if now or wait <= 0 or self._unrecorded >= self.limit * EARLY_WRITE:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            self._writer = asyncio.create_task(self._write_pending())
        elif self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(wait, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._kick(now=True)

    def _renew(self) -> None:
        assert self.renew_every is not None
        idle = time.monotonic() - self._last
        if self._writer is None and self.failed is None and idle >= self.renew_every:
            self._writer = asyncio.create_task(self._write_pending())  # empty, or whatever came meanwhile
            idle = 0.0
        self._renewal = asyncio.get_running_loop().call_later(max(0.01, self.renew_every - idle), self._renew)

    async def _write_pending(self) -> None:
        batch, self._pending = self._pending, []
        self._last = time.monotonic()
        try:
            await asyncio.wait_for(self._write(batch), self.timeout)
        except TimeoutError:
            self.failed = StorageStalledError(f"outcomes not written within {self.timeout:g}s")
        except Exception as exc:
            self.failed = exc
        else:
            self._unrecorded -= sum(o.attempted for o in batch)
        finally:
            if self.failed is not None:
                self._pending[:0] = batch  # kept for the error's sake: the batch stops before its last write
            self._writer = None
            async with self._changed:
                self._changed.notify_all()
            self._kick()


class Claims(Protocol):
    """How a run claims its conversations, records their outcomes and hands on what must wait."""

    attempts: dict[str, int]  # the conversations this worker may act on, with the attempts they used
    done_before: int

    async def take(self) -> Report | None: ...

    async def write(self, outcomes: list[Outcome]) -> None: ...

    async def hand_on(self, outcomes: list[Outcome], unwritten: list[Outcome], not_before: float) -> int: ...


class Work(Protocol):
    """What a run does to each of its items (a conversation, or a reminder): send a message, or revise one."""

    def conversation(self, key: str) -> str:
        """The conversation the item's request goes to: its windows count it."""

    def endpoints(self) -> Iterable[ServiceEndpoint]:
        """Where the run's requests go (ConnectorClient.prepare readies them before the first slot)."""

    async def before(self, key: str) -> Outcome | None:
        """An outcome reached without a request (a send cancelled by a delete), else None."""

    async def act(self, key: str, attempts: int) -> Outcome: ...


class Slots(Protocol):
    """When each item of a run may go, and whose pace it counts against."""

    async def at(self, index: int, key: str, now: float, remaining: int) -> float:
        """The item's start (epoch seconds); 0 when it must be handed on."""

    def pace(self, key: str) -> str: ...

    def interval(self, key: str) -> float:
        """The spacing of the item's pace key on this instance (KeyGuard)."""

    def unrecorded(self, cap: int) -> int:
        """How many sends of the run may be unrecorded at once (OutcomeRecorder), at most `cap`."""

    def overrun(self, at: float, now: float) -> bool:
        """Whether an item whose slot was `at`, ready only at `now`, must take a later slot instead."""


class _ClaimPerBatch:
    """Claims for a fan-out's batch: claimed as a whole on its ledger row, retries handed on to named batches."""

    def __init__(self, ctx: DeliveryContext, job: Job, batch: SendBatch) -> None:
        self.ctx, self.job, self.batch = ctx, job, batch
        self.attempts: dict[str, int] = {}
        self.done_before = 0
        self.claim: Any = None

    async def take(self) -> Report | None:
        keys = [k for k, _ in self.batch.items]
        self.claim = await self.ctx.ledger.claim_batch(self.job.id, self.batch.id)
        if self.claim is None:  # another worker is sending it: look again once its claim may have lapsed
            await self.ctx.sends.send(self.batch.to_json(), delay=self.ctx.settings.delivery_claim_seconds / 4)
            return Report(retrying=len(keys))
        if self.claim.done:
            return Report(done_before=len(keys))
        self.attempts = {k: self.batch.attempt for k in keys if k not in self.claim.outcomes}
        self.done_before = len(keys) - len(self.attempts)
        return None

    def _apply(self, outcomes: list[Outcome]) -> None:
        for o in outcomes:
            self.claim.outcomes[o.key] = Delivered(
                o.status, o.activity_id, o.error, self.batch.attempt + o.attempted, o.revision
            )

    async def write(self, outcomes: list[Outcome]) -> None:
        self._apply(outcomes)
        await self.ctx.ledger.record_batch(self.job.id, self.claim)

    async def hand_on(self, outcomes: list[Outcome], unwritten: list[Outcome], not_before: float) -> int:
        """Write the last outcomes, enqueue the retries and mark the batch done; returns how many
        conversations were retried. Without retries, outcomes and the done mark are one write.

        Retry batches are named after this one and the attempts their keys have used (a key kept from
        being tried has not used one). Keys a stopped worker had already handed on are handed on again:
        the retry batch's claim sends them once.
        """
        self._apply(unwritten)
        retries = handed_on(self.claim.outcomes)
        if retries:  # what was sent is on record before anything that may fail, so no takeover resends it
            await self.ctx.ledger.record_batch(self.job.id, self.claim)
        for attempts, keys in retries.items():
            await _enqueue_retry(
                self.ctx, self.job, self.batch, keys, attempts, not_before, retry_prefix(self.batch.id, attempts)
            )
        await self.ctx.ledger.record_batch(self.job.id, self.claim, done=True)
        return sum(o.status == Status.RETRYING for o in outcomes)


class _ClaimPerConversation:
    """Claims for a one-conversation delivery (or its retries): each conversation claims its own row."""

    def __init__(self, ctx: DeliveryContext, job: Job, batch: SendBatch) -> None:
        self.ctx, self.job, self.batch = ctx, job, batch
        self.attempts: dict[str, int] = {}
        self.busy: list[str] = []
        self.done_before = 0

    async def take(self) -> Report | None:
        claims = await self.ctx.ledger.claim(self.job.id, [k for k, _ in self.batch.items])
        self.attempts, self.busy, self.done_before = claims.claimed, sorted(claims.busy), len(claims.done)
        return None

    async def write(self, outcomes: list[Outcome]) -> None:
        await self.ctx.ledger.record(self.job.id, outcomes, self.attempts)

    async def hand_on(self, outcomes: list[Outcome], unwritten: list[Outcome], not_before: float) -> int:
        if unwritten:
            await self.write(unwritten)
        keys = [o.key for o in outcomes if o.status == Status.RETRYING] + self.busy
        if self.busy:  # another worker holds them: look again once its claims may have lapsed
            not_before = max(not_before, time.time() + self.ctx.settings.delivery_claim_seconds / 4)
        if keys:
            await _enqueue_retry(self.ctx, self.job, self.batch, keys, self.batch.attempt + 1, not_before, None)
        return len(keys)


async def _enqueue_retry(
    ctx: DeliveryContext,
    job: Job,
    batch: SendBatch,
    keys: list[str],
    attempt: int,
    not_before: float,
    id_prefix: str | None,
) -> None:
    """Conversations of `batch` that must wait, as new batches. Those that may go now take the calendar's
    next slots; those that must wait (a back-off, a conversation's window) take theirs when they run, so
    that one conversation's wait never holds up its tenant's calendar."""
    references = dict(batch.items)
    pace = batch_pace(batch)
    now = time.time()
    slot = await ctx.pacing.reserve(pace, len(keys)) if not_before - now <= LEAD else None
    for message, batch_slot in pack(
        job.id, [(k, references[k].to_json()) for k in keys], attempt=attempt, id_prefix=id_prefix, pace=pace, slot=slot
    ):
        await ctx.sends.send(message, delay=batch_slot.visibility(now, RETRY_LEAD) if batch_slot else not_before - now)


async def run_send_batch(ctx: DeliveryContext, batch: SendBatch) -> str:
    """A send batch from the sends queue."""
    job = await ctx.job_of(batch.job)
    if job is None:
        raise JobError(f"send batch for job {batch.job}, which has no ledger header")
    return (await deliver(ctx, job, batch)).summary()


async def abandon_batch(ctx: DeliveryContext, batch: SendBatch, error: str) -> None:
    """The host's last attempt at a batch failed: its conversations without an outcome count as failed
    (best effort: the storage that made it fail may be what is down)."""
    keys = [key for key, _ in batch.items]
    try:
        await ctx.ledger.abandon(batch.job, batch.id, keys, error)
    except Exception:
        log.exception("job %s: batch %s failed for good, and the ledger could not say so", batch.job, batch.id)
        return
    log.error("job %s: batch %s of %d conversations failed for good: %s", batch.job, batch.id or "-", len(keys), error)


class BatchSlots:
    """A batch's slots (pacing.BlockSlots) for the paced run: one pace key, and the fresh block its late items
    need reserved in the calendar, once."""

    def __init__(self, ctx: DeliveryContext, job_id: str, pace: str, block: Slot, size: int) -> None:
        self.ctx, self.job_id, self.key = ctx, job_id, pace
        self.slots = BlockSlots(block, size)

    def pace(self, key: str) -> str:
        return self.key

    def interval(self, key: str) -> float:
        return self.slots.block.interval

    def unrecorded(self, cap: int) -> int:
        return unrecorded_limit(self.slots.block.interval, cap)

    def overrun(self, at: float, now: float) -> bool:
        return self.slots.overrun(at, now)

    async def at(self, index: int, key: str, now: float, remaining: int) -> float:
        at = self.slots.at(index, now)
        if at is None:
            fresh = None
            try:
                fresh = await asyncio.wait_for(self.ctx.pacing.reserve(self.key, remaining, lead=0.0), STORAGE_TIMEOUT)
            except (TimeoutError, BotError) as exc:  # the calendar cannot be written: the rest is handed on
                log.warning("job %s: no fresh slots for %s (%s)", self.job_id, self.key, exc)
            self.slots.take_fresh(fresh, index)
            at = self.slots.at(index, now)
        return at or 0.0


async def slot_for(
    ctx: DeliveryContext, pace: str, slot: Slot | None, size: int, requeue: Callable[[Slot], Awaitable[None]]
) -> Slot | None:
    """The block of slots a batch sends in: its own, or fresh ones when it has none, all of its own went by
    unused, or its key was paused since it was planned. None when they are further off than a worker may wait:
    `requeue` has put the batch back on the queue until then."""
    late = slot is not None and slot.at(size - 1) < time.time() - LATE_GRACE
    if slot is None or late or await ctx.pacing.paused_until(pace) > slot.start:
        slot = await ctx.pacing.reserve(pace, size, lead=START_LEAD)
    if slot.start - time.time() > MAX_INLINE_WAIT:
        await requeue(slot)
        return None
    return slot


@dataclass
class Run:
    """What a paced run did: every outcome, those not written yet, and when what is handed on may be tried."""

    outcomes: list[Outcome]
    unwritten: list[Outcome]
    not_before: float


async def run_paced(ctx: DeliveryContext, job_id: str, claims: Claims, work: Work, slots: Slots) -> Run:
    """Act on each claimed item at its slot, within its conversation's windows and its pace key's pace. A 429
    stops the requests of its pace key only. Raises when storage failed or stalled under the run, after the
    requests under way have ended."""
    keys = list(claims.attempts)
    recorder = OutcomeRecorder(
        claims.write,
        slots.unrecorded(ctx.settings.send_concurrency),
        renew_every=ctx.settings.delivery_claim_seconds / 3,
    )
    throttled: dict[str, float] = {}  # pace key → a 429's Retry-After: no more requests of that key here
    waits: list[float] = []  # conversations over their window: when they may be tried again
    sending: list[asyncio.Task[Outcome]] = []
    held: list[Outcome] = []

    async def act(key: str, pace: str) -> Outcome:
        try:
            outcome = await work.act(key, claims.attempts[key])
        finally:
            ctx.sending.release()
        if outcome.throttled is not None:
            throttled[pace] = max(throttled.get(pace, 0.0), outcome.throttled)
        recorder.add(outcome)
        return outcome

    def hand_on(key: str, why: str) -> None:
        held.append(Outcome(key, Status.RETRYING, why, attempted=False))

    stopped: Exception | None = None
    await ctx.connector.prepare(work.endpoints())
    try:
        for index, key in enumerate(keys):
            settled = await work.before(key)
            if settled is not None:
                held.append(settled)
                continue
            pace = slots.pace(key)
            # The item's permits before its slot: a send that waits for them after it would come late.
            if not await recorder.start():  # outcomes cannot be written: what is sent now could be sent twice
                break
            await ctx.sending.acquire()
            started = False
            try:
                while True:  # until the item goes or is handed on
                    now = time.time()
                    at = now if pace in throttled else await slots.at(index, key, now, len(keys) - index)
                    if pace in throttled:
                        hand_on(key, "the channel is throttling")
                    elif at < now - LATE_GRACE or at > now + MAX_INLINE_WAIT:
                        hand_on(key, "waiting for a slot")
                    else:
                        if at > now:
                            await asyncio.sleep(at - now)
                        # A sleep that ended late (a busy instance) still sends, at the guard's pace, unless that
                        # would be past its block, into the next batch's slots: then it takes a later slot.
                        if slots.overrun(at, time.time()):
                            continue
                        window = ctx.windows.take(work.conversation(key), time.time())
                        if window > 0:
                            waits.append(window)
                            hand_on(key, "the conversation's rate limit")
                        else:
                            await ctx.guard.wait(pace, slots.interval(key))
                            telemetry.pace_lag(pace, time.time() - at)
                            sending.append(asyncio.create_task(act(key, pace)))
                            started = True
                    break
            finally:
                if not started:
                    ctx.sending.release()
                    recorder.unstarted()
    except Exception as exc:  # storage failed or stalled under the batch: start nothing more
        stopped = exc
    outcomes = [*await asyncio.gather(*sending), *held]  # the requests under way end first, whatever happens
    telemetry.messages(o.status for o in outcomes)
    for o in held:
        recorder.add(o)
    try:
        unwritten = await recorder.finish()
    except Exception as exc:
        stopped = stopped or exc
    if stopped is not None:
        log.error(
            "job %s: the batch stops (%s: %s); its claim lapses for another worker",
            job_id,
            type(stopped).__name__,
            stopped,
        )
        raise stopped
    for pace, retry_after in throttled.items():
        await ctx.pacing.throttled(pace, retry_after)
    transient = any(o.status == Status.RETRYING and o.attempted for o in outcomes)
    wait = (
        backoff(min(claims.attempts.values(), default=0) + 1, base=BACKOFF_BASE, cap=MAX_BACKOFF) if transient else 0.0
    )
    return Run(outcomes, unwritten, time.time() + max([wait, *waits]))


class _Send:
    """A send batch's work: the job's message (as its latest revision has it) to each conversation."""

    def __init__(self, ctx: DeliveryContext, job: Job, references: dict[str, ConversationReference]) -> None:
        self.ctx, self.job, self.references = ctx, job, references
        self.revision = LatestRevision(ctx.revisions.of(job.id))

    def conversation(self, key: str) -> str:
        return key

    def endpoints(self) -> Iterable[ServiceEndpoint]:
        return (r.endpoint for r in self.references.values())

    async def before(self, key: str) -> Outcome | None:
        return _deleted(key, await self.revision.get())

    async def act(self, key: str, attempts: int) -> Outcome:
        latest = self.revision.known  # a refresh may have landed since `before`: a delete still wins
        if (deleted := _deleted(key, latest)) is not None:
            return deleted
        content = latest.content if latest is not None else self.job.content()
        number = latest.number if latest is not None else 0
        try:
            response = await self.ctx.connector.send(self.references[key], retry=False, **content)
        except Exception as exc:
            return failure(self.ctx, self.job.id, key, exc, attempts, "send")
        return Outcome(key, Status.SENT, activity_id=response.id or "", revision=number)


def _deleted(key: str, latest: Revision | None) -> Outcome | None:
    if latest is not None and latest.deletes:
        return Outcome(key, Status.CANCELLED, "the notification was deleted", attempted=False, revision=latest.number)
    return None


def failure(ctx: DeliveryContext, job_id: str, key: str, exc: Exception, attempts: int, what: str) -> Outcome:
    """The outcome of a Connector call that failed, by what the failure means (docs/delivery.md)."""
    throttled = None
    if isinstance(exc, ConversationGoneError):
        log.warning("job %s: conversation %s is gone (%s); reference retired", job_id, key, exc.service_code)
        return Outcome(key, Status.GONE, exc.service_code or f"HTTP {exc.status}")
    if isinstance(exc, (RequestRejectedError, UntrustedServiceUrlError)):
        log.error("job %s: conversation %s refused the %s: %s", job_id, key, what, exc)
        return Outcome(key, Status.FAILED, str(exc))
    if isinstance(exc, RetryableConnectorError):
        if exc.status == 429:
            throttled = exc.retry_after or DEFAULT_RETRY_AFTER
        error = f"HTTP {exc.status} {exc.service_code or ''}".strip()
    else:  # the bot's token, or something unexpected: keep the message, retry, say why
        if not isinstance(exc, BotError):
            log.error("job %s: unexpected error in the %s to %s", job_id, what, key, exc_info=exc)
        error = f"{type(exc).__name__}: {exc}"
    if attempts + 1 >= MAX_ATTEMPTS:
        log.error("job %s: conversation %s failed %d times; giving up: %s", job_id, key, MAX_ATTEMPTS, error)
        return Outcome(key, Status.FAILED, error)
    return Outcome(key, Status.RETRYING, error, throttled=throttled)


async def deliver(ctx: DeliveryContext, job: Job, batch: SendBatch) -> Report:
    """Send the job's message to each conversation of the batch once, each at its slot; hand on what must
    wait (a 429's Retry-After, a transient error's back-off, a slot missed, a conversation's window)."""
    pace = batch_pace(batch)
    if (
        batch.slot is not None
        and batch.slot.at(len(batch.items) - 1) < time.time() - LATE_GRACE
        and batch.id
        and await ctx.ledger.batch_done(job.id, batch.id)
    ):  # a copy of a batch already sent
        return Report(done_before=len(batch.items))

    async def requeue(slot: Slot) -> None:
        batch.slot = slot
        await ctx.sends.send(batch.to_json(), delay=slot.visibility(time.time(), RETRY_LEAD))

    slot = await slot_for(ctx, pace, batch.slot, len(batch.items), requeue)
    if slot is None:
        return Report(retrying=len(batch.items))
    claims = (_ClaimPerBatch if batch.id else _ClaimPerConversation)(ctx, job, batch)
    early = await claims.take()
    if early is not None:
        return early
    started_late = time.time() - slot.start  # negative: early, as it should be
    run = await run_paced(
        ctx, job.id, claims, _Send(ctx, job, dict(batch.items)), BatchSlots(ctx, job.id, pace, slot, len(batch.items))
    )
    outcomes = run.outcomes
    for o in outcomes:
        if o.status == Status.GONE:
            await ctx.conversations.retire(o.key, o.error)
    report = Report(
        sent=sum(o.status == Status.SENT for o in outcomes),
        gone=sum(o.status == Status.GONE for o in outcomes),
        failed=sum(o.status == Status.FAILED for o in outcomes),
        done_before=claims.done_before,
        cancelled=sum(o.status == Status.CANCELLED for o in outcomes),
    )
    report.retrying = await claims.hand_on(outcomes, run.unwritten, run.not_before)
    if report.retrying:
        log.info(
            "job %s: %d conversations handed on (attempt %d; the batch started %.2fs after its slot)",
            job.id,
            report.retrying,
            batch.attempt + 1,
            started_late,
        )
    await _revise_if_behind(ctx, job, batch, outcomes)
    return report


async def _revise_if_behind(ctx: DeliveryContext, job: Job, batch: SendBatch, outcomes: list[Outcome]) -> None:
    """A revision that arrived while the batch was sending may have missed its messages: the batch's rows are
    settled now, so a revision that reads them from here on finds them; one read before may not have. Read the
    latest revision once more, and have the rows revised if they sent an older one."""
    sent = [o for o in outcomes if o.status == Status.SENT]
    if not sent:
        return
    latest = await ctx.ledger.revision(job.id)
    behind = [o.key for o in sent if latest is not None and o.revision < latest.number]
    if not behind:
        return
    rows = [BATCH_PREFIX + batch.id] if batch.id else behind
    for row in rows:
        await ctx.sends.send(RevisionBatch(job.id, row).to_json())
    log.info(
        "job %s: %d messages were sent before revision %d reached them; revising them",
        job.id,
        len(behind),
        latest.number if latest else 0,
    )
