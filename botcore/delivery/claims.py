"""One claim with takeover: the right to do one piece of work, held on its table row.

A worker claims a row by writing its claim status and `claimedAt` with the row's ETag (or by inserting
the row). A claim younger than the time-to-live belongs to a live worker; an older one to a worker that
stopped, and another worker takes it over, so that nothing waits for good on a dead instance. The
delivery ledger claims send batches and conversations this way; the reminder timer, due reminders.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from ..storage import EntityChangedError, EntityExistsError, EntityNotFoundError, Table, etag_of

if TYPE_CHECKING:
    from azure.data.tables import TableEntity

log = logging.getLogger(__name__)

CLAIMED, BUSY, DONE = "claimed", "busy", "done"


@dataclass(frozen=True)
class Claim:
    """What a claim found: CLAIMED (ours: `etag` guards our next write), BUSY (a live worker holds it) or
    DONE (finished, or gone). `row` is the row as found, None when the claim created it."""

    state: str
    etag: str | None = None
    row: TableEntity | None = None


def decide(row: Mapping[str, Any], *, status: str, ttl: timedelta, now: datetime, done: Collection[str] = ()) -> str:
    """What claiming a row that exists finds: DONE (finished), BUSY (a live worker's claim younger than `ttl`)
    or CLAIMED (free, or a stopped worker's claim to take over)."""
    found = row.get("status")
    if found in done:
        return DONE
    claimed_at = row.get("claimedAt")
    if found == status and claimed_at is not None and now - claimed_at < ttl:
        return BUSY
    return CLAIMED


async def claim_row(
    table: Table,
    pk: str,
    rk: str,
    *,
    status: str,
    ttl: timedelta,
    now: datetime,
    done: Collection[str] = (),
    insert: Mapping[str, Any] | None = None,
) -> Claim:
    """Claim (pk, rk) by setting `status`; with `insert`, a missing row is created claimed (else it is DONE)."""
    if insert is not None:
        try:
            etag = await table.insert({"PartitionKey": pk, "RowKey": rk, **insert, "status": status, "claimedAt": now})
            return Claim(CLAIMED, etag)
        except EntityExistsError:
            pass
    try:
        row = await table.get(pk, rk)
    except EntityNotFoundError:
        return Claim(BUSY if insert is not None else DONE)  # deleted under us: another pass will see
    state = decide(row, status=status, ttl=ttl, now=now, done=done)
    if state != CLAIMED:
        return Claim(state, etag_of(row) if state == DONE else None, row)
    if row.get("status") == status:
        log.warning(
            "%s %s/%s: taking over a claim from %s (its worker stopped)", table.name, pk, rk, row.get("claimedAt")
        )
    try:
        etag = await table.merge({"PartitionKey": pk, "RowKey": rk, "status": status, "claimedAt": now}, etag_of(row))
    except (EntityChangedError, EntityNotFoundError):
        return Claim(BUSY, row=row)  # another worker claimed it in between
    return Claim(CLAIMED, etag, row)
