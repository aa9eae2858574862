"""The delivery ledger: what was sent where, one Table Storage partition per job.

It is the only module that reads or writes the `botdeliveries` table. It is what makes a redelivered
queue message send nothing twice, what a job's status is counted from, and where the Connector's
activity ids are kept so that sent notifications can be updated or deleted later.

PartitionKey is the job id. Rows:
- HEADER: the job itself, how far its fan-out got, and (once it failed for good) why;
- a send batch ("!b" + batch id): one row for up to 100 conversations, holding the batch's claim and
  every conversation's outcome. One row written a few times per batch instead of two rows per message
  keeps the table's write rate out of a broadcast's way;
- a one-conversation delivery (notify one conversation, a proactive dialog, pending replies): one row
  per conversation, RowKey the conversation key, with the messages to send when they must survive a
  crash before they are sent;
- REVISION: the job's latest revision (an update's message, or a delete), numbered in the order the
  revisions arrived; every send reads it, so what is sent after a revision carries it;
- a revision row ("!v" + a delivery row's id): what revisions did to that row's messages. Kept apart
  from the delivery row, so that revising never changes the ETag a sender's claim holds;
- a roster member ("!s" + the member's id): the page of the team's roster that listed them first, so that
  a member listed twice is notified once.

A pack (botcore.delivery.packs: reminders due together) has a partition of its own, like a job: its row
(PACK_ROW) holds the reminders it sends and, claimed like a send batch, their outcomes; a revision of one
of its reminders registered after it was packed leaves a mark ("!m" + the reminder's id) there.

Retention (botcore.delivery.retention) deletes a partition once it has been finished for BotLedgerRetentionDays,
and finds it without scanning the table through an index kept in the same table, in partitions of its own
("!" starts no job's or pack's key):
- ACTIVE_INDEX + day: every job and pack, filed under the day it was opened (a reminder: the day it falls due),
  and filed again under a later day when retention finds it still active;
- TOMBSTONE_INDEX + day: the tombstones written that day. A job's tombstone replaces its header (TOMBSTONE: the
  time it expired, with its kind and when it was created), so that its status says it expired and its id stays
  taken until the tombstone too is deleted.

A claim (status `sending`, botcore.delivery.claims) is held by the worker sending right now. One older
than BotDeliveryClaimSeconds belongs to a worker that died; another takes it over. Messages may then be
sent twice: at most the sends in flight and the outcomes not yet written (delivery.send.OutcomeRecorder).
"""

from __future__ import annotations

import json
import logging
import zlib
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from ..errors import BadInputError, ConflictError, NotFoundError
from ..jobs import Job, due_time, parse_job
from ..keys import encode_key
from ..settings import DELIVERIES_TABLE
from ..storage import (
    EntityChangedError,
    EntityExistsError,
    EntityNotFoundError,
    TableStore,
    TransactionFailedError,
    etag_of,
)
from ..tablejson import join_json, split_json
from .claims import BUSY, CLAIMED, claim_row
from .claims import DONE as CLAIM_DONE

if TYPE_CHECKING:
    from ..state.conversations import ConversationRecord

log = logging.getLogger(__name__)

HEADER = "!job"  # "!" never starts a conversation key (keys.encode_key escapes it)
BATCH_PREFIX = "!b"
REVISION = "!rev"
REVISED_PREFIX = "!v"
SEEN_PREFIX = "!s"  # a roster member, and the page that listed them first
PACK_BATCH = "0"  # a pack is claimed as its batch "0"
PACK_ROW = BATCH_PREFIX + PACK_BATCH
PACK_MARK_PREFIX = "!m"
TRANSACTION_SIZE = 100
ACTIVE_INDEX = "!a"  # + day: the jobs and packs last known active that day (retention's index)
TOMBSTONE_INDEX = "!t"  # + day: the tombstones written that day
INDEX_SHARDS = 16  # each day's index is spread over this many partitions, so that no one takes every job's write
TOMBSTONE = "expiredAt"  # the header field that makes it a tombstone
PURGE_PAGE = 1000  # rows of a partition listed at a time to be deleted
TALLY = "tally"  # a row's outcomes counted, written with them: what a status reads instead of the outcomes
STATUS_COLUMNS = ["RowKey", "status", "activityId", "revision", "outcomesParts", TALLY]  # a status's selection
STATUS_PAGE = 1000  # delivery rows a status reads at a time: their tallies, tens of bytes each (the outcomes a batch
# row holds are about 12 KB; a status read 120 MB for a million conversations when it counted them)


class Status(StrEnum):
    """What a ledger row or entry says: where a claim stands, and what became of one conversation's message."""

    SENDING = "sending"  # claimed by a worker sending right now
    DONE = "done"  # a batch whose sends are over and whose retries are handed on
    RELEASED = "released"  # a batch row whose sends are over, its claim free for the run that finishes it
    SENT = "sent"
    RETRYING = "retrying"  # handed on, to be tried again (by a retry batch)
    GONE = "gone"  # the conversation is gone: its reference is retired
    FAILED = "failed"  # refused for good, or out of attempts
    CANCELLED = "cancelled"  # never sent: the notification was deleted first
    UPDATED = "updated"  # a revision's outcomes: the message now carries the latest revision
    DELETED = "deleted"
    REVISING = "revising"  # a revision row claimed by a worker revising its messages
    IDLE = "idle"  # a revision row free for the next revision


FINAL = frozenset({Status.SENT, Status.GONE, Status.FAILED, Status.CANCELLED})
REVISION_FINAL = frozenset({Status.UPDATED, Status.DELETED, Status.GONE, Status.FAILED})
REVISABLE_KINDS = ("notify", "broadcast", "reminder")
ONE_CONVERSATION_KINDS = ("beginDialog", "replies")  # one target, which no fan-out counts
REVISION_KINDS = ("update", "delete")
ERROR_CHARS = 200
WRITE_ATTEMPTS = 16  # ETag races on one row: each loser reads again


def _now() -> datetime:
    return datetime.now(UTC)


class IdConflictError(ConflictError):
    """A job id already names other work: ids are idempotency keys, never reused for something else."""

    permanent = True


class NotificationNotFoundError(NotFoundError):
    """An update or delete names a job the ledger does not know (yet: a queued notify may not have run)."""


class NotRevisableError(BadInputError):
    """An update or delete names a job that sends no notification (a proactive dialog, a revision)."""


class NotificationDeletedError(ConflictError):
    """An update of a notification that was deleted: its messages are gone for good."""

    permanent = True


@dataclass
class JobHeader:
    """What every worker of a job needs: the job itself, and how far its fan-out got.

    The header is also the claim on the job's id: the first sighting (an API request, a queued job, a
    stored reminder) creates it, and every later sighting must ask for the same work (`digest`).
    """

    job: Job
    kind: str = ""  # the job's kind, or "reminder" for a notify job stored for later
    digest: str = ""
    request_digest: str = ""  # the HTTP request that made it, when one did
    due: str | None = None
    cursor: str | None = None
    fanned_out: bool = False
    targets: int = 0
    error: str = ""  # why the job failed for good (and so stopped)
    warning: str = ""  # what the job could not do, though it went on
    pages: int = 0  # pages of a roster read so far
    tokens: list[str] = field(default_factory=list)  # digests of the roster's continuation tokens so far
    revision: int = 0  # an update or delete job: the number it was given
    pack: str = ""  # a reminder sent in a pack: the pack
    etag: str | None = None


@dataclass
class Outcome:
    """What one send attempt did to one conversation."""

    key: str
    status: Status  # SENT, GONE, FAILED, CANCELLED or RETRYING (for a revision: UPDATED, DELETED ...)
    error: str = ""
    activity_id: str = ""
    attempted: bool = True  # False: released without a send (throttled, or its slot had passed)
    revision: int = 0  # the revision the message carried (0: the job's own)
    throttled: float | None = None  # a 429's Retry-After: the run starts no more requests


@dataclass(frozen=True)
class Delivered:
    """A conversation's recorded state in a job: its last status, the Connector's activity id, why it
    failed, how many attempts it used, and the revision its message carries. A revision row keeps the
    same for what a revision did (status UPDATED, DELETED ...)."""

    status: Status
    activity_id: str = ""
    error: str = ""
    attempts: int = 0
    revision: int = 0

    def to_json(self) -> list[Any]:
        return [self.status, self.activity_id, self.error[:ERROR_CHARS], self.attempts, self.revision]

    @classmethod
    def from_json(cls, value: list[Any]) -> Delivered:
        status, activity_id, error, attempts, *revision = value  # rows written before revisions: four fields
        return cls(Status(status), activity_id, error, int(attempts), int(revision[0]) if revision else 0)


@dataclass(frozen=True)
class Revision:
    """A notification's revision: its number (1, 2 ... in the order revisions arrived), whether it updates
    or deletes, the update or delete job that made it, and an update's message fields."""

    number: int
    kind: str
    id: str
    content: dict[str, Any] = field(default_factory=dict)

    @property
    def deletes(self) -> bool:
        return self.kind == "delete"

    def to_json(self) -> list[Any]:
        return [self.number, self.kind, self.id, self.content]

    @classmethod
    def from_json(cls, value: list[Any]) -> Revision:
        number, kind, revision_id, content = value
        return cls(int(number), kind, revision_id, content)


@dataclass(frozen=True)
class PackItem:
    """A reminder in a pack: its job, its conversation and the reference to send there, its message, when it is
    due (epoch seconds), and its latest revision as it was when packed."""

    job: str
    key: str
    reference: str
    content: dict[str, Any]
    due: float
    revision: Revision | None = None

    def to_json(self) -> list[Any]:
        return [
            self.job,
            self.key,
            self.reference,
            self.content,
            self.due,
            self.revision.to_json() if self.revision else None,
        ]

    @classmethod
    def from_json(cls, value: list[Any]) -> PackItem:
        job, key, reference, content, due, revision = value
        return cls(job, key, reference, content, float(due), Revision.from_json(revision) if revision else None)


@dataclass
class ClaimedKeys:
    """What claiming a job's conversations one by one found, sorted by what this worker does with each."""

    claimed: dict[str, int] = field(default_factory=dict)  # key → attempts so far
    done: set[str] = field(default_factory=set)  # already final: nothing to do
    busy: set[str] = field(default_factory=set)  # another worker holds a live claim


@dataclass
class BatchClaim:
    """The right to send one batch, and what earlier attempts at it recorded (in the order they happened; a
    RETRYING entry was handed on to a retry batch)."""

    row_key: str
    etag: str
    outcomes: dict[str, Delivered] = field(default_factory=dict)
    done: bool = False


@dataclass(frozen=True)
class DeliveryRow:
    """One delivery row of a job: its conversations' states, and whether it is settled (no sender writes it
    any more: a batch marked done, a conversation with a final status)."""

    row_id: str
    entries: list[tuple[str, Delivered]]
    settled: bool = True


@dataclass(frozen=True)
class Prepared:
    """A one-conversation delivery whose messages were kept before sending."""

    status: str  # a Status, or "" for a row written without one
    messages: list[dict[str, Any]]


@dataclass
class RevisionCounts:
    """Where the latest revision stands: messages that carry it (updated, or sent with it) or are deleted,
    messages beyond changing, and sent messages still to revise."""

    revision: Revision
    revised: int = 0
    failed: int = 0
    pending: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.revision.id,
            "kind": self.revision.kind,
            "number": self.revision.number,
            "state": "revising" if self.pending > 0 else "done",
            "deleted" if self.revision.deletes else "updated": self.revised,
            "failed": self.failed,
            "pending": max(0, self.pending),
        }


@dataclass(frozen=True)
class ExpiredJob:
    """What is left of a job whose records retention deleted: its tombstone."""

    id: str
    kind: str
    created: str
    expired_at: str

    def describe(self) -> str:
        return (
            f"job {self.id} ({self.kind}, created {self.created}) expired on {self.expired_at}: its delivery "
            "records were deleted once it had been finished for BotLedgerRetentionDays"
        )


@dataclass(frozen=True)
class Filed:
    """An index row: a job's or a pack's partition filed under a day (a tombstone: its ETag as written)."""

    row: tuple[str, str]  # the index row's PartitionKey and RowKey
    id: str  # the job's or pack's id
    pack: bool = False
    etag: str = ""


@dataclass(frozen=True)
class Activity:
    """A partition as retention sees it: when the last of its rows changed (None: it has none), its header's ETag
    (a tombstone's too), and a pack's row's status."""

    last: datetime | None
    header_etag: str | None
    pack_status: str | None


@dataclass
class JobStatus:
    id: str
    kind: str
    created: str
    fanned_out: bool
    targets: int
    counts: dict[str, int]
    error: str = ""
    due: str | None = None
    revision: RevisionCounts | None = None
    warning: str = ""

    def __post_init__(self) -> None:
        if self.kind in ONE_CONVERSATION_KINDS:
            self.fanned_out, self.targets = True, 1

    @property
    def pending(self) -> int:
        return max(0, self.targets - sum(self.counts.get(s, 0) for s in FINAL))

    @property
    def ended(self) -> bool:
        """Done, deleted or failed, and no revision of it still revising: nothing more happens to the job."""
        return self.state in ("done", "deleted", "failed") and (self.revision is None or self.revision.pending <= 0)

    @property
    def state(self) -> str:
        if self.error:
            return "failed"
        if not self.fanned_out:
            return "scheduled" if self.kind == "reminder" and not self.counts else "fanning-out"
        if self.pending:
            return "queued" if self.kind in ONE_CONVERSATION_KINDS and not self.counts else "sending"
        deleted = self.revision is not None and self.revision.revision.deletes and self.revision.pending <= 0
        return "deleted" if deleted else "done"

    def to_dict(self) -> dict[str, Any]:
        c = self.counts
        out: dict[str, Any] = {
            "id": self.id,
            "kind": self.kind,
            "created": self.created,
            "state": self.state,
            "targets": self.targets,
            "sent": c.get(Status.SENT, 0),
            "skipped": c.get(Status.GONE, 0),
            "failed": c.get(Status.FAILED, 0),
            "pending": self.pending,
        }
        if c.get(Status.CANCELLED):
            out["cancelled"] = c[Status.CANCELLED]
        if self.due:
            out["due"] = self.due
        if self.error:
            out["error"] = self.error
        if self.warning:
            out["warning"] = self.warning
        if self.revision is not None:
            out["revision"] = self.revision.to_dict()
        return out


@dataclass
class RevisionJobStatus:
    """An update or delete job: the number it got among the notification's revisions, and, while it is the
    latest, how far revising the sent messages got."""

    id: str
    kind: str
    created: str
    notification: str
    number: int
    latest: RevisionCounts | None
    error: str = ""

    @property
    def ended(self) -> bool:
        """Done, superseded or failed: nothing more happens to the job."""
        return self.to_dict()["state"] in ("done", "superseded", "failed")

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": self.id,
            "kind": self.kind,
            "created": self.created,
            "notification": self.notification,
            "revision": self.number,
        }
        latest = self.latest
        if self.error:
            out.update(state="failed", error=self.error)
        elif not self.number:
            out["state"] = "queued"
        elif latest is None or latest.revision.number != self.number:
            out["state"] = "superseded"
            if latest is not None:
                out["supersededBy"] = latest.revision.id
        else:
            counts = latest.to_dict()
            out.update({k: v for k, v in counts.items() if k not in ("id", "kind", "number")})
        return out


class DeliveryLedger(TableStore):
    table_name = DELIVERIES_TABLE

    def __init__(self, table: Any = None, claim_ttl: timedelta = timedelta(seconds=120)) -> None:
        super().__init__(table)
        self.claim_ttl = claim_ttl

    # ---- the job header ----------------------------------------------------------------
    async def open_job(
        self, job: Job, *, kind: str | None = None, request_digest: str = "", seen: bool = False
    ) -> JobHeader:
        """Claim the job's id: its header, created on first sight. A later sighting gets the stored header
        when it asks for the same work (the same request, for an HTTP one), else IdConflictError. The job is filed
        in retention's index first, so that no header is ever missing from it. `seen`: the job was most likely
        opened before (taken from the jobs queue, where its POST or the invocation before put it), so its header
        is read first: one storage call, where filing and creating it would have taken three."""
        header = JobHeader(job, kind=kind or job.kind, digest=job.digest(), request_digest=request_digest, due=job.due)
        stored = await self._header(job.id) if seen else None
        if stored is None:
            stored = await self._create(job, header)
            if stored is None:
                return header
        if isinstance(stored, ExpiredJob):
            raise IdConflictError(f"id {job.id} is taken: {stored.describe()}; choose a new id for new work")
        same = stored.request_digest == request_digest if request_digest else stored.digest == header.digest
        if not same:
            raise IdConflictError(
                f"id {job.id} is already used by another job ({stored.kind}, created "
                f"{stored.job.created}); choose a new id for new work"
            )
        return stored

    async def _create(self, job: Job, header: JobHeader) -> JobHeader | ExpiredJob | None:
        """File the job and create its header (setting its ETag); None once created, else what another sighting
        stored first."""
        now = _now()
        await self._file(ACTIVE_INDEX, _day(max(now, due_time(job)) if job.due else now), job.id)
        entity = {
            "PartitionKey": encode_key(job.id),
            "RowKey": HEADER,
            "kind": header.kind,
            "created": job.created,
            "digest": header.digest,
            "requestDigest": header.request_digest,
            "due": job.due or "",
            "fannedOut": False,
            "targets": 0,
            **split_json("job", json.loads(job.to_json())),
        }
        try:
            header.etag = await self.table.insert(entity)
            return None
        except EntityExistsError:
            stored = await self._header(job.id)
        assert stored is not None  # a header is only ever replaced by its tombstone, which outlives its job
        return stored

    async def header(self, job_id: str) -> JobHeader | None:
        """The job's header; None if there is none, or only its tombstone."""
        header = await self._header(job_id)
        return header if isinstance(header, JobHeader) else None

    async def _header(self, job_id: str) -> JobHeader | ExpiredJob | None:
        try:
            entity = await self.table.get(encode_key(job_id), HEADER)
        except EntityNotFoundError:
            return None
        if TOMBSTONE in entity:
            return ExpiredJob(entity.get("id") or job_id, entity["kind"], entity["created"], entity[TOMBSTONE])
        job = parse_job(json.dumps(join_json(entity, "job")))
        return JobHeader(
            job=job,
            kind=entity.get("kind") or job.kind,
            digest=entity.get("digest") or job.digest(),
            request_digest=entity.get("requestDigest") or "",
            due=entity.get("due") or None,
            cursor=entity.get("cursor") or None,
            error=entity.get("error") or "",
            fanned_out=bool(entity.get("fannedOut")),
            targets=int(entity.get("targets") or 0),
            warning=entity.get("warning") or "",
            pages=int(entity.get("pages") or 0),
            tokens=json.loads(entity.get("tokens") or "[]"),
            revision=int(entity.get("revision") or 0),
            pack=entity.get("pack") or "",
            etag=etag_of(entity),
        )

    async def save_progress(self, header: JobHeader) -> None:
        """Save the fan-out's cursor; with the header's ETag, so two fan-outs cannot interleave
        (EntityChangedError for the one that lost)."""
        entity = {
            "PartitionKey": encode_key(header.job.id),
            "RowKey": HEADER,
            "cursor": header.cursor or "",
            "fannedOut": header.fanned_out,
            "targets": header.targets,
            "warning": header.warning,
            "pages": header.pages,
            "tokens": json.dumps(header.tokens),
        }
        header.etag = await self.table.merge(entity, header.etag)

    async def skip_unreachable(
        self, job_id: str, key: str, record: ConversationRecord | None, *, header: JobHeader | None = None
    ) -> None:
        """A job for one conversation the bot cannot reach (none stored under that key, or retired): recorded as
        skipped, with a warning in its status, so that a mistyped key never looks like success. The warning goes
        on `header` when given (its caller saves it, with what marks the job done), else it is written before
        the outcome: a status that says done already says why nothing was sent."""
        warning = (
            f"no conversation {key!r} is stored"
            if record is None
            else f"conversation {key!r} is retired ({record.retired_reason}): the bot can no longer write there"
        )
        log.warning("job %s: %s; nothing sent", job_id, warning)
        if header is not None:
            header.warning = warning
        else:
            await self.warn(job_id, warning)
        claims = await self.claim(job_id, [key])
        why = "unknown conversation" if record is None else f"retired: {record.retired_reason}"
        if key in claims.claimed:
            await self.record(job_id, [Outcome(key, Status.GONE, why)], claims.claimed)

    async def warn(self, job_id: str, warning: str) -> None:
        """What the job could not do, though it went on, for its status to say (a target that matched nobody)."""
        await self.table.merge({"PartitionKey": encode_key(job_id), "RowKey": HEADER, "warning": warning[:1000]})

    async def fail_job(self, job: Job, error: str) -> None:
        """The job can no longer succeed (its message leaves for the poison queue): its status says why."""
        header = await self.header(job.id)
        if header is None or header.digest != job.digest():
            return  # nothing claimed, or the id belongs to another job
        await self.table.merge({"PartitionKey": encode_key(job.id), "RowKey": HEADER, "error": error[:1000]})
        log.error("job %s failed for good: %s", job.id, error)

    # ---- send batches ------------------------------------------------------------------
    async def claim_batch(self, job_id: str, batch_id: str, now: datetime | None = None) -> BatchClaim | None:
        """Take the right to send a batch; None while another worker holds it."""
        claim = await claim_row(
            self.table,
            encode_key(job_id),
            BATCH_PREFIX + batch_id,
            status=Status.SENDING,
            ttl=self.claim_ttl,
            now=now or _now(),
            done=(Status.DONE,),
            insert={},
        )
        if claim.state == BUSY:
            return None
        outcomes = _outcomes(claim.row) if claim.row is not None else {}
        return BatchClaim(BATCH_PREFIX + batch_id, claim.etag or "", outcomes, done=claim.state == CLAIM_DONE)

    async def batch_done(self, job_id: str, batch_id: str) -> bool:
        """Whether a batch was sent through already (one point read; claims nothing)."""
        try:
            row = await self.table.get(encode_key(job_id), BATCH_PREFIX + batch_id)
        except EntityNotFoundError:
            return False
        return row.get("status") == Status.DONE

    async def record_batch(
        self, job_id: str, claim: BatchClaim, *, done: bool = False, release: bool = False, now: datetime | None = None
    ) -> None:
        """Write the batch's outcomes so far (and renew the claim, or release it for a later run to finish);
        EntityChangedError if it was taken over."""
        status = Status.DONE if done else Status.RELEASED if release else Status.SENDING
        entity = {
            "PartitionKey": encode_key(job_id),
            "RowKey": claim.row_key,
            "status": status,
            "claimedAt": now or _now(),
            **_outcome_columns(claim.outcomes),
        }
        claim.etag = await self.table.merge(entity, claim.etag)
        claim.done = done

    async def abandon(self, job_id: str, batch_id: str, keys: list[str], error: str) -> None:
        """A batch the host gave up on: every conversation without an outcome yet is failed, so that the
        job's count of pending ones reaches zero."""
        if batch_id:
            row: Mapping[str, Any]
            try:
                row = await self.table.get(encode_key(job_id), BATCH_PREFIX + batch_id)
            except EntityNotFoundError:
                row = {}
            if row.get("status") == Status.DONE:
                return  # finished, its retries handed on
            await self.record_undeliverable(job_id, batch_id, abandoned(_outcomes(row) if row else {}, keys, error))
            return
        for key in keys:
            prepared = await self.prepared(job_id, key)
            if prepared is None or prepared.status not in FINAL:
                await self.table.upsert(
                    {
                        "PartitionKey": encode_key(job_id),
                        "RowKey": key,
                        "status": Status.FAILED,
                        "lastError": error[:1000],
                    },
                    merge=True,
                )

    async def record_undeliverable(self, job_id: str, batch_id: str, outcomes: dict[str, Delivered]) -> None:
        """A finished batch row for conversations no send will reach (counted by status, like any other)."""
        await self.table.upsert(
            {
                "PartitionKey": encode_key(job_id),
                "RowKey": BATCH_PREFIX + batch_id,
                "status": Status.DONE,
                **_outcome_columns(outcomes),
            }
        )

    async def first_sightings(self, job_id: str, page: str, names: list[str]) -> set[str]:
        """Which of `names` (a roster page's member ids) this page of the job may act on: those no other page
        of the job listed. A page read again (after a crash) finds its own."""
        pk = encode_key(job_id)
        rows = {SEEN_PREFIX + encode_key(name): name for name in names}
        ours: set[str] = set()
        for chunk in _chunks(list(rows), TRANSACTION_SIZE):
            try:
                await self.table.transact(
                    [("create", {"PartitionKey": pk, "RowKey": rk, "page": page}) for rk in chunk]
                )
                ours.update(rows[rk] for rk in chunk)
                continue
            except TransactionFailedError:
                pass  # some were seen: one at a time
            for rk in chunk:
                try:
                    await self.table.insert({"PartitionKey": pk, "RowKey": rk, "page": page})
                    ours.add(rows[rk])
                except EntityExistsError:
                    if (await self.table.get(pk, rk)).get("page") == page:
                        ours.add(rows[rk])
        return ours

    # ---- packs of reminders --------------------------------------------------------------------
    async def write_pack(self, pack_id: str, items: list[PackItem]) -> None:
        """Keep a pack's reminders before its message goes on the queue: the message names only the pack."""
        await self._file(ACTIVE_INDEX, _day(_now()), pack_id, pack=True)
        await self.table.insert(
            {
                "PartitionKey": encode_key(pack_id),
                "RowKey": PACK_ROW,
                "status": "planned",
                **split_json("items", [item.to_json() for item in items]),
            }
        )

    async def pack_items(self, pack_id: str) -> list[PackItem] | None:
        try:
            row = await self.table.get(encode_key(pack_id), PACK_ROW)
        except EntityNotFoundError:
            return None
        return [PackItem.from_json(item) for item in join_json(row, "items") or []]

    async def packed(self, job_id: str, pack_id: str) -> None:
        """A reminder's job is sent by a pack: its status says sending, and a revision finds the pack."""
        await self.table.merge(
            {"PartitionKey": encode_key(job_id), "RowKey": HEADER, "pack": pack_id, "fannedOut": True, "targets": 1}
        )

    async def pack_revisions(self, pack_id: str) -> dict[str, Revision]:
        """Revisions of a pack's reminders registered after they were packed, by reminder."""
        query = (
            f"PartitionKey eq '{encode_key(pack_id)}' and RowKey ge '{PACK_MARK_PREFIX}' "
            f"and RowKey lt '{PACK_MARK_PREFIX[0]}{chr(ord(PACK_MARK_PREFIX[1]) + 1)}'"
        )
        return {
            row["RowKey"][len(PACK_MARK_PREFIX) :]: Revision.from_json(json.loads(row["revision"]))
            async for row in self.table.query(query)
        }

    async def settle(self, job_id: str, outcome: Outcome) -> None:
        """Write a packed reminder's final outcome where its job's status and revisions look for it."""
        await self.table.upsert(
            {
                "PartitionKey": encode_key(job_id),
                "RowKey": outcome.key,
                "status": outcome.status,
                "lastError": outcome.error[:1000],
                "activityId": outcome.activity_id,
                "attempts": int(outcome.attempted),
                "revision": outcome.revision,
                "updatedAt": _now(),
            }
        )

    # ---- one-conversation deliveries ----------------------------------------------------------
    async def claim(self, job_id: str, keys: list[str], now: datetime | None = None) -> ClaimedKeys:
        """Take the right to send to each key; say which are done already or held by another."""
        now = now or _now()
        pk = encode_key(job_id)
        claims = ClaimedKeys()
        # The common case, a first delivery: claim every row in one transaction per 100.
        fresh = [
            {"PartitionKey": pk, "RowKey": k, "status": Status.SENDING, "attempts": 0, "claimedAt": now}
            for k in dict.fromkeys(keys)
        ]
        leftover: list[str] = []
        for chunk in _chunks(fresh, TRANSACTION_SIZE):
            try:
                await self.table.transact([("create", e) for e in chunk])
                claims.claimed.update((e["RowKey"], 0) for e in chunk)
            except TransactionFailedError:
                leftover.extend(e["RowKey"] for e in chunk)
        for key in leftover:  # some rows exist: a redelivery, a retry, or messages kept by `prepare`
            claim = await claim_row(
                self.table,
                pk,
                key,
                status=Status.SENDING,
                ttl=self.claim_ttl,
                now=now,
                done=FINAL,
                insert={"attempts": 0},
            )
            if claim.state == CLAIMED:
                claims.claimed[key] = int(claim.row.get("attempts") or 0) if claim.row is not None else 0
            elif claim.state == CLAIM_DONE:
                claims.done.add(key)
            else:
                claims.busy.add(key)
        return claims

    async def record(
        self, job_id: str, outcomes: list[Outcome], attempts: dict[str, int], now: datetime | None = None
    ) -> None:
        """Write what happened to claimed rows, in batch transactions."""
        now = now or _now()
        pk = encode_key(job_id)
        entities = [
            {
                "PartitionKey": pk,
                "RowKey": o.key,
                "status": o.status,
                "lastError": o.error[:1000],
                "activityId": o.activity_id,
                "attempts": attempts.get(o.key, 0) + o.attempted,
                "revision": o.revision,
                "updatedAt": now,
            }
            for o in outcomes
        ]
        for chunk in _chunks(entities, TRANSACTION_SIZE):
            await self.table.transact([("update", e, {"mode": "merge"}) for e in chunk])

    async def prepare(self, job_id: str, key: str, messages: list[dict[str, Any]]) -> None:
        """Keep a one-conversation delivery's messages before sending them, so that they survive a crash."""
        await self.table.upsert(
            {
                "PartitionKey": encode_key(job_id),
                "RowKey": key,
                "status": Status.RETRYING,
                "attempts": 0,
                **split_json("payload", messages),
            }
        )

    async def prepared(self, job_id: str, key: str) -> Prepared | None:
        try:
            row = await self.table.get(encode_key(job_id), key)
        except EntityNotFoundError:
            return None
        return Prepared(row.get("status", ""), join_json(row, "payload") or [])

    # ---- reading a job back -------------------------------------------------------------
    async def status(self, job_id: str) -> JobStatus | RevisionJobStatus | ExpiredJob | None:
        header = await self._header(job_id)
        if header is None or isinstance(header, ExpiredJob):
            return header
        if header.kind in REVISION_KINDS:
            notification = header.job.notification or ""
            target = await self.status(notification)
            latest_counts = target.revision if isinstance(target, JobStatus) else None
            return RevisionJobStatus(
                job_id, header.kind, header.job.created, notification, header.revision, latest_counts, header.error
            )
        latest = await self.revision(job_id)
        counts: dict[str, int] = {}
        revision = RevisionCounts(latest) if latest is not None else None
        partition = encode_key(job_id)
        query = f"PartitionKey eq '{partition}' and RowKey ne '{HEADER}' and RowKey ne '{REVISION}'"
        async for row in self.table.query(query, page_size=STATUS_PAGE, select=STATUS_COLUMNS):
            rk = row["RowKey"]
            revised_row = rk.startswith(REVISED_PREFIX)
            if not revised_row and not _is_delivery_row(rk):
                continue
            for status, number, has_id, n in await self._tally(partition, row):
                if revised_row:
                    # a message revised at the latest number is off the pending list
                    if revision is not None and number >= revision.revision.number and status in REVISION_FINAL:
                        revised = status in (Status.UPDATED, Status.DELETED)
                        revision.revised += n * revised
                        revision.failed += n * (not revised)
                        revision.pending -= n
                    continue
                counts[status] = counts.get(status, 0) + n
                if revision is not None and status == Status.SENT:
                    if number >= revision.revision.number:
                        revision.revised += n
                    elif not has_id:  # the Connector gave no id: nothing to change it by
                        revision.failed += n
                    else:
                        revision.pending += n
        return JobStatus(
            header.job.id,
            header.kind,
            header.job.created,
            header.fanned_out,
            header.targets,
            counts,
            header.error,
            header.due,
            revision,
            header.warning,
        )

    async def _tally(self, partition: str, row: Mapping[str, Any]) -> list[_Counted]:
        """A delivery or revision row's outcomes counted, from the columns a status selects (STATUS_COLUMNS)."""
        rk = row["RowKey"]
        if not rk.startswith("!"):  # one conversation's row: its own columns
            return [(row.get("status") or "", int(row.get("revision") or 0), bool(row.get("activityId")), 1)]
        if (text := row.get(TALLY)) is not None:
            return [(status, int(number), bool(has_id), int(n)) for status, number, has_id, n in json.loads(text)]
        if not row.get("outcomesParts"):
            return []
        try:  # written before rows carried a tally: its outcomes themselves
            return _count(_outcomes(await self.table.get(partition, rk)))
        except EntityNotFoundError:
            return []

    async def deliveries(
        self, job_id: str, cursor: str | None = None, page_size: int = 100
    ) -> tuple[list[DeliveryRow], str | None]:
        """A page of the job's delivery rows, and the cursor of the next (None at the end). A conversation
        retried in a later batch has a RETRYING entry in the earlier one; its final status is in exactly
        one row."""
        query = f"PartitionKey eq '{encode_key(job_id)}' and RowKey ne '{HEADER}'"
        entities, token = await self.table.page(query, page_size=page_size, cursor=cursor)
        rows = [_delivery_row(e) for e in entities if _is_delivery_row(e["RowKey"])]
        return rows, token

    async def delivery_row(self, job_id: str, row_id: str) -> DeliveryRow | None:
        try:
            return _delivery_row(await self.table.get(encode_key(job_id), row_id))
        except EntityNotFoundError:
            return None

    # ---- revisions ---------------------------------------------------------------------------
    async def revision(self, job_id: str) -> Revision | None:
        """The job's latest revision; None while it has none."""
        try:
            return _revision(await self.table.get(encode_key(job_id), REVISION))
        except EntityNotFoundError:
            return None

    async def register_revision(self, job: Job) -> Revision:
        """Give an update or delete job its number among the notification's revisions, once: the same job
        again gets the number it had. Every later send carries the latest revision, so it is what counts.

        The job's own header claims its id (IdConflictError for other work) and records its number before
        the revision row is written, so that a crash in between, then a newer revision, then this job
        again, can never make this older one the latest.
        """
        notification = job.notification
        assert notification is not None and job.kind in REVISION_KINDS
        target = await self._header(notification)
        if target is None:
            raise NotificationNotFoundError(f"no notification job {notification!r}")
        if isinstance(target, ExpiredJob):
            raise NotificationNotFoundError(target.describe())
        if target.kind not in REVISABLE_KINDS:
            raise NotRevisableError(
                f"job {notification!r} is a {target.kind} job; only notifications can be updated or deleted"
            )
        header = await self.open_job(job)
        pk = encode_key(notification)
        for _ in range(WRITE_ATTEMPTS):
            try:
                row = await self.table.get(pk, REVISION)
                latest, etag = _revision(row), etag_of(row)
            except EntityNotFoundError:
                latest, etag = None, None
            if latest is not None and latest.id == job.id:
                return latest
            if latest is not None and header.revision and latest.number >= header.revision:
                return Revision(header.revision, job.kind, job.id, job.content())  # since superseded
            if latest is not None and latest.deletes:
                if job.kind == "delete":
                    return latest  # deleted already: the deletion stands
                raise NotificationDeletedError(
                    f"notification {notification} was deleted (by job {latest.id}); "
                    "its messages can no longer be updated"
                )
            revision = Revision((latest.number if latest else 0) + 1, job.kind, job.id, job.content())
            if header.revision != revision.number:
                header.revision = revision.number
                await self.table.merge(
                    {"PartitionKey": encode_key(job.id), "RowKey": HEADER, "revision": revision.number}
                )
            entity = {
                "PartitionKey": pk,
                "RowKey": REVISION,
                "number": revision.number,
                "kind": revision.kind,
                "revisionId": job.id,
                **split_json("content", revision.content),
            }
            try:
                if etag is None:
                    await self.table.insert(entity)
                else:
                    await self.table.replace(entity, etag)
            except (EntityExistsError, EntityChangedError):
                continue  # another revision of the notification arrived at the same moment
            log.info("notification %s: revision %d (%s) by job %s", notification, revision.number, job.kind, job.id)
            if target.kind == "reminder":  # packed since `target` was read? its pack must learn of this
                packed = await self.header(notification)
                if packed is not None and packed.pack:
                    await self.table.upsert(
                        {
                            "PartitionKey": encode_key(packed.pack),
                            "RowKey": PACK_MARK_PREFIX + notification,
                            "revision": json.dumps(revision.to_json()),
                        }
                    )
            return revision
        raise EntityChangedError(409, "Busy", f"notification {notification}: too many concurrent revisions")

    async def claim_revision(self, job_id: str, row_id: str, now: datetime | None = None) -> BatchClaim | None:
        """Take the right to revise one delivery row's messages; None while another worker holds it. Claims
        end IDLE, not done: a later revision claims the row again."""
        claim = await claim_row(
            self.table,
            encode_key(job_id),
            REVISED_PREFIX + row_id,
            status=Status.REVISING,
            ttl=self.claim_ttl,
            now=now or _now(),
            insert={},
        )
        if claim.state == BUSY:
            return None
        outcomes = _outcomes(claim.row) if claim.row is not None else {}
        return BatchClaim(REVISED_PREFIX + row_id, claim.etag or "", outcomes)

    async def record_revision(
        self, job_id: str, claim: BatchClaim, *, release: bool = False, now: datetime | None = None
    ) -> None:
        """Write what revising did so far (renewing the claim, or releasing it); EntityChangedError if the
        claim was taken over."""
        entity = {
            "PartitionKey": encode_key(job_id),
            "RowKey": claim.row_key,
            "status": Status.IDLE if release else Status.REVISING,
            "claimedAt": now or _now(),
            **_outcome_columns(claim.outcomes),
        }
        claim.etag = await self.table.merge(entity, claim.etag)

    # ---- retention (botcore.delivery.retention) ------------------------------------------------
    async def _file(self, index: str, day: str, name: str, **fields: Any) -> None:
        """File a job's or a pack's partition (or a tombstone) under a day of retention's index."""
        shard = zlib.crc32(name.encode()) % INDEX_SHARDS
        await self.table.upsert(
            {"PartitionKey": f"{index}{day}-{shard:x}", "RowKey": encode_key(name), "id": name, **fields}
        )

    async def filed(
        self, index: str, before: datetime, cursor: str | None, page_size: int
    ) -> tuple[list[Filed], list[str], str | None]:
        """A page of what `index` files under days before `before`'s: the entries, what was wrong with the rows
        that are none, and the cursor of the next page (None at the end)."""
        query = f"PartitionKey ge '{index}' and PartitionKey lt '{index}{_day(before)}'"
        rows, cursor = await self.table.page(query, page_size=page_size, cursor=cursor)
        entries, problems = [], []
        for row in rows:
            name = row.get("id")
            if isinstance(name, str) and encode_key(name) == row["RowKey"]:
                entries.append(
                    Filed(
                        (row["PartitionKey"], row["RowKey"]),
                        name,
                        bool(row.get("pack")),
                        etag=row.get("tombstoneEtag") or "",
                    )
                )
            else:
                problems.append(f"index row {row['PartitionKey']}/{row['RowKey']}: no id that matches its key")
        return entries, problems, cursor

    async def activity(self, name: str) -> Activity:
        """A job's or a pack's partition, as retention decides by (every row's key and time read)."""
        pk = encode_key(name)
        last: datetime | None = None
        etag: str | None = None
        pack_status: str | None = None
        cursor: str | None = None
        while True:
            page, cursor = await self.table.page(
                f"PartitionKey eq '{pk}'", select=["RowKey", "Timestamp", "status"], cursor=cursor
            )
            for row in page:
                changed = row.metadata["timestamp"]
                assert changed is not None  # selected
                last = changed if last is None else max(last, changed)
                if row["RowKey"] == HEADER:
                    etag = etag_of(row)
                elif row["RowKey"] == PACK_ROW:
                    pack_status = row.get("status")
            if cursor is None:
                return Activity(last, etag, pack_status)

    async def expire(self, status: JobStatus | RevisionJobStatus, etag: str, now: datetime) -> tuple[ExpiredJob, str]:
        """Replace an ended job's header with its tombstone, if the header is still as read (its ETag):
        EntityChangedError if not. From then on its status says it expired, and its id stays taken. Returns the
        tombstone and its ETag."""
        expired = ExpiredJob(status.id, status.kind, status.created, now.isoformat(timespec="seconds"))
        entity = {
            "PartitionKey": encode_key(status.id),
            "RowKey": HEADER,
            "id": expired.id,
            "kind": expired.kind,
            "created": expired.created,
            TOMBSTONE: expired.expired_at,
        }
        return expired, await self.table.replace(entity, etag)

    async def purge(self, name: str, more: Callable[[], bool]) -> tuple[int, bool]:
        """Delete a partition's rows but its header (a tombstone, by now), a page at a time while `more()`: how
        many, and whether none is left."""
        pk = encode_key(name)
        deleted = 0
        while more():
            rows, _ = await self.table.page(
                f"PartitionKey eq '{pk}' and RowKey ne '{HEADER}'", select=["RowKey"], page_size=PURGE_PAGE
            )
            if not rows:
                return deleted, True
            for chunk in _chunks([row["RowKey"] for row in rows], TRANSACTION_SIZE):
                try:
                    await self.table.transact([("delete", {"PartitionKey": pk, "RowKey": rk}) for rk in chunk])
                except TransactionFailedError:  # another pass deleted one of them: one at a time
                    for rk in chunk:
                        await self.table.delete(pk, rk)
                deleted += len(chunk)
        return deleted, False

    async def refile(self, entry: Filed, day: datetime) -> None:
        """File a partition under a later day (it was active then), and take it from its old day."""
        await self._file(ACTIVE_INDEX, _day(day), entry.id, **({"pack": True} if entry.pack else {}))
        await self.unfile(entry)

    async def file_tombstone(self, entry: Filed, expired: ExpiredJob, etag: str) -> None:
        """File a job's tombstone under the day it was written (so the same one is filed once, however often
        this runs), and take the job from the index of partitions."""
        await self._file(
            TOMBSTONE_INDEX, _day(datetime.fromisoformat(expired.expired_at)), expired.id, tombstoneEtag=etag
        )
        await self.unfile(entry)

    async def unfile(self, entry: Filed) -> None:
        await self.table.delete(*entry.row)

    async def forget(self, entry: Filed) -> bool:
        """Delete a tombstone filed in the index, if it is still the one filed (a header with another ETag
        belongs to a newer job of that id), and its index row; whether the tombstone was deleted."""
        try:
            await self.table.delete(encode_key(entry.id), HEADER, entry.etag)
            forgotten = True
        except EntityChangedError:
            log.info("job %s: a newer job has its id; only its old tombstone's index row is deleted", entry.id)
            forgotten = False
        await self.unfile(entry)
        return forgotten


def handed_on(outcomes: dict[str, Delivered]) -> dict[int, list[str]]:
    """A batch's conversations to try again (RETRYING), grouped by the attempts they used: each group becomes
    one retry batch, named after the batch and its attempts."""
    groups: dict[int, list[str]] = {}
    for key, delivered in outcomes.items():
        if delivered.status == Status.RETRYING:
            groups.setdefault(delivered.attempts, []).append(key)
    return dict(sorted(groups.items()))


def abandoned(outcomes: dict[str, Delivered], keys: list[str], error: str) -> dict[str, Delivered]:
    """A batch the host gave up on, as it is recorded: every conversation without a final outcome fails with
    `error`, one handed on included (the batch was not marked done, so its retry batch was never sure to exist),
    so that the job's count of pending ones reaches zero."""
    failed = Delivered(Status.FAILED, error=error)
    return {**{k: failed for k in keys}, **{k: d for k, d in outcomes.items() if d.status != Status.RETRYING}}


def _is_delivery_row(row_key: str) -> bool:
    return row_key.startswith(BATCH_PREFIX) or not row_key.startswith("!")


def _delivery_row(row: Any) -> DeliveryRow:
    rk = row["RowKey"]
    if rk.startswith(BATCH_PREFIX):
        return DeliveryRow(rk, list(_outcomes(row).items()), row.get("status") == Status.DONE)
    delivered = Delivered(
        row.get("status", ""),
        row.get("activityId", ""),
        row.get("lastError", ""),
        int(row.get("attempts") or 0),
        int(row.get("revision") or 0),
    )
    return DeliveryRow(rk, [(rk, delivered)], delivered.status in FINAL)


def _revision(row: Any) -> Revision:
    return Revision(int(row["number"]), row["kind"], row["revisionId"], join_json(row, "content") or {})


_Counted = tuple[str, int, bool, int]  # a status, a revision number, whether sent with an activity id; how many


def _count(outcomes: Mapping[str, Delivered]) -> list[_Counted]:
    counted = Counter((d.status, d.revision, bool(d.activity_id)) for d in outcomes.values())
    return [(status, number, has_id, n) for (status, number, has_id), n in counted.items()]


def _outcome_columns(outcomes: Mapping[str, Delivered]) -> dict[str, Any]:
    """A row's outcomes and their tally, written in one write so that they always agree."""
    tally = [[status, number, int(has_id), n] for status, number, has_id, n in _count(outcomes)]
    return {
        **split_json("outcomes", {k: d.to_json() for k, d in outcomes.items()}),
        TALLY: json.dumps(tally, separators=(",", ":")),
    }


def _outcomes(row: Any) -> dict[str, Delivered]:
    return {k: Delivered.from_json(v) for k, v in (join_json(row, "outcomes") or {}).items()}


def _day(at: datetime) -> str:
    """A day of retention's index (UTC), as its partitions name it."""
    return at.astimezone(UTC).strftime("%Y%m%d")


def _chunks(items: list[Any], size: int) -> list[list[Any]]:
    return [items[i : i + size] for i in range(0, len(items), size)]
