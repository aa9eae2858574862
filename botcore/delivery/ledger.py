"""The delivery ledger: what was sent where, one Table Storage partition per job.

It is what makes a redelivered queue message send nothing twice, what a job's
status is counted from, and where the Connector's activity ids are kept so that
sent notifications can be updated or deleted later.

PartitionKey is the job id. Rows:
- HEADER: the job itself and how far its fan-out got;
- a send batch of a broadcast ("!b" + batch id): one row for up to 100
  conversations, holding the batch's claim and every conversation's outcome
  (status, activity id, error, attempts) as JSON. One row written a few times
  per batch instead of two rows per message keeps the table's write rate out of
  a broadcast's way;
- a one-conversation delivery (notify one conversation, a proactive dialog):
  one row per conversation, RowKey the conversation key.

A claim (status `sending`) is held by the worker sending right now. One older
than BotDeliveryClaimSeconds belongs to a worker that died; another may take it
over. Messages may then be sent twice: at most the sends in flight and the
outcomes not yet written (see broadcast.OutcomeRecorder).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any, AsyncIterator

from .jobs import Job
from ..keys import encode_key
from ..settings import DELIVERIES_TABLE
from ..storage import TableStore
from ..errors import ConflictError
from ..storage import (EntityChangedError, EntityExistsError, EntityNotFoundError, TransactionFailedError,
                      etag_of)
from ..tablejson import join_json, split_json

if TYPE_CHECKING:
    from azure.data.tables import TableEntity

log = logging.getLogger(__name__)

HEADER = "!job"  # "!" never starts a conversation key (keys.encode_key escapes it)
BATCH_PREFIX = "!b"
TRANSACTION_SIZE = 100
SENDING, SENT, RETRYING, GONE, FAILED, DONE = "sending", "sent", "retrying", "gone", "failed", "done"
FINAL = frozenset({SENT, GONE, FAILED})
ERROR_CHARS = 200


def _now() -> datetime:
    return datetime.now(timezone.utc)


class IdConflictError(ConflictError):
    """A job id already names other work: ids are idempotency keys, never reused for something else."""

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
    etag: str | None = None


@dataclass
class Outcome:
    key: str
    status: str  # SENT, GONE, FAILED or RETRYING
    error: str = ""
    activity_id: str = ""
    attempted: bool = True  # False: released without a send (the channel was throttling)


@dataclass
class Claims:
    claimed: dict[str, int] = field(default_factory=dict)  # key → attempts so far
    done: set[str] = field(default_factory=set)  # already final: nothing to do
    busy: set[str] = field(default_factory=set)  # another worker holds a live claim


@dataclass
class BatchClaim:
    """The right to send one batch, and what earlier attempts at it recorded.

    outcomes: conversation key → [status, activity id, error, attempts], in the
    order they happened; a `retrying` entry was handed on to a retry batch.
    """

    row_key: str
    etag: str
    outcomes: dict[str, list[Any]] = field(default_factory=dict)
    done: bool = False


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

    @property
    def pending(self) -> int:
        return max(0, self.targets - sum(self.counts.get(s, 0) for s in FINAL))

    @property
    def state(self) -> str:
        if self.error:
            return "failed"
        if not self.fanned_out:
            return "scheduled" if self.kind == "reminder" and not self.counts else "fanning-out"
        return "sending" if self.pending else "done"

    def to_dict(self) -> dict[str, Any]:
        c = self.counts
        out = {
            "id": self.id, "kind": self.kind, "created": self.created, "state": self.state,
            "targets": self.targets, "sent": c.get(SENT, 0), "skipped": c.get(GONE, 0),
            "failed": c.get(FAILED, 0), "pending": self.pending,
        }
        if self.due:
            out["due"] = self.due
        if self.error:
            out["error"] = self.error
        return out


class DeliveryLedger(TableStore):
    table_name = DELIVERIES_TABLE

    # ---- the job header ----------------------------------------------------------------
    async def open_job(self, job: Job, *, kind: str | None = None, request_digest: str = "") -> JobHeader:
        """Claim the job's id: its header, created on first sight. A later sighting gets the stored header
        when it asks for the same work (the same request, for an HTTP one), else IdConflictError."""
        header = JobHeader(job, kind=kind or job.kind, digest=job.digest(), request_digest=request_digest,
                           due=job.due)
        entity = {"PartitionKey": encode_key(job.id), "RowKey": HEADER, "kind": header.kind,
                  "created": job.created, "digest": header.digest, "requestDigest": request_digest,
                  "due": job.due or "", "fannedOut": False, "targets": 0,
                  **split_json("job", json.loads(job.to_json()))}
        try:
            header.etag = await self.table.insert(entity)
            return header
        except EntityExistsError:
            stored = await self.header(job.id)
        assert stored is not None  # headers are never deleted
        same = stored.request_digest == request_digest if request_digest else stored.digest == header.digest
        if not same:
            raise IdConflictError(f"id {job.id} is already used by another job ({stored.kind}, created "
                                  f"{stored.job.created}); choose a new id for new work")
        return stored

    async def header(self, job_id: str) -> JobHeader | None:
        from .jobs import parse_job

        try:
            entity = await self.table.get(encode_key(job_id), HEADER)
        except EntityNotFoundError:
            return None
        cursor = entity.get("cursor")
        job = parse_job(json.dumps(join_json(entity, "job")))
        return JobHeader(
            job=job, kind=entity.get("kind") or job.kind, digest=entity.get("digest") or job.digest(),
            request_digest=entity.get("requestDigest") or "", due=entity.get("due") or None,
            cursor=cursor or None, error=entity.get("error") or "",
            fanned_out=bool(entity.get("fannedOut")), targets=int(entity.get("targets") or 0),
            etag=etag_of(entity),
        )

    async def save_progress(self, header: JobHeader) -> str | None:
        """Save the fan-out's cursor; with the header's ETag, so two fan-outs cannot interleave."""
        entity = {"PartitionKey": encode_key(header.job.id), "RowKey": HEADER, "cursor": header.cursor or "",
                  "fannedOut": header.fanned_out, "targets": header.targets}
        header.etag = await self.table.merge(entity, header.etag)
        return header.etag

    async def fail_job(self, job: Job, error: str) -> None:
        """The job can no longer succeed (its message leaves for the poison queue): its status says why."""
        header = await self.header(job.id)
        if header is None or header.digest != job.digest():
            return  # nothing claimed, or the id belongs to another job
        await self.table.merge({"PartitionKey": encode_key(job.id), "RowKey": HEADER, "error": error[:1000]})
        log.error("job %s failed for good: %s", job.id, error)

    # ---- send batches of a broadcast ----------------------------------------------------------
    async def claim_batch(self, job_id: str, batch_id: str, claim_ttl: timedelta,
                          now: datetime | None = None) -> BatchClaim | None:
        """Take the right to send a batch; None while another worker holds it."""
        now = now or _now()
        pk, rk = encode_key(job_id), BATCH_PREFIX + batch_id
        try:
            etag = await self.table.insert({"PartitionKey": pk, "RowKey": rk, "status": SENDING, "claimedAt": now})
            return BatchClaim(rk, etag)
        except EntityExistsError:
            pass
        try:
            row = await self.table.get(pk, rk)
        except EntityNotFoundError:
            return None
        outcomes = join_json(row, "outcomes") or {}
        if row.get("status") == DONE:
            return BatchClaim(rk, etag_of(row), outcomes, done=True)
        claimed_at = row.get("claimedAt")
        if claimed_at is not None and now - claimed_at < claim_ttl:
            return None
        log.warning("job %s batch %s: taking over a claim from %s (its worker stopped)", job_id, batch_id, claimed_at)
        try:
            etag = await self.table.merge({"PartitionKey": pk, "RowKey": rk, "status": SENDING, "claimedAt": now},
                                          etag_of(row))
        except (EntityChangedError, EntityNotFoundError):
            return None
        return BatchClaim(rk, etag, outcomes)

    async def record_batch(self, job_id: str, claim: BatchClaim, *, done: bool = False,
                           now: datetime | None = None) -> None:
        """Write the batch's outcomes so far (and renew the claim); EntityChangedError if it was taken over."""
        now = now or _now()
        entity = {"PartitionKey": encode_key(job_id), "RowKey": claim.row_key, "status": DONE if done else SENDING,
                  "claimedAt": now, **split_json("outcomes", claim.outcomes)}
        claim.etag = await self.table.merge(entity, claim.etag)
        claim.done = done

    async def abandon(self, job_id: str, batch_id: str, keys: list[str], error: str) -> None:
        """A batch the host gave up on: every conversation without an outcome yet is failed, so that the
        job's count of pending ones reaches zero."""
        pk = encode_key(job_id)
        if batch_id:
            try:
                row = await self.table.get(pk, BATCH_PREFIX + batch_id)
                outcomes = join_json(row, "outcomes") or {}
            except EntityNotFoundError:
                outcomes = {}
            if all(k in outcomes for k in keys):
                return
            outcomes.update({k: [FAILED, "", error[:ERROR_CHARS], 0] for k in keys if k not in outcomes})
            await self.table.upsert({"PartitionKey": pk, "RowKey": BATCH_PREFIX + batch_id, "status": DONE,
                                     **split_json("outcomes", outcomes)}, merge=True)
            return
        for key in keys:
            row = await self.row(job_id, key)
            if row is None or row.get("status") not in FINAL:
                await self.table.upsert({"PartitionKey": pk, "RowKey": key, "status": FAILED,
                                         "lastError": error[:1000]}, merge=True)

    async def record_undeliverable(self, job_id: str, batch_id: str, errors: dict[str, str]) -> None:
        """Conversations the fan-out could not put in any batch: a finished batch of failures, counted by status."""
        outcomes = {key: [FAILED, "", error[:ERROR_CHARS], 0] for key, error in errors.items()}
        await self.table.upsert({"PartitionKey": encode_key(job_id), "RowKey": BATCH_PREFIX + batch_id,
                                 "status": DONE, **split_json("outcomes", outcomes)})

    # ---- one-conversation deliveries ----------------------------------------------------------
    async def claim(self, job_id: str, keys: list[str], claim_ttl: timedelta,
                    now: datetime | None = None) -> Claims:
        """Take the right to send to each key; say which are done already or held by another."""
        now = now or _now()
        pk = encode_key(job_id)
        claims = Claims()
        # The common case, a first delivery: claim every row in one transaction per 100.
        fresh = [{"PartitionKey": pk, "RowKey": k, "status": SENDING, "attempts": 0, "claimedAt": now}
                 for k in dict.fromkeys(keys)]
        leftover: list[str] = []
        for chunk in _chunks(fresh, TRANSACTION_SIZE):
            try:
                await self.table.transact([("create", e) for e in chunk])
                claims.claimed.update((e["RowKey"], 0) for e in chunk)
            except TransactionFailedError:
                leftover.extend(e["RowKey"] for e in chunk)
        for key in leftover:  # some rows exist: a redelivery, or a retry of this batch
            await self._claim_one(pk, key, now, claim_ttl, claims)
        return claims

    async def _claim_one(self, pk: str, key: str, now: datetime, claim_ttl: timedelta, claims: Claims) -> None:
        try:
            row = await self.table.get(pk, key)
        except EntityNotFoundError:
            try:
                await self.table.insert(
                    {"PartitionKey": pk, "RowKey": key, "status": SENDING, "attempts": 0, "claimedAt": now})
                claims.claimed[key] = 0
            except EntityExistsError:
                claims.busy.add(key)
            return
        status = row.get("status")
        if status in FINAL:
            claims.done.add(key)
            return
        claimed_at = row.get("claimedAt")
        if status == SENDING and claimed_at is not None and now - claimed_at < claim_ttl:
            claims.busy.add(key)
            return
        if status == SENDING:
            log.warning("job row %s/%s: taking over a claim from %s (its worker stopped)", pk, key, claimed_at)
        try:
            await self.table.merge({"PartitionKey": pk, "RowKey": key, "status": SENDING, "claimedAt": now}, etag_of(row))
            claims.claimed[key] = int(row.get("attempts") or 0)
        except (EntityChangedError, EntityNotFoundError):
            claims.busy.add(key)

    async def record(self, job_id: str, outcomes: list[Outcome], attempts: dict[str, int],
                     now: datetime | None = None) -> None:
        """Write what happened to claimed rows, in batch transactions."""
        now = now or _now()
        pk = encode_key(job_id)
        entities = [{"PartitionKey": pk, "RowKey": o.key, "status": o.status, "lastError": o.error[:1000],
                     "activityId": o.activity_id, "attempts": attempts.get(o.key, 0) + o.attempted,
                     "updatedAt": now}
                    for o in outcomes]
        for chunk in _chunks(entities, TRANSACTION_SIZE):
            await self.table.transact([("update", e, {"mode": "merge"}) for e in chunk])

    async def prepare(self, job_id: str, key: str, payload: list[dict[str, Any]]) -> None:
        """A one-conversation delivery whose messages must survive a crash before they are sent."""
        await self.table.upsert(
            {"PartitionKey": encode_key(job_id), "RowKey": key, "status": RETRYING, "attempts": 0,
             **split_json("payload", payload)})

    async def row(self, job_id: str, key: str) -> "TableEntity | None":
        try:
            return await self.table.get(encode_key(job_id), key)
        except EntityNotFoundError:
            return None

    async def status(self, job_id: str) -> JobStatus | None:
        header = await self.header(job_id)
        if header is None:
            return None
        counts: dict[str, int] = {}
        async for _, deliveries in self.deliveries(job_id):
            for _, status, _ in deliveries:
                counts[status] = counts.get(status, 0) + 1
        return JobStatus(header.job.id, header.kind, header.job.created, header.fanned_out,
                         header.targets, counts, header.error, header.due)

    async def deliveries(self, job_id: str) -> AsyncIterator[tuple["TableEntity", list[tuple[str, str, str]]]]:
        """Each delivery row of the job with its (conversation key, status, activity id) entries, streamed.

        A conversation retried in a later batch has a `retrying` entry in the earlier one;
        its final status is in exactly one row.
        """
        query = f"PartitionKey eq '{encode_key(job_id)}' and RowKey ne '{HEADER}'"
        async for row in self.table.query(query):
            if row["RowKey"].startswith(BATCH_PREFIX):
                outcomes = join_json(row, "outcomes") or {}
                yield row, [(key, o[0], o[1]) for key, o in outcomes.items()]
            else:
                yield row, [(row["RowKey"], row.get("status", ""), row.get("activityId", ""))]


def _chunks(items: list[Any], size: int) -> list[list[Any]]:
    return [items[i : i + size] for i in range(0, len(items), size)]
