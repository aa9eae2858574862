"""A job's status (DeliveryLedger.status) on Azurite: counted from every delivery row of the job, which a large job
has thousands of, each holding up to a hundred outcomes (about 12 KB). A status reads each row's tally, written with
its outcomes, and never the outcomes themselves: it read 120 MB for a million conversations when it counted them, and
an instance answering the status of a 100,000 job held about 9 MiB more while it counted."""

from __future__ import annotations

import asyncio
import tracemalloc
import uuid

import pytest

from botcore import storage
from botcore.delivery.batches import BATCH_KEYS
from botcore.delivery.ledger import BATCH_PREFIX, Delivered, DeliveryLedger, Status
from botcore.jobs import Target, new_job
from botcore.keys import conversation_key, encode_key
from botcore.tablejson import split_json


@pytest.fixture
async def ledger(storage_connection_string, monkeypatch):
    monkeypatch.setenv("BotStorage", storage_connection_string)
    table = storage.get_table(f"d{uuid.uuid4().hex[:20]}")
    await table.create()
    yield DeliveryLedger(table)
    await storage.close_storage_clients()


async def sent_job(ledger: DeliveryLedger, rows: int) -> str:
    """A fanned-out job whose `rows` batches are done, every conversation sent, as record_batch writes them."""
    job = new_job("notify", Target(tenant_id="t1"), text="hi")
    header = await ledger.open_job(job)
    header.fanned_out, header.targets = True, rows * BATCH_KEYS
    await ledger.save_progress(header)
    sent = Delivered(Status.SENT, activity_id="1:" + "a" * 40, attempts=1)
    gate = asyncio.Semaphore(32)

    async def write(row: int) -> None:
        outcomes = {conversation_key("msteams", f"a:{row}-{i}-{'x' * 40}"): sent for i in range(BATCH_KEYS)}
        async with gate:
            await ledger.record_undeliverable(job.id, f"{row}.0.0", outcomes)  # a done batch row, as batches end

    await asyncio.gather(*(write(row) for row in range(rows)))
    return job.id


async def counted_peak(ledger: DeliveryLedger, job_id: str, rows: int) -> int:
    """The most memory Python held at once, above what it held before, while the status was counted."""
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        status = await ledger.status(job_id)
        peak = tracemalloc.get_traced_memory()[1] - before
    finally:
        tracemalloc.stop()
    assert status is not None and status.counts == {Status.SENT: rows * BATCH_KEYS}
    return peak


async def test_counting_a_jobs_status_holds_a_small_part_of_its_outcomes_at_once(ledger) -> None:
    rows = 400
    job_id = await sent_job(ledger, rows)
    await counted_peak(ledger, job_id, rows)  # the first call also builds the client and its connections
    peak = await counted_peak(ledger, job_id, rows)
    row = await ledger.table.get(encode_key(job_id), f"{BATCH_PREFIX}0.0.0")
    outcomes = rows * sum(len(v) for k, v in row.items() if k.startswith("outcomes") and isinstance(v, str))
    assert peak < outcomes / 5, f"{peak / 2**20:.1f} MiB held for {outcomes / 2**20:.1f} MiB of outcomes"


async def test_a_status_counts_the_rows_tallies_and_reads_none_of_their_outcomes(ledger, monkeypatch) -> None:
    job = new_job("notify", Target(tenant_id="t1"), text="hi")
    header = await ledger.open_job(job)
    header.fanned_out, header.targets = True, 8
    await ledger.save_progress(header)
    claim = await ledger.claim_batch(job.id, "0.0")
    assert claim is not None
    claim.outcomes = {
        "a": Delivered(Status.SENT, "act-a"),
        "b": Delivered(Status.SENT, "act-b"),
        "c": Delivered(Status.SENT),  # the Connector gave no activity id: it cannot be revised
        "d": Delivered(Status.RETRYING, attempts=1),
    }
    await ledger.record_batch(job.id, claim, done=True)
    await ledger.record_undeliverable(job.id, "1.u", {"e": Delivered(Status.FAILED, error="unusable")})
    await ledger.table.insert(  # a row written before rows carried a tally: counted from its outcomes
        {
            "PartitionKey": encode_key(job.id),
            "RowKey": f"{BATCH_PREFIX}2.0.0",
            "status": Status.DONE,
            **split_json("outcomes", {"f": Delivered(Status.SENT, "act-f").to_json(), "g": ["gone", "", "", 1]}),
        }
    )
    await ledger.register_revision(new_job("update", Target(everyone=True), notification=job.id, text="edited"))
    revising = await ledger.claim_revision(job.id, f"{BATCH_PREFIX}0.0")
    assert revising is not None
    revising.outcomes = {"a": Delivered(Status.UPDATED, "act-a", revision=1)}
    await ledger.record_revision(job.id, revising, release=True)
    claim.outcomes["d"] = Delivered(Status.SENT, "act-d", revision=1)  # sent in a retry, the edit already in it
    await ledger.record_undeliverable(job.id, "0.0.r1", {"d": claim.outcomes["d"]})

    read: list[dict[str, object]] = []
    query = ledger.table.query

    async def recorded(*args, **kwargs):
        async for row in query(*args, **kwargs):
            read.append(dict(row))
            yield row

    monkeypatch.setattr(ledger.table, "query", recorded)
    status = await ledger.status(job.id)

    assert status is not None
    assert status.counts == {Status.SENT: 5, Status.RETRYING: 1, Status.FAILED: 1, Status.GONE: 1}
    assert status.revision is not None  # a, d carry the edit; c has no id; b and f still to edit
    assert (status.revision.revised, status.revision.failed, status.revision.pending) == (2, 1, 2)
    assert len(read) == 5 and not [k for row in read for k in row if k.startswith("outcomes") and k != "outcomesParts"]
