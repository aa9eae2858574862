"""The delivery ledger: one Table Storage row per (job, conversation), plus one per job.

It is what makes a redelivered queue message send nothing twice, what a job's
status is counted from, and where the Connector's activity ids are kept so that
sent notifications can be updated or deleted later.

PartitionKey is the job id (all rows of a job in one partition, so claims and
outcomes are written in batch transactions of up to 100 rows); RowKey is the
conversation key, or HEADER for the job itself.

A row's status moves: (none) → sending → sent | gone | failed, or → retrying →
sending → ... A `sending` row is a claim: its holder is sending right now. A
claim older than the claim time (BotDeliveryClaimSeconds) belongs to a worker
that died; another may take it over. The message may then have been sent once
already: after a crash, at most the sends in flight and the outcomes not yet
written (see broadcast.OutcomeRecorder) are sent twice.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, AsyncIterator

from .jobs import Job
from .keys import encode_key
from .settings import DELIVERIES_TABLE
from .storage import TableStore
from .tables import (Entity, EntityChangedError, EntityExistsError, EntityNotFoundError,
                     TransactionFailedError)
from .tablejson import join_json, split_json

log = logging.getLogger("botcore.ledger")

HEADER = "!job"  # sorts before every conversation key; a conversation key always holds "|"
TRANSACTION_SIZE = 100
SENDING, SENT, RETRYING, GONE, FAILED = "sending", "sent", "retrying", "gone", "failed"
FINAL = frozenset({SENT, GONE, FAILED})


def _now() -> datetime:
    return datetime.now(timezone.utc)


@dataclass
class JobHeader:
    """What every worker of a job needs: the job itself, and how far its fan-out got."""

    job: Job
    cursor: str | None = None
    fanned_out: bool = False
    targets: int = 0
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
class JobStatus:
    id: str
    kind: str
    created: str
    fanned_out: bool
    targets: int
    counts: dict[str, int]

    @property
    def state(self) -> str:
        pending = self.counts.get(SENDING, 0) + self.counts.get(RETRYING, 0)
        if not self.fanned_out:
            return "fanning-out"
        return "sending" if pending or sum(self.counts.values()) < self.targets else "done"

    def to_dict(self) -> dict[str, Any]:
        c = self.counts
        return {
            "id": self.id, "kind": self.kind, "created": self.created, "state": self.state,
            "targets": self.targets, "sent": c.get(SENT, 0), "skipped": c.get(GONE, 0),
            "failed": c.get(FAILED, 0), "pending": c.get(SENDING, 0) + c.get(RETRYING, 0),
        }


class DeliveryLedger(TableStore):
    table_name = DELIVERIES_TABLE

    # ---- the job header ----------------------------------------------------------------
    async def open_job(self, job: Job) -> JobHeader:
        """The job's header, created on first sight; a redelivered job gets the stored one."""
        entity = {"PartitionKey": encode_key(job.id), "RowKey": HEADER, "kind": job.kind,
                  "created": job.created, "fannedOut": False, "targets": 0,
                  **split_json("job", json.loads(job.to_json()))}
        try:
            return JobHeader(job, etag=await self.table.insert(entity))
        except EntityExistsError:
            header = await self.header(job.id)
            assert header is not None
            return header

    async def header(self, job_id: str) -> JobHeader | None:
        from .jobs import parse_job

        try:
            entity = await self.table.get(encode_key(job_id), HEADER)
        except EntityNotFoundError:
            return None
        cursor = entity.get("cursor")
        return JobHeader(
            job=parse_job(json.dumps(join_json(entity, "job"))),
            cursor=cursor or None,
            fanned_out=bool(entity.get("fannedOut")), targets=int(entity.get("targets") or 0),
            etag=entity.etag,
        )

    async def save_progress(self, header: JobHeader) -> str | None:
        """Save the fan-out's cursor; with the header's ETag, so two fan-outs cannot interleave."""
        entity = {"PartitionKey": encode_key(header.job.id), "RowKey": HEADER, "cursor": header.cursor or "",
                  "fannedOut": header.fanned_out, "targets": header.targets}
        header.etag = await self.table.merge(entity, header.etag)
        return header.etag

    # ---- deliveries ------------------------------------------------------------------------
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
                await self.table.transact([("insert", e) for e in chunk])
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
            await self.table.merge({"PartitionKey": pk, "RowKey": key, "status": SENDING, "claimedAt": now}, row.etag)
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
            await self.table.transact([("merge", e) for e in chunk])

    async def prepare(self, job_id: str, key: str, payload: list[dict[str, Any]]) -> None:
        """A one-conversation delivery whose messages must survive a crash before they are sent."""
        await self.table.upsert(
            {"PartitionKey": encode_key(job_id), "RowKey": key, "status": RETRYING, "attempts": 0,
             **split_json("payload", payload)})

    async def row(self, job_id: str, key: str) -> Entity | None:
        try:
            return await self.table.get(encode_key(job_id), key)
        except EntityNotFoundError:
            return None

    async def status(self, job_id: str) -> JobStatus | None:
        header = await self.header(job_id)
        if header is None:
            return None
        counts: dict[str, int] = {}
        async for row in self.rows(job_id, select=["RowKey", "status"]):
            counts[row["status"]] = counts.get(row["status"], 0) + 1
        return JobStatus(header.job.id, header.job.kind, header.job.created, header.fanned_out,
                         header.targets, counts)

    async def rows(self, job_id: str, *, status: str | None = None,
                   select: list[str] | None = None) -> AsyncIterator[Entity]:
        """The job's delivery rows, streamed (never all in memory)."""
        query = f"PartitionKey eq '{encode_key(job_id)}' and RowKey gt '{HEADER}'"
        if status:
            query += f" and status eq '{status}'"
        async for entity in self.table.query(query, select=select):
            yield entity


def _chunks(items: list[Any], size: int) -> list[list[Any]]:
    return [items[i : i + size] for i in range(0, len(items), size)]
