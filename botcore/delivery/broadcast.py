"""Notifications to one conversation or to many: fan-out, batched sends, retries through the queue.

A notify job for a selection (a user, a channel, a tenant, everyone) is fanned
out: the jobs function pages through the stored references (a page at a time,
so memory stays flat) and enqueues send batches on the sends queue, saving its
cursor in the job's ledger header so a crash resumes where it stopped; a long
fan-out continues in a fresh invocation. Any instance's sends function then
delivers a batch with bounded concurrency and a per-instance rate. A 429 or a
transient error never makes a worker sleep: the keys that must be retried go
back on the queue as a new batch, made visible after the Retry-After delay.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import random
import zlib
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Awaitable, Callable, Iterable

from ..protocol.activity import ActivityError, ConversationReference
from .jobs import Job, JobError
from .ledger import ERROR_CHARS, FAILED, GONE, RETRYING, SENT, TRANSACTION_SIZE, DeliveryLedger, Outcome
from ..loops import PerLoop
from ..settings import JOBS_QUEUE, SENDS_QUEUE, Settings
from ..storage import EntityChangedError

log = logging.getLogger(__name__)

PAGE_SIZE = 500
PAGES_PER_INVOCATION = 20
BATCH_KEYS = 100
BATCH_BYTES = 48_000  # a queue message holds 64 KiB
MAX_UNPACKED = 1 << 20
MAX_ATTEMPTS = 8
MAX_DELAY = 600.0
FLUSH_SECONDS = 0.1


def claim_ttl(settings: Settings) -> timedelta:
    return timedelta(seconds=settings.delivery_claim_seconds)


@dataclass
class SendBatch:
    """A bot-sends message: conversations of one job, with their references (no re-read needed).

    `id` names the batch's ledger row (a broadcast's batches); without one, each
    conversation is claimed on its own row (retries of a one-conversation delivery).
    """

    job: str
    items: list[tuple[str, ConversationReference]]
    attempt: int = 0
    id: str = ""

    def to_json(self) -> str:
        return _message(self.job, self.id, self.attempt, [_item(k, r.to_json()) for k, r in self.items])

    @classmethod
    def parse(cls, body: bytes | str) -> "SendBatch":
        """Items come packed (as `batches` writes them) or as a plain `items` list (easier to write by hand)."""
        try:
            data = json.loads(body)
            job, attempt, batch_id = data["job"], int(data.get("attempt", 0)), data.get("id", "")
            items = json.loads(_unpack(data["packed"])) if "packed" in data else data["items"]
            if not isinstance(job, str) or not isinstance(items, list) or not isinstance(batch_id, str):
                raise JobError("job and id must be strings and items a list")
            if len(batch_id) > 200 or not all(c.isalnum() or c == "." for c in batch_id):
                raise JobError(f"batch id {batch_id[:50]!r} is not made of letters, digits and dots")
            return cls(job, [(str(k), ConversationReference.from_dict(r)) for k, r in items], attempt, batch_id)
        except (ValueError, KeyError, TypeError, RecursionError, zlib.error, ActivityError) as exc:
            raise JobError(f"not a send batch: {exc}") from exc


def batches(job_id: str, items: Iterable[tuple[str, str]], attempt: int = 0,
            id_prefix: str | None = None) -> list[str]:
    """Sends-queue messages for (key, reference JSON) pairs: at most BATCH_KEYS conversations
    and BATCH_BYTES of items each.

    With id_prefix, the batches are named id_prefix + 0, 1, ...: the same items give the
    same names, so a batch enqueued twice (a fan-out or retry redone after a crash) is
    claimed, and sent, once.
    """
    out: list[str] = []
    current: list[str] = []
    size = 0

    def close() -> None:
        out.append(_message(job_id, "" if id_prefix is None else f"{id_prefix}{len(out)}", attempt, current))

    for key, reference in items:
        item = _item(key, reference)
        item_size = len(item.encode()) + 1  # UTF-8 bytes
        if current and (len(current) >= BATCH_KEYS or size + item_size > BATCH_BYTES):
            close()
            current, size = [], 0
        current.append(item)
        size += item_size
    if current:
        close()
    return out


def _item(key: str, reference_json: str) -> str:
    return f"[{json.dumps(key, ensure_ascii=False)},{reference_json}]"


def _message(job_id: str, batch_id: str, attempt: int, items: list[str]) -> str:
    """The items travel zlib-compressed: a broadcast's references share most of their text, so
    the queue stores and the host parses several times fewer bytes. BATCH_BYTES bounds them
    before compression, so even incompressible items fit in a queue message once in base64."""
    packed = base64.b64encode(zlib.compress(("[" + ",".join(items) + "]").encode(), 1)).decode("ascii")
    return json.dumps({"job": job_id, "id": batch_id, "attempt": attempt, "packed": packed}, separators=(",", ":"))


def _unpack(packed: Any) -> str:
    if not isinstance(packed, str):
        raise JobError("packed must be a string")
    inflater = zlib.decompressobj()
    text = inflater.decompress(base64.b64decode(packed, validate=True), MAX_UNPACKED)
    if inflater.unconsumed_tail or not inflater.eof:
        raise JobError(f"packed items are truncated or larger than {MAX_UNPACKED} bytes")
    return text.decode("utf-8")


class SendLimiter:
    """Per instance: at most `concurrency` sends in flight and `rate` starts per second.

    `async with limiter:` holds a slot (a plain class, not a generator-based context
    manager: it is entered once per message).
    """

    def __init__(self, concurrency: int, rate: float) -> None:
        self._semaphore = asyncio.Semaphore(concurrency)
        self._interval = 1.0 / rate
        self._next = 0.0

    async def __aenter__(self) -> None:
        await self._semaphore.acquire()
        now = asyncio.get_running_loop().time()
        start = max(now, self._next)
        self._next = start + self._interval
        if start > now:
            try:
                await asyncio.sleep(start - now)
            except BaseException:
                self._semaphore.release()
                raise

    async def __aexit__(self, *exc: object) -> None:
        self._semaphore.release()


_limiters: PerLoop[SendLimiter] = PerLoop()


def limiter_for(settings: Settings) -> SendLimiter:
    return _limiters.get(lambda: SendLimiter(settings.send_concurrency, settings.send_rate_per_second))


# ---- fan-out ---------------------------------------------------------------------------------

async def run_notify(job: Job, settings: Settings) -> str:
    """A notify or broadcast job from the jobs queue."""
    from ..state.turns import services

    svc = services(settings)
    ledger = DeliveryLedger()
    header = await ledger.open_job(job)
    if header.fanned_out:
        return "duplicate"
    if not job.is_selection:
        key = job.target.conversation
        assert key is not None
        record = await svc.store.get(key)
        if record is None or not record.active:
            claims = await ledger.claim(job.id, [key], claim_ttl(settings))
            why = "unknown conversation" if record is None else f"retired: {record.retired_reason}"
            if key in claims.claimed:
                await ledger.record(job.id, [Outcome(key, GONE, why)], claims.claimed)
            log.warning("job %s: conversation %s is %s; nothing sent", job.id, key, why)
            outcome = "skipped"
        else:
            outcome = (await deliver(job, SendBatch(job.id, [(key, record.reference)]), settings)).summary()
        # Marked only after the delivery is claimed: a job redelivered after a crash before
        # this line delivers again, and the ledger's claim keeps that from sending twice.
        header.fanned_out, header.targets = True, 1
        try:
            await ledger.save_progress(header)
        except EntityChangedError:
            pass  # a copy of this job marked it first
        return outcome

    t = job.target
    query = svc.store.selection_filter(channel_id=t.channel_id, tenant_id=t.tenant_id, user_id=t.user_id)
    queue = _queue(SENDS_QUEUE)
    for _ in range(PAGES_PER_INVOCATION):
        addresses, token = await svc.store.addresses(query, header.cursor, PAGE_SIZE)
        sendable, undeliverable = _sendable(addresses)
        # Named by their place in the fan-out, which the saved cursor makes the same on a redo.
        messages = batches(job.id, sendable, id_prefix=f"{header.targets}.")
        await asyncio.gather(*(queue.send(m) for m in messages))
        if undeliverable:
            log.error("job %s: %d conversations cannot be sent to: %s", job.id, len(undeliverable),
                      "; ".join(f"{k}: {e}" for k, e in list(undeliverable.items())[:3]))
            await ledger.record_undeliverable(job.id, f"{header.targets}.u", undeliverable)
        header.cursor, header.targets = token, header.targets + len(addresses)
        header.fanned_out = not token
        try:
            await ledger.save_progress(header)
        except EntityChangedError:
            log.warning("job %s: another worker is fanning out this job; leaving it to that one", job.id)
            return "duplicate"
        if header.fanned_out:
            log.info("job %s: fanned out to %d conversations", job.id, header.targets)
            return f"fanned out to {header.targets}"
    await _queue(JOBS_QUEUE).send(job.to_json())  # the next pages, in a fresh invocation
    log.info("job %s: %d conversations so far; fan-out continues", job.id, header.targets)
    return "continuing"


def _sendable(addresses: list[tuple[str, str]]) -> tuple[list[tuple[str, str]], dict[str, str]]:
    """The addresses that fit in a send batch, and why each other one does not."""
    sendable: list[tuple[str, str]] = []
    undeliverable: dict[str, str] = {}
    for key, reference in addresses:
        try:
            sendable.append((key, ConversationReference.bounded_json(reference)))
        except (ValueError, RecursionError) as exc:  # ActivityError, or text that is not JSON
            undeliverable[key] = f"stored reference unusable: {exc}"
    return sendable, undeliverable


def _queue(name: str) -> Any:
    from ..storage import get_queue

    return get_queue(name)


# ---- sending -----------------------------------------------------------------------------

@dataclass
class Report:
    sent: int = 0
    gone: int = 0
    failed: int = 0
    retrying: int = 0
    done_before: int = 0

    def summary(self) -> str:
        return (f"sent {self.sent}, gone {self.gone}, failed {self.failed}, retrying {self.retrying}"
                f", already done {self.done_before}")


async def abandon_batch(batch: SendBatch, error: str) -> None:
    """The host's last attempt at a batch failed: its conversations without an outcome count as failed
    (best effort: the storage that made it fail may be what is down)."""
    keys = [key for key, _ in batch.items]
    try:
        await DeliveryLedger().abandon(batch.job, batch.id, keys, error)
    except Exception:
        log.exception("job %s: batch %s failed for good, and the ledger could not say so", batch.job, batch.id)
        return
    log.error("job %s: batch %s of %d conversations failed for good: %s", batch.job, batch.id or "-", len(keys), error)


async def run_send_batch(body: bytes, settings: Settings) -> str:
    """A message from the sends queue."""
    batch = SendBatch.parse(body)
    header = await _job_header(batch.job)
    if header is None:
        raise JobError(f"send batch for job {batch.job}, which has no ledger header")
    return (await deliver(header, batch, settings)).summary()


_headers: dict[str, Job] = {}


async def _job_header(job_id: str) -> Job | None:
    """The job a batch belongs to; cached, since every batch of a broadcast needs the same one."""
    job = _headers.get(job_id)
    if job is None:
        header = await DeliveryLedger().header(job_id)
        if header is None:
            return None
        job = header.job
        if len(_headers) >= 64:
            _headers.pop(next(iter(_headers)))
        _headers[job_id] = job
    return job


class OutcomeRecorder:
    """Writes outcomes to the ledger as sends complete: every FLUSH_SECONDS, or 100 at a time.

    Writing each outcome alone would cap sends at the table's single-write rate;
    writing a batch's outcomes only at its end would, after a crash, resend the
    whole batch. This way a crash resends at most the sends in flight and the
    outcomes of the last FLUSH_SECONDS.
    """

    def __init__(self, write: Callable[[list[Outcome]], Awaitable[None]]) -> None:
        self._write = write
        self._pending: list[Outcome] = []
        self._lock = asyncio.Lock()
        self._last = asyncio.get_running_loop().time()

    async def add(self, outcome: Outcome) -> None:
        self._pending.append(outcome)
        due = asyncio.get_running_loop().time() - self._last >= FLUSH_SECONDS
        if due or len(self._pending) >= TRANSACTION_SIZE:
            await self.flush()

    async def flush(self) -> None:
        async with self._lock:
            batch, self._pending = self._pending, []
            self._last = asyncio.get_running_loop().time()
            if batch:
                await self._write(batch)

    def take(self) -> list[Outcome]:
        """The outcomes not written yet, once every send is done: the batch's last write carries them."""
        pending, self._pending = self._pending, []
        return pending


class _BatchClaim:
    """A broadcast's batch: claimed as a whole on its ledger row, retries handed on to named batches."""

    def __init__(self, ledger: DeliveryLedger, job: Job, batch: SendBatch, settings: Settings) -> None:
        self.ledger, self.job, self.batch, self.settings = ledger, job, batch, settings
        self.attempts: dict[str, int] = {}
        self.done_before = 0
        self.claim: Any = None

    async def take(self) -> Report | None:
        """None when this worker may send; else the report of why nothing is sent."""
        keys = [k for k, _ in self.batch.items]
        self.claim = await self.ledger.claim_batch(self.job.id, self.batch.id, claim_ttl(self.settings))
        if self.claim is None:  # another worker is sending it: look again once its claim may have lapsed
            await _enqueue([self.batch.to_json()], self.settings.delivery_claim_seconds / 4)
            return Report(retrying=len(keys))
        if self.claim.done:
            return Report(done_before=len(keys))
        self.attempts = {k: self.batch.attempt for k in keys if k not in self.claim.outcomes}
        self.done_before = len(keys) - len(self.attempts)
        return None

    def _apply(self, outcomes: list[Outcome]) -> None:
        for o in outcomes:
            self.claim.outcomes[o.key] = [o.status, o.activity_id, o.error[:ERROR_CHARS],
                                          self.batch.attempt + o.attempted]

    async def write(self, outcomes: list[Outcome]) -> None:
        self._apply(outcomes)
        await self.ledger.record_batch(self.job.id, self.claim)

    async def hand_on(self, outcomes: list[Outcome], unwritten: list[Outcome], delay: float) -> int:
        """Enqueue the retries, then write the last outcomes and mark the batch done, in one write;
        returns how many conversations were retried.

        Retry batches are named after this one and the attempts their keys have used (a key
        the throttle kept from being tried has not used one). Keys a stopped worker had
        already handed on are handed on again: the retry batch's claim sends them once.
        """
        self._apply(unwritten)
        by_attempts: dict[int, list[str]] = {}
        for key, o in self.claim.outcomes.items():
            if o[0] == RETRYING:
                by_attempts.setdefault(int(o[3]), []).append(key)
        references = dict(self.batch.items)
        await _enqueue([b for n, keys in sorted(by_attempts.items())
                        for b in batches(self.job.id, [(k, references[k].to_json()) for k in keys], n,
                                         f"{self.batch.id}r{n}.")], delay)
        await self.ledger.record_batch(self.job.id, self.claim, done=True)
        return sum(o.status == RETRYING for o in outcomes)


class _KeyClaims:
    """A one-conversation delivery (or its retries): each conversation claims its own row."""

    def __init__(self, ledger: DeliveryLedger, job: Job, batch: SendBatch, settings: Settings) -> None:
        self.ledger, self.job, self.batch, self.settings = ledger, job, batch, settings
        self.attempts: dict[str, int] = {}
        self.busy: list[str] = []
        self.done_before = 0

    async def take(self) -> Report | None:
        claims = await self.ledger.claim(self.job.id, [k for k, _ in self.batch.items], claim_ttl(self.settings))
        self.attempts, self.busy, self.done_before = claims.claimed, sorted(claims.busy), len(claims.done)
        return None

    async def write(self, outcomes: list[Outcome]) -> None:
        await self.ledger.record(self.job.id, outcomes, self.attempts)

    async def hand_on(self, outcomes: list[Outcome], unwritten: list[Outcome], delay: float) -> int:
        if unwritten:
            await self.write(unwritten)
        references = dict(self.batch.items)
        keys = [o.key for o in outcomes if o.status == RETRYING] + self.busy
        if self.busy:  # another worker holds them: look again once its claims may have lapsed
            delay = max(delay, self.settings.delivery_claim_seconds / 4)
        await _enqueue(batches(self.job.id, [(k, references[k].to_json()) for k in keys], self.batch.attempt + 1),
                       delay)
        return len(keys)


async def deliver(job: Job, batch: SendBatch, settings: Settings) -> Report:
    """Send the job's message to each conversation of the batch once; requeue what must wait."""
    from ..state.turns import services

    svc = services(settings)
    claims = (_BatchClaim if batch.id else _KeyClaims)(DeliveryLedger(), job, batch, settings)
    early = await claims.take()
    if early is not None:
        return early
    references = dict(batch.items)
    limiter = limiter_for(settings)
    recorder = OutcomeRecorder(claims.write)
    throttled: list[float] = []  # a 429's Retry-After: stop starting sends in this batch
    content = job.content()

    async def send_one(key: str) -> Outcome:
        async with limiter:
            if throttled:
                outcome = Outcome(key, RETRYING, "the channel is throttling", attempted=False)
            else:
                outcome = await _send(svc.connector, job, key, references[key], content, claims.attempts[key],
                                      throttled)
        await recorder.add(outcome)
        return outcome

    outcomes = await asyncio.gather(*(send_one(k) for k in claims.attempts))
    unwritten = recorder.take()
    for o in outcomes:
        if o.status == GONE:
            await svc.store.retire(o.key, o.error)
    report = Report(sent=sum(o.status == SENT for o in outcomes), gone=sum(o.status == GONE for o in outcomes),
                    failed=sum(o.status == FAILED for o in outcomes),
                    done_before=claims.done_before)
    delay = max([min(MAX_DELAY, 2.0 ** batch.attempt) * random.uniform(0.5, 1.0), *throttled])
    report.retrying = await claims.hand_on(outcomes, unwritten, delay)
    if report.retrying:
        log.info("job %s: %d conversations retried in %.1fs (attempt %d)", job.id, report.retrying, delay,
                 batch.attempt + 1)
    return report


async def _enqueue(messages: list[str], delay: float) -> None:
    for message in messages:
        await _queue(SENDS_QUEUE).send(message, delay=max(1.0, delay))


async def _send(connector: Any, job: Job, key: str, reference: ConversationReference,
                content: dict[str, Any], attempts: int, throttled: list[float]) -> Outcome:
    from ..protocol.connector import ConnectorAuthError, ConversationGoneError, RequestRejectedError, RetryableConnectorError
    from ..protocol.trust import UntrustedServiceUrlError
    from ..protocol.tokens import TokenError

    try:
        response = await connector.send(reference, retry=False, **content)
        return Outcome(key, SENT, activity_id=response.id or "")
    except ConversationGoneError as exc:
        log.warning("job %s: conversation %s is gone (%s); reference retired", job.id, key, exc.code)
        return Outcome(key, GONE, exc.code or f"HTTP {exc.status}")
    except (RequestRejectedError, UntrustedServiceUrlError) as exc:
        log.error("job %s: conversation %s refused the message: %s", job.id, key, exc)
        return Outcome(key, FAILED, str(exc))
    except RetryableConnectorError as exc:
        if exc.status == 429:
            throttled.append(exc.retry_after or 1.0)
        error = f"HTTP {exc.status} {exc.code or ''}".strip()
    except (ConnectorAuthError, TokenError) as exc:
        error = f"{type(exc).__name__}: {exc}"
    except Exception as exc:  # anything else: keep the message, retry later, say why
        log.exception("job %s: unexpected error sending to %s", job.id, key)
        error = f"{type(exc).__name__}: {exc}"
    if attempts + 1 >= MAX_ATTEMPTS:
        log.error("job %s: conversation %s failed %d times; giving up: %s", job.id, key, MAX_ATTEMPTS, error)
        return Outcome(key, FAILED, error)
    return Outcome(key, RETRYING, error)
